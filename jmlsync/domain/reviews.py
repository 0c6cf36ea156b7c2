"""Access reviews: campaigns, their items, who reviews each, and the rules of deciding.

Pure values and functions: the engine takes the snapshot and stores it; this module says
what is in scope, who reviews an item, which decision files are acceptable and whether a
review exception still holds back a grant.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from jmlsync.domain.access import Grant

__all__ = [
    "Campaign",
    "DecisionError",
    "DecisionRow",
    "Item",
    "NotReviewer",
    "PastDeadline",
    "Person",
    "ReviewScope",
    "Source",
    "UnknownItem",
    "assign_reviewer",
    "check_decisions",
    "exception_holds",
    "item_from_dict",
    "may_decide",
    "parse_decisions",
    "snapshot_digest",
]

#: Where a grant under review comes from. Time-bound grants will add ``"timebound"`` (with the
#: request id in ``detail``); every consumer handles unknown kinds as "not a rule".
SourceKind = Literal["rule", "unmanaged"]
DecisionValue = Literal["keep", "revoke"]
DECISIONS: tuple[DecisionValue, ...] = ("keep", "revoke")
#: The columns of a decisions file, in this order when written.
DECISION_COLUMNS = ("item_id", "decision", "reviewer", "comment")


@dataclass(frozen=True)
class Source:
    """Why a target holds the grant: a rule (number and group as the rule spells it), or
    ``unmanaged`` (found in the target, not granted by jmlsync)."""

    kind: SourceKind
    rule: int | None = None
    group: str | None = None
    detail: str | None = None

    @property
    def label(self) -> str:
        """The source as one short text (for CSV and tables)."""
        if self.kind == "rule" and self.rule is not None:
            return f"rule {self.rule} (group {self.group})"
        if self.kind == "rule":
            return f"jmlsync ({self.detail})" if self.detail else "jmlsync"
        return self.kind


@dataclass(frozen=True)
class Person:
    """The holder of a grant as the directory knows them at the snapshot."""

    user_name: str
    display_name: str | None = None
    active: bool | None = None
    manager: str | None = None


@dataclass(frozen=True)
class Item:
    """One grant under review, as snapshotted from the target."""

    id: int
    campaign: str
    snapshot_at: str
    target: str
    role: str
    privileged: bool
    user: Person
    source: Source
    granted_at: str | None
    reviewer: str | None

    @property
    def grant(self) -> Grant:
        return Grant(self.target, self.user.user_name, self.role)

    def row(self) -> dict[str, Any]:
        """The item as flat fields (CSV columns, JSON keys)."""
        return {
            "item_id": self.id,
            "campaign": self.campaign,
            "snapshot_at": self.snapshot_at,
            "target": self.target,
            "role": self.role,
            "privileged": self.privileged,
            "user": self.user.user_name,
            "display_name": self.user.display_name,
            "active": self.user.active,
            "manager": self.user.manager,
            "source": self.source.label,
            "source_kind": self.source.kind,
            "source_rule": self.source.rule,
            "source_group": self.source.group,
            "granted_at": self.granted_at,
            "reviewer": self.reviewer,
        }


def item_from_dict(data: Mapping[str, Any]) -> Item:
    """An item from its ``asdict`` form (as stored, and in ``snapshot.json``)."""
    return Item(
        **{
            **data,
            "user": Person(**data["user"]),
            "source": Source(**data["source"]),
        }
    )


@dataclass(frozen=True)
class Campaign:
    """One run of a configured review: its id, definition name and period."""

    id: str
    name: str
    started_at: str
    deadline: str
    snapshot_sha256: str
    audit_seq: int | None
    items: int
    closed_at: str | None = None
    reminded_at: str | None = None


@dataclass(frozen=True)
class ReviewScope:
    """What a campaign covers: ``privileged`` roles, ``all``, some ``roles`` ((target, role),
    role None for every role of the target), or the grants some ``rules`` give."""

    kind: Literal["privileged", "all", "roles", "rules"]
    roles: frozenset[tuple[str, str | None]] = frozenset()
    rules: frozenset[int] = frozenset()

    def covers(self, grant: Grant, privileged: bool, source: Source) -> bool:
        """Whether the scope includes ``grant`` (privileged and from ``source``)."""
        if self.kind == "all":
            return True
        if self.kind == "privileged":
            return privileged
        if self.kind == "rules":
            return source.kind == "rule" and source.rule in self.rules
        return (grant.target, grant.role) in self.roles or (grant.target, None) in self.roles


@dataclass(frozen=True)
class Owner:
    """Who reviews one role (``role`` None: every role of ``target``)."""

    target: str
    role: str | None
    reviewers: tuple[str, ...]


def _candidates(
    target: str, role: str, owners: Sequence[Owner], default: Sequence[str]
) -> list[str]:
    exact = [o for o in owners if o.target == target and o.role == role]
    wide = [o for o in owners if o.target == target and o.role is None]
    chosen = [r for o in exact + wide for r in o.reviewers]
    return chosen + list(default)


def assign_reviewer(
    user: Person,
    target: str,
    role: str,
    *,
    owners: Sequence[Owner],
    reviewers: Sequence[str],
    active_users: AbstractSet[str],
    groups: Mapping[str, AbstractSet[str]],
) -> str | None:
    """The first reviewer in order (role owners, then the campaign's) that can decide.

    ``"manager"`` names the holder's manager when that is an active user other than the
    holder; ``"group:NAME"`` stays a group (any member may decide) when the group has an
    active member other than the holder. Nobody reviews their own access. ``groups`` maps
    group displayNames (casefolded) to their members' userNames.
    """
    holder = user.user_name.casefold()
    for candidate in _candidates(target, role, owners, reviewers):
        if candidate == "manager":
            manager = user.manager
            if manager and manager.casefold() != holder and manager in active_users:
                return manager
            continue
        members = groups.get(candidate.removeprefix("group:").casefold(), frozenset())
        if any(m.casefold() != holder and m in active_users for m in members):
            return candidate
    return None


def may_decide(item: Item, reviewer: str, groups: Mapping[str, AbstractSet[str]]) -> bool:
    """Whether ``reviewer`` (a userName) may decide ``item``: its assigned reviewer, or a
    member of its assigned group; never the holder of the grant."""
    name = reviewer.casefold()
    if item.reviewer is None or name == item.user.user_name.casefold():
        return False
    if item.reviewer.startswith("group:"):
        members = groups.get(item.reviewer.removeprefix("group:").casefold(), frozenset())
        return name in {m.casefold() for m in members}
    return name == item.reviewer.casefold()


class DecisionError(Exception):
    """A decisions file that cannot be applied; the message names the row."""


class UnknownItem(DecisionError):
    """A decision names an item the campaign does not have."""


class NotReviewer(DecisionError):
    """A decision by someone the item is not assigned to."""


class PastDeadline(DecisionError):
    """A decision after the campaign's deadline, without an admin's ``late``."""


@dataclass(frozen=True)
class DecisionRow:
    """One line of a decisions file (``row``: its number, the header being row 1)."""

    row: int
    item_id: int
    decision: DecisionValue
    reviewer: str
    comment: str


def _decision_row(number: int, raw: Mapping[str, Any]) -> DecisionRow:
    missing = [key for key in DECISION_COLUMNS[:3] if not str(raw.get(key) or "").strip()]
    if missing:
        raise DecisionError(f"row {number}: missing {', '.join(missing)}")
    text = str(raw["item_id"]).strip()
    # ASCII only: str.isdigit() also accepts "²", which int() refuses.
    if not (text.isascii() and text.isdigit()):
        raise DecisionError(f"row {number}: item_id {text!r} is not a number")
    decision = str(raw["decision"]).strip().lower()
    if decision not in DECISIONS:
        raise DecisionError(
            f"row {number}: decision {raw['decision']!r} is not one of keep, revoke"
        )
    comment = raw.get("comment")
    return DecisionRow(
        number,
        int(text),
        "keep" if decision == "keep" else "revoke",
        str(raw["reviewer"]).strip(),
        "" if comment is None else str(comment),
    )


def parse_decisions(text: str, kind: Literal["csv", "json"]) -> list[DecisionRow]:
    """The rows of a decisions file (CSV with a header, or a JSON list of objects)."""
    if kind == "json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DecisionError(f"not valid JSON: {exc}") from exc
        if not isinstance(document, list):
            raise DecisionError("expected a JSON list of objects")
        rows = []
        for number, entry in enumerate(document, 1):
            if not isinstance(entry, dict):
                raise DecisionError(f"row {number}: expected an object")
            rows.append(_decision_row(number, entry))
        return rows
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        lines = list(reader)
    except csv.Error as exc:
        raise DecisionError(f"row {reader.line_num}: malformed CSV: {exc}") from exc
    if not lines:
        raise DecisionError("the file is empty")
    header = [name.strip().lstrip("\ufeff") for name in lines[0]]
    absent = [c for c in DECISION_COLUMNS[:3] if c not in header]
    if absent:
        raise DecisionError(f"row 1: the header lacks {', '.join(absent)}")
    rows = []
    for number, values in enumerate(lines[1:], 2):
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise DecisionError(
                f"row {number}: {len(values)} fields where the header has {len(header)}"
            )
        rows.append(_decision_row(number, dict(zip(header, values, strict=True))))
    return rows


def check_decisions(
    rows: Sequence[DecisionRow],
    items: Mapping[int, Item],
    groups: Mapping[str, AbstractSet[str]],
    *,
    now: datetime,
    deadline: datetime,
    late: bool,
    protected: AbstractSet[str] = frozenset(),
) -> None:
    """Raise DecisionError for the first row that cannot be applied (nothing is applied).

    Refused: an unknown item, a reviewer not assigned to the item, an item decided twice in
    one file, a revoke of a protected account's access (``protected``: casefolded userNames
    jmlsync never changes), and any decision after the deadline unless ``late`` (an admin's
    import).
    """
    if now > deadline and not late:
        raise PastDeadline(
            f"the campaign's deadline {deadline:%Y-%m-%dT%H:%M:%SZ} has passed;"
            " an admin may import late decisions with --late"
        )
    seen: dict[int, int] = {}
    for row in rows:
        item = items.get(row.item_id)
        if item is None:
            raise UnknownItem(f"row {row.row}: unknown item_id {row.item_id}")
        if row.item_id in seen:
            raise DecisionError(
                f"row {row.row}: item_id {row.item_id} is decided again (first in row"
                f" {seen[row.item_id]})"
            )
        seen[row.item_id] = row.row
        if row.decision == "revoke" and item.user.user_name.casefold() in protected:
            raise DecisionError(
                f"row {row.row}: {item.user.user_name} is a protected account"
                " ([safety].protected_users): jmlsync never changes it; revoke it by hand"
            )
        if not may_decide(item, row.reviewer, groups):
            assigned = item.reviewer or "nobody"
            raise NotReviewer(
                f"row {row.row}: {row.reviewer} is not the reviewer of item {row.item_id}"
                f" (assigned: {assigned})"
            )


def snapshot_digest(items: Iterable[Item]) -> str:
    """SHA-256 over the items' canonical JSON: what the audit chain anchors."""
    document = [asdict(item) for item in sorted(items, key=lambda i: i.id)]
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def deadline_of(started: datetime, duration: timedelta) -> datetime:
    """When reviewers' time is up."""
    return started + duration


Cause = tuple[int, str]


def exception_holds(recorded: AbstractSet[Cause], current: AbstractSet[Cause]) -> bool:
    """Whether a review exception still holds back a grant the rules give.

    ``recorded`` are the (rule number, group id) paths that gave the grant when the reviewer
    revoked it, ``current`` those that give it now. It holds while every current path was
    already there: a new path (another group, another rule) is a new decision of the IdP's
    admin. A membership removed lifts the exception in the store, so re-adding it gives the
    grant back.
    """
    return bool(current) and current <= recorded
