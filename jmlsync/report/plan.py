"""Plans and explanations rendered for people (tables) and for machines (JSON)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice, repeat
from json.encoder import encode_basestring_ascii as _text
from typing import Any, TextIO

from jmlsync.domain.access import Operation, Reason
from jmlsync.domain.directory import format_timestamp
from jmlsync.domain.plan import summarize
from jmlsync.domain.review_records import ReviewException
from jmlsync.domain.sla import LeaverRecord
from jmlsync.engine.apply import Outcome
from jmlsync.engine.reconcile import Explanation
from jmlsync.report import tables

_MARK = {"grant": "+", "revoke": "-", "disable": "~"}


@dataclass(repr=False)
class RunReport:
    """One `jmlsync reconcile` run: its plan and, unless a dry run, what applying it did."""

    dry_run: bool
    operations: list[Operation]
    outcomes: list[Outcome] = field(default_factory=list)
    held: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    drift: Sequence[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: Targets that could not be read (after retries), with the error: left out of the plan.
    unreadable: dict[str, str] = field(default_factory=dict)
    #: The review exceptions holding back grants the rules give.
    exceptions: Sequence[ReviewException] = ()
    #: ``--user`` names the directory does not hold: warned about, not an error.
    unknown_users: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        # Counts, not contents: asyncio.run reprs its finished task (the result included)
        # when it restores the SIGINT handler, and a 100k-user plan's full repr takes seconds.
        return (
            f"RunReport(dry_run={self.dry_run}, operations={len(self.operations)},"
            f" outcomes={len(self.outcomes)}, drift={len(self.drift)}, held={self.held!r})"
        )

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if not o.ok)

    def summary(self) -> dict[str, Any]:
        summary = summarize(self.operations)
        summary.update(
            applied=sum(1 for o in self.outcomes if o.ok),
            failed=self.failed,
            held=self.held is not None,
            seconds=round(self.seconds, 3),
            **self.counts,
        )
        return summary


def _operation_json(operation: Operation, outcome: Outcome | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "action": operation.action,
        "target": operation.target,
        "user": operation.user,
        "role": operation.role,
        "reason": operation.reason,
        "privileged": operation.privileged,
    }
    if outcome is not None:
        item["outcome"] = "applied" if outcome.ok else "failed"
        if outcome.error:
            item["error"] = outcome.error
    return item


def plan_json(report: RunReport) -> str:
    """The plan as one JSON document (what :func:`plan_json_chunks` streams)."""
    return "".join(plan_json_chunks(report))


def _outcomes(report: RunReport) -> Iterable[Outcome | None]:
    return report.outcomes if report.outcomes else repeat(None, len(report.operations))


def _scalar(value: object) -> str:
    """A JSON scalar exactly as :func:`json.dumps` writes it."""
    if isinstance(value, str):
        return _text(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return json.dumps(value)


def _flat_object(item: Mapping[str, object], indent: str) -> str:
    """An object of scalars as ``json.dumps(..., indent=2)`` writes it at depth ``indent``."""
    if not item:
        return indent + "{}"
    inner = ",\n  " + indent
    body = inner.join(f"{_text(key)}: {_scalar(value)}" for key, value in item.items())
    return f"{indent}{{\n  {indent}{body}\n{indent}}}"


_DRIFT_KEYS = ("kind", "target", "user", "role", "first_seen")


def _drift_text(row: Mapping[str, str]) -> str:
    """One element of ``drift``, as :func:`_flat_object` writes it (a row of the usual keys
    in their usual order is written directly: there are as many as operations)."""
    if tuple(row) != _DRIFT_KEYS:
        return _flat_object(row, "    ")
    return (
        f'    {{\n      "kind": {_text(row["kind"])},'
        f'\n      "target": {_text(row["target"])},'
        f'\n      "user": {_text(row["user"])},'
        f'\n      "role": {_text(row["role"])},'
        f'\n      "first_seen": {_text(row["first_seen"])}\n    }}'
    )


def _operation_text(operation: Operation, outcome: Outcome | None) -> str:
    """:func:`_operation_json` of one operation, written as an element of ``operations``."""
    role = "null" if operation.role is None else _text(operation.role)
    text = (
        f'    {{\n      "action": {_text(operation.action)},'
        f'\n      "target": {_text(operation.target)},'
        f'\n      "user": {_text(operation.user)},'
        f'\n      "role": {role},'
        f'\n      "reason": {_text(operation.reason)},'
        f'\n      "privileged": {"true" if operation.privileged else "false"}'
    )
    if outcome is not None:
        text += ',\n      "outcome": "applied"' if outcome.ok else ',\n      "outcome": "failed"'
        if outcome.error:
            text += ',\n      "error": ' + _text(outcome.error)
    return text + "\n    }"


def _operation_texts(
    operations: Sequence[Operation], outcomes: Iterable[Outcome | None]
) -> Iterator[str]:
    """:func:`_operation_text` of each operation, the same text: a plan's operations share a
    few actions, targets and reasons, so each head (action, target) and tail (reason,
    privileged) is written once and reused (a quarter of a million operations at 100k users).
    """
    heads: dict[tuple[str, str], str] = {}
    tails: dict[tuple[str, bool], str] = {}
    for operation, outcome in zip(operations, outcomes, strict=True):
        if outcome is not None:
            yield _operation_text(operation, outcome)
            continue
        action, target, user, role, reason, privileged = operation
        head = heads.get((action, target))
        if head is None:
            head = heads[(action, target)] = (
                f'    {{\n      "action": {_text(action)},\n      "target": {_text(target)},'
                '\n      "user": '
            )
        tail = tails.get((reason, privileged))
        if tail is None:
            tail = tails[(reason, privileged)] = (
                f',\n      "reason": {_text(reason)},'
                f'\n      "privileged": {"true" if privileged else "false"}\n    }}'
            )
        role_text = "null" if role is None else _text(role)
        yield f'{head}{_text(user)},\n      "role": {role_text}{tail}'


def _drift_texts(rows: Iterable[Mapping[str, str]]) -> Iterator[str]:
    """:func:`_drift_text` of each row, the same text, each head (kind, target) and tail
    (first_seen) written once and reused."""
    heads: dict[tuple[str, str], str] = {}
    tails: dict[str, str] = {}
    for row in rows:
        if tuple(row) != _DRIFT_KEYS:
            yield _drift_text(row)
            continue
        kind, target, seen = row["kind"], row["target"], row["first_seen"]
        head = heads.get((kind, target))
        if head is None:
            head = heads[(kind, target)] = (
                f'    {{\n      "kind": {_text(kind)},\n      "target": {_text(target)},'
                '\n      "user": '
            )
        tail = tails.get(seen)
        if tail is None:
            tail = tails[seen] = f',\n      "first_seen": {_text(seen)}\n    }}'
        yield f'{head}{_text(row["user"])},\n      "role": {_text(row["role"])}{tail}'


def _array(key: str, elements: Iterator[str], last: bool = False) -> Iterator[str]:
    """``"key": [...]`` of the top-level object, its elements already written at depth 2,
    in chunks of :data:`CHUNK_ITEMS` elements."""
    end = "\n" if last else ",\n"
    first = list(islice(elements, CHUNK_ITEMS))
    if not first:
        yield f"  {_text(key)}: []{end}"
        return
    yield f"  {_text(key)}: [\n" + ",\n".join(first)
    while chunk := list(islice(elements, CHUNK_ITEMS)):
        yield ",\n" + ",\n".join(chunk)
    yield f"\n  ]{end}"


def _member(key: str, value: object, last: bool = False) -> str:
    """``"key": value`` of the top-level object, as ``json.dumps(..., indent=2)`` nests it."""
    nested = json.dumps(value, indent=2).replace("\n", "\n  ")
    return f"  {_text(key)}: {nested}" + ("\n" if last else ",\n")


def lines_in_chunks(lines: Iterable[str]) -> Iterator[str]:
    """``lines`` with their line ends, :data:`CHUNK_ITEMS` lines to a chunk (for
    :func:`write_chunks`)."""
    it = iter(lines)
    while chunk := list(islice(it, CHUNK_ITEMS)):
        yield "\n".join(chunk) + "\n"


#: Elements of a large array written per chunk of the streamed JSON (about 200 KB).
CHUNK_ITEMS = 1000


def plan_json_chunks(report: RunReport) -> Iterator[str]:
    """The plan as JSON, in pieces: the same document, byte for byte, as
    ``json.dumps(document, indent=2)`` of ``dry_run``, ``operations``, ``drift``,
    ``unreadable``, ``exceptions``, ``unknown_users``, ``summary`` (and ``held``), without
    holding it (a plan of 100k users is tens of megabytes). The operations and drift are
    written from the report as they are read."""
    operations = _operation_texts(report.operations, _outcomes(report))
    yield '{\n  "dry_run": ' + _scalar(report.dry_run) + ",\n"
    yield from _array("operations", operations)
    yield from _array("drift", _drift_texts(report.drift))
    yield _member("unreadable", _unreadable_json(report.unreadable))
    yield _member("exceptions", exceptions_json(report.exceptions))
    yield _member("unknown_users", report.unknown_users)
    yield _member("summary", report.summary(), last=not report.held)
    if report.held:
        yield _member("held", report.held, last=True)
    yield "}"


def write_chunks(chunks: Iterable[str], out: TextIO) -> int:
    """Write ``chunks`` to ``out`` one after the other (each flushed on to the stream, so a
    consumer reads the plan while it is being written); the number of writes."""
    writes = 0
    for chunk in chunks:
        out.write(chunk)
        writes += 1
    out.flush()
    return writes


def exceptions_json(exceptions: Sequence[ReviewException]) -> list[dict[str, Any]]:
    """Review exceptions as JSON: the grant held back, why, and what ends it."""
    return [
        {
            "id": e.id,
            "campaign": e.campaign,
            "item_id": e.item_id,
            "target": e.grant.target,
            "user": e.grant.user,
            "role": e.grant.role,
            "since": e.created_at,
            "memberships": [
                {"rule": rule, "group_id": group, "group": name} for rule, group, name in e.causes
            ],
        }
        for e in exceptions
    ]


def exceptions_lines(exceptions: Sequence[ReviewException]) -> list[str]:
    """Review exceptions for people, with the membership the IdP's admin should remove."""
    if not exceptions:
        return []
    lines = ["", f"review exceptions ({len(exceptions)}), held back although a rule gives them:"]
    lines.extend(
        f"  {e.grant.target:<16} {e.grant.user:<32} {e.grant.role}  (campaign {e.campaign}"
        f" item {e.item_id}; remove {e.memberships} in the IdP)"
        for e in exceptions
    )
    return lines


