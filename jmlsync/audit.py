"""The audit log: append-only rows, each carrying a SHA-256 over its content and the previous
row's hash, so an edited, inserted or deleted row breaks the chain from there on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any

from jmlsync.domain.audit import AuditEntry

__all__ = ["ACTOR", "GENESIS", "AuditEntry", "ChainBreak", "chain_hash", "verify_chain"]

GENESIS = "0" * 64

#: Who is making the current SCIM change: ``scim:LABEL`` of the credential the request
#: carried. Set by the auth middleware for the request's task; read by the store when it
#: writes the change's audit row (the write itself may run on another task).
ACTOR: ContextVar[str] = ContextVar("jmlsync_actor", default="scim")


def chain_hash(prev_hash: str, entry: AuditEntry) -> str:
    """The hash of ``entry`` chained to ``prev_hash``: SHA-256 over canonical JSON."""
    payload = json.dumps(
        {"prev": prev_hash, **asdict(entry)}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    """Where verification failed, and why."""

    seq: int
    reason: str


def verify_chain(
    rows: Iterable[Mapping[str, Any]], anchor: str | None = None
) -> tuple[int, ChainBreak | None]:
    """Check rows in ``seq`` order; return how many were checked and the first break, if any.

    A deleted row shows as a gap in ``seq`` or as a ``prev_hash`` that is not the previous
    row's hash; an edited row as a hash that does not match its content. ``anchor``
    (``"seq:hash"`` of the newest row housekeeping pruned) is where the kept rows start.
    """
    previous_hash = GENESIS
    previous_seq: int | None = None
    if anchor:
        seq_text, _, previous_hash = anchor.partition(":")
        previous_seq = int(seq_text)
    count = 0
    for row in rows:
        seq = int(row["seq"])
        if previous_seq is not None and seq != previous_seq + 1:
            return count, ChainBreak(seq, f"rows {previous_seq + 1}..{seq - 1} are missing")
        if row["prev_hash"] != previous_hash:
            return count, ChainBreak(seq, "prev_hash does not match the previous row")
        entry = AuditEntry(**{k: row[k] for k in AuditEntry.__dataclass_fields__})
        if chain_hash(previous_hash, entry) != row["hash"]:
            return count, ChainBreak(seq, "content does not match its hash (edited)")
        previous_hash, previous_seq = row["hash"], seq
        count += 1
    return count, None
