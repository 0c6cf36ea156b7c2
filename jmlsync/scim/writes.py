"""How a write treats what the schemas do not define, and what of a refused write still applies.

``[scim].unknown_attributes`` and ``[scim].unknown_members`` decide; whatever they say, a
deactivation or a member removal is never lost to another part of the same request
(:mod:`jmlsync.scim.salvage`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from jmlsync.domain.directory import Change, MemberOp, StoredResource
from jmlsync.domain.errors import DuplicateUserName, UnknownMembers
from jmlsync.ports import Store
from jmlsync.scim.errors import ScimError
from jmlsync.scim.patch import apply_patch
from jmlsync.scim.salvage import leaving_patch, leaving_put
from jmlsync.scim.schema import ResourceType
from jmlsync.scim.unknown import AUDIT_NAMES, IgnoredReporter, UnknownMode, Unknowns

log = logging.getLogger("jmlsync.scim")


@dataclass(frozen=True)
class Leniency:
    """What the service does with what the schemas do not define (``[scim]``)."""

    unknown_attributes: UnknownMode = "ignore"
    unknown_members: Literal["skip", "reject"] = "skip"
    reporter: IgnoredReporter = field(default_factory=IgnoredReporter)


#: Writes the change the given function computes (called inside the write's transaction).
Write = Callable[[Callable[[], Change]], Awaitable[StoredResource]]


def _without_members(ops: tuple[MemberOp, ...], skipped: frozenset[str]) -> tuple[MemberOp, ...]:
    """``ops`` with the members named by ``skipped`` left out of every add and replace."""
    if not skipped:
        return ops
    kept = []
    for op in ops:
        if op.action in ("add", "replace"):
            op = replace(op, items=tuple(m for m in op.items if m.value not in skipped))
            if op.action == "add" and not op.items:
                continue
        kept.append(op)
    return tuple(kept)


def _noted(change: Change, unknowns: Unknowns, skipped: frozenset[str]) -> Change:
    notes = list(unknowns.notes())
    if skipped:
        shown = sorted(skipped)
        more = len(shown) - AUDIT_NAMES
        listed = ", ".join(shown[:AUDIT_NAMES]) + (f" and {more} more" if more > 0 else "")
        notes.append(f"skipped unknown members: {listed}")
    members = _without_members(change.members, skipped)
    return Change(doc=change.doc, members=members, notes=(*change.notes, *notes))


async def write_leniently(
    leniency: Leniency, resource: str, write: Write, build: Callable[[Unknowns], Change]
) -> StoredResource:
    """Run ``write`` with the change ``build`` makes, treating undeclared attributes as
    ``leniency`` says; unknown members are skipped by writing again without them (the refused
    attempt committed nothing), then reported."""
    skipped: frozenset[str] = frozenset()
    met: list[Unknowns] = []

    def change() -> Change:
        # Fresh each call: the store may compute the change again.
        unknowns = Unknowns(leniency.unknown_attributes)
        met[:] = [unknowns]
        return _noted(build(unknowns), unknowns, skipped)

    while True:
        try:
            stored = await write(change)
            break
        except UnknownMembers as exc:
            fresh = frozenset(exc.ids) - skipped
            if leniency.unknown_members == "reject" or not fresh:
                raise
            skipped |= fresh
    if met:
        leniency.reporter.report(resource, dict.fromkeys(met[0].ignored))
    leniency.reporter.skipped_members(resource, stored.id, skipped)
    return stored


def salvageable(error: Exception) -> bool:
    """Whether a write refused with ``error`` may still have its leaving part applied: not
    when the resource is missing or has moved on (If-Match), only when the request was."""
    return isinstance(error, UnknownMembers | DuplicateUserName) or (
        isinstance(error, ScimError) and error.status in (400, 409)
    )


async def salvage(
    store: Store,
    resource_type: ResourceType,
    resource_id: str,
    body: Any,
    error: Exception,
    now: datetime,
    *,
    put: bool,
) -> None:
    """Apply, alone, what deactivates the user or removes members in the refused ``body``."""
    leaving = leaving_put(resource_type, body) if put else leaving_patch(resource_type, body)
    if leaving is None:
        return
    detail = (getattr(error, "detail", None) or str(error))[:200]

    def mutate(current: StoredResource) -> Change:
        result = apply_patch(resource_type, current.doc, leaving, Unknowns("ignore"))
        note = f"applied alone: the request was refused ({detail})"
        return Change(doc=result.doc, members=result.members, notes=(note,))

    try:
        await store.update(resource_type.kind, resource_id, mutate, now, with_members=False)
    except (ScimError, UnknownMembers) as exc:
        log.warning("could not apply the leaving part of a refused request: %s", exc)
        return
    log.warning(
        "%s %s: request refused (%s); its deactivation or member removal was applied",
        resource_type.name,
        resource_id,
        detail,
    )