def _unreadable_json(unreadable: dict[str, str]) -> list[dict[str, str]]:
    return [{"target": name, "error": error} for name, error in sorted(unreadable.items())]


def _unreadable_lines(unreadable: dict[str, str]) -> list[str]:
    if not unreadable:
        return []
    lines = ["", f"unreadable targets ({len(unreadable)}), left out of the plan:"]
    lines.extend(tables.render(None, sorted(unreadable.items()), indent=2))
    return lines


def _row(operation: Operation, outcome: Outcome | None) -> tuple[str, ...]:
    """One operation: what, for whom, which role, why (and how applying it failed)."""
    flag = " [privileged]" if operation.privileged else ""
    why = f"({operation.reason})"
    if outcome is not None and not outcome.ok:
        why += f"  FAILED: {outcome.error}"
    return (
        f"{_MARK[operation.action]} {operation.action}",
        operation.user,
        (operation.role or "") + flag,
        why,
    )


def _operation_lines(pairs: Iterable[tuple[Operation, Outcome | None]]) -> list[str]:
    return tables.render(None, [_row(op, outcome) for op, outcome in pairs], indent=2)


def plan_table(report: RunReport) -> str:
    """The plan for people (what :func:`plan_table_lines` streams)."""
    return "\n".join(plan_table_lines(report))


