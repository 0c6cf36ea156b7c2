"""How a resource document becomes the columns of its row, and how a write is summarised."""

from __future__ import annotations

import os
from typing import Any

from jmlsync.codec import compact_json
from jmlsync.domain.directory import Change


def group_identity(doc: dict[str, Any]) -> tuple[Any, Any]:
    """What rules match a group on: its casefolded displayName and its externalId."""
    return (str(doc.get("displayName", "")).casefold(), doc.get("externalId"))


def members_detail(change: Change) -> str | None:
    """A short account of membership operations for the audit row."""
    parts = []
    for op in change.members:
        count = len(op.items) if op.action in ("add", "replace") else len(op.ids)
        parts.append(op.action if op.action == "clear" else f"{op.action} {count}")
    return ", ".join(parts) or None


def user_columns(doc: dict[str, Any]) -> tuple[Any, ...]:
    """user_name, user_name_key, external_id, display_name, active, doc."""
    user_name = str(doc["userName"])
    active = doc.get("active", True)
    return (
        user_name,
        user_name.casefold(),
        doc.get("externalId"),
        doc.get("displayName"),
        active is not False,
        compact_json(doc).decode(),
    )


def group_columns(doc: dict[str, Any]) -> tuple[Any, ...]:
    """display_name, display_name_key, external_id, doc."""
    display_name = str(doc["displayName"])
    return (
        display_name,
        display_name.casefold(),
        doc.get("externalId"),
        compact_json(doc).decode(),
    )


def new_id() -> str:
    """A random (version 4) UUID in its canonical text form, as ``str(uuid.uuid4())`` gives,
    without building a UUID object on the request path."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
