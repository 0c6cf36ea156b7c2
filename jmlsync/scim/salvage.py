"""What of a refused write must still apply: the deactivation of a user, the removal of members.

A request is refused whole when one of its parts is wrong (RFC 7644 §3.5.2: a PATCH applies
all of its operations or none). When that request also deactivated a user or removed members
from a group, refusing it whole would keep a leaver's access until someone notices. So the
service applies those parts alone, audits that it did, and still answers the refusal.
"""

from __future__ import annotations

from typing import Any

from jmlsync.scim.schema import PATCH_OP_SCHEMA, USER_SCHEMA, ResourceType

_ACTIVE_PATHS = frozenset({"active", f"{USER_SCHEMA.lower()}:active"})


def _false(value: Any) -> bool:
    # Entra sends "False" as a string unless a feature flag is set.
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def _get(mapping: dict[str, Any], name: str) -> Any:
    return next((v for k, v in mapping.items() if k.lower() == name), None)


def _deactivates(mapping: dict[str, Any]) -> bool:
    return any(k.lower() in _ACTIVE_PATHS and _false(v) for k, v in mapping.items())


def _leaving_operation(resource_type: ResourceType, raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    op, path, value = (_get(raw, key) for key in ("op", "path", "value"))
    op = op.lower() if isinstance(op, str) else None
    path = path.strip().lower() if isinstance(path, str) and path.strip() else None
    if resource_type.name == "User" and op in ("add", "replace"):
        if path in _ACTIVE_PATHS and _false(value):
            return {"op": "replace", "path": "active", "value": False}
        if path is None and isinstance(value, dict) and _deactivates(value):
            return {"op": "replace", "path": "active", "value": False}
    if resource_type.name == "Group" and op == "remove" and path and path.startswith("members"):
        return raw
    return None


def leaving_patch(resource_type: ResourceType, body: Any) -> dict[str, Any] | None:
    """A PatchOp with only the operations of ``body`` (a PATCH) that deactivate the user
    or remove members; None when it has none."""
    operations = _get(body, "operations") if isinstance(body, dict) else None
    if not isinstance(operations, list):
        return None
    kept = [op for raw in operations if (op := _leaving_operation(resource_type, raw))]
    return {"schemas": [PATCH_OP_SCHEMA], "Operations": kept} if kept else None


def leaving_put(resource_type: ResourceType, body: Any) -> dict[str, Any] | None:
    """The PatchOp that deactivates the user when ``body`` (a PUT) sets ``active`` false."""
    if resource_type.name != "User" or not isinstance(body, dict) or not _deactivates(body):
        return None
    return {
        "schemas": [PATCH_OP_SCHEMA],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