def plan_table_lines(report: RunReport) -> Iterator[str]:
    """The plan for people, line by line (without line ends), each target's operations and
    the drift read from the report as they are written."""
    summary = report.summary()
    mode = "dry run, nothing changed" if report.dry_run else "applied"
    if report.held:
        mode = "held, nothing changed"
    yield (
        f"Plan: {summary['grant']} to grant, {summary['revoke']} to revoke,"
        f" {summary['disable']} to disable ({mode})"
    )
    if not report.operations:
        read = "the targets read" if report.unreadable else "the targets"
        yield f"Nothing to do: {read} match the directory."
    for target in sorted({op.target for op in report.operations}):
        yield ""
        yield f"target {target}"

        def rows(target: str = target) -> Iterator[tuple[str, ...]]:
            pairs = zip(report.operations, _outcomes(report), strict=True)
            return (_row(op, outcome) for op, outcome in pairs if op.target == target)

        yield from tables.streamed(rows, indent=2)
    yield from exceptions_lines(report.exceptions)
    if report.drift:
        yield ""
        yield f"drift ({len(report.drift)}):"

        def drift_rows() -> Iterator[tuple[str, ...]]:
            return (
                (d["kind"], d["target"], d["user"], d["role"], f"(first seen {d['first_seen']})")
                for d in report.drift
            )

        yield from tables.streamed(drift_rows, indent=2)
    yield from _unreadable_lines(report.unreadable)
    if report.outcomes:
        yield ""
        yield f"{summary['applied']} applied, {summary['failed']} failed"
    if report.held:
        yield ""
        yield report.held


def _leaver_json(leaver: LeaverRecord | None) -> dict[str, Any] | None:
    if leaver is None:
        return None
    return {
        "left_at": _stamp(leaver.left_at),
        "cleared_at": _stamp(leaver.cleared_at),
        "verified_at": _stamp(leaver.verified_at),
        "pending_targets": list(leaver.pending_targets),
        "targets": [
            {
                "target": detail.target,
                "state": leaver.target_state(detail),
                "cleared_at": _stamp(detail.cleared_at),
                "last_error": detail.last_error,
            }
            for detail in leaver.targets
        ],
    }


def _stamp(moment: datetime | None) -> str | None:
    return None if moment is None else format_timestamp(moment)


def _leaver_lines(leaver: LeaverRecord | None) -> list[str]:
    if leaver is None:
        return []
    overall = "cleared " + str(_stamp(leaver.cleared_at)) if leaver.cleared_at else "not cleared"
    lines = ["", f"leaver since {_stamp(leaver.left_at)}: {overall}"]
    rows = []
    for detail in leaver.targets:
        state = leaver.target_state(detail)
        when = f" {_stamp(detail.cleared_at)}" if detail.cleared_at else ""
        error = f" ({detail.last_error})" if detail.last_error and state == "pending" else ""
        rows.append((detail.target, f"{state}{when}{error}"))
    return lines + tables.render(None, rows, indent=2)


def _reason_json(reason: Reason) -> dict[str, Any]:
    """A reason of ``explain --format json``: a rule's, or a time-bound request's."""
    found: dict[str, Any] = {
        "rule": reason.rule,
        "group": reason.group,
        "privileged": reason.privileged,
    }
    if reason.request is not None:
        found.update({"request": reason.request, "note": reason.note})
    return found


def explain_json(explanation: Explanation, leaver: LeaverRecord | None = None) -> str:
    """The explanation as JSON; ``leaver`` is the user's newest leaver record, if any."""
    return json.dumps(
        {
            "user": explanation.user,
            "active": explanation.active,
            "known": explanation.active is not None,
            "groups": explanation.groups,
            "desired": [
                {
                    "target": grant.target,
                    "role": grant.role,
                    "privileged": any(r.privileged for r in reasons),
                    "reasons": [_reason_json(r) for r in reasons],
                }
                for grant, reasons in explanation.desired
            ],
            "actual": [
                {"target": grant.target, "role": grant.role, "managed": managed}
                for grant, managed in explanation.actual
            ],
            "principals": [
                {
                    "target": target,
                    "exists": enabled is not None,
                    "enabled": bool(enabled),
                    "readable": target not in explanation.unreadable,
                }
                for target, enabled in sorted(explanation.principals.items())
            ],
            "operations": [_operation_json(op, None) for op in explanation.operations],
            "unreadable": _unreadable_json(explanation.unreadable),
            "exceptions": exceptions_json(explanation.exceptions),
            "leaver": _leaver_json(leaver),
        },
        indent=2,
    )


def explain_table(explanation: Explanation, leaver: LeaverRecord | None = None) -> str:
    """The explanation for people; ``leaver`` as for :func:`explain_json`."""
    if explanation.active is None:
        state = "not in the directory"
    else:
        state = "active" if explanation.active else "inactive (leaver)"
    lines = [f"user {explanation.user}: {state}"]
    lines.append("groups: " + (", ".join(explanation.groups) or "none"))
    lines.append("")
    lines.append("desired (why they should have it):")
    desired = [
        (
            grant.target,
            grant.role,
            "; ".join(f"{r}{' [privileged]' if r.privileged else ''}" for r in reasons),
        )
        for grant, reasons in explanation.desired
    ]
    lines.extend(tables.render(None, desired, indent=2))
    if not explanation.desired:
        lines.append("  nothing")
    lines.append("")
    lines.append("actual (what the targets hold):")
    actual = [
        (
            grant.target,
            grant.role,
            "" if managed else "(unmanaged: no rule names this role; never touched)",
        )
        for grant, managed in explanation.actual
    ]
    lines.extend(tables.render(None, actual, indent=2))
    if not explanation.actual:
        lines.append("  nothing")
    for target, enabled in sorted(explanation.principals.items()):
        status = "absent" if enabled is None else ("enabled" if enabled else "disabled")
        if target in explanation.unreadable:
            status = "unknown: the target could not be read"
        lines.append(f"  principal in {target}: {status}")
    lines.append("")
    lines.append("difference (what reconcile would do):")
    lines.extend(_operation_lines((op, None) for op in explanation.operations))
    if not explanation.operations:
        lines.append("  nothing: in sync" if not explanation.unreadable else "  nothing")
    lines.extend(_unreadable_lines(explanation.unreadable))
    lines.extend(exceptions_lines(explanation.exceptions))
    lines.extend(_leaver_lines(leaver))
    return "\n".join(lines)
