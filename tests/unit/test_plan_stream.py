"""The plan written as it is rendered: the same JSON document and table as before, in pieces."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any

import pytest

from jmlsync.cli.reconcile import write_plan
from jmlsync.domain.access import Grant, Operation
from jmlsync.domain.plan import sort_grants
from jmlsync.domain.review_records import ReviewException
from jmlsync.engine.apply import Outcome
from jmlsync.engine.reconcile_run import DriftRows, drift_json
from jmlsync.report import tables
from jmlsync.report.plan import (
    CHUNK_ITEMS,
    RunReport,
    _operation_json,
    _row,
    _unreadable_lines,
    exceptions_json,
    exceptions_lines,
    plan_json,
    plan_json_chunks,
    plan_table,
)
from jmlsync.store.assurance import DriftFinding, SqlAssurance
from jmlsync.store.directory import SqlStore
from tests.postgres import fresh_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def reference_json(report: RunReport) -> str:
    """The plan as `reconcile --format json` wrote it before streaming: one json.dumps."""
    outcomes: Sequence[Outcome | None] = report.outcomes or [None] * len(report.operations)
    document = {
        "dry_run": report.dry_run,
        "operations": [
            _operation_json(op, outcome)
            for op, outcome in zip(report.operations, outcomes, strict=True)
        ],
        "drift": list(report.drift),
        "unreadable": [
            {"target": name, "error": error} for name, error in sorted(report.unreadable.items())
        ],
        "exceptions": exceptions_json(report.exceptions),
        "unknown_users": report.unknown_users,
        "summary": report.summary(),
    }
    if report.held:
        document["held"] = report.held
    return json.dumps(document, indent=2)


def reference_table(report: RunReport) -> str:
    """The plan's table as it was rendered before streaming: every line held, then joined."""
    summary = report.summary()
    mode = "dry run, nothing changed" if report.dry_run else "applied"
    if report.held:
        mode = "held, nothing changed"
    lines = [
        f"Plan: {summary['grant']} to grant, {summary['revoke']} to revoke,"
        f" {summary['disable']} to disable ({mode})"
    ]
    if not report.operations:
        read = "the targets read" if report.unreadable else "the targets"
        lines.append(f"Nothing to do: {read} match the directory.")
    outcomes: Sequence[Outcome | None] = report.outcomes or [None] * len(report.operations)
    pairs = sorted(zip(report.operations, outcomes, strict=True), key=lambda p: p[0].target)
    for target, items in groupby(pairs, key=lambda p: p[0].target):
        lines.append("")
        lines.append(f"target {target}")
        lines.extend(tables.render(None, [_row(op, o) for op, o in items], indent=2))
    lines.extend(exceptions_lines(report.exceptions))
    if report.drift:
        lines.append("")
        lines.append(f"drift ({len(report.drift)}):")
        rows = [
            (d["kind"], d["target"], d["user"], d["role"], f"(first seen {d['first_seen']})")
            for d in report.drift
        ]
        lines.extend(tables.render(None, rows, indent=2))
    lines.extend(_unreadable_lines(report.unreadable))
    if report.outcomes:
        lines.append("")
        lines.append(f"{summary['applied']} applied, {summary['failed']} failed")
    if report.held:
        lines.append("")
        lines.append(report.held)
    return "\n".join(lines)


def operations(count: int, targets: Sequence[str] = ("sandbox",)) -> list[Operation]:
    found: list[Operation] = []
    for i in range(count):
        target = targets[i % len(targets)]
        if i % 7 == 0:
            found.append(Operation("disable", target, f"leaver{i}@x.io", None, "leaver"))
        elif i % 3 == 0:
            found.append(Operation("revoke", target, f"user{i}@x.io", f"role-{i % 5}", "mover"))
        else:
            reason = f"rule {i % 4 + 1}: group engineering"
            found.append(Operation("grant", target, f"user{i}@x.io", "admin", reason, i % 2 == 0))
    return found


def drift(count: int) -> list[dict[str, str]]:
    findings = [
        ("missing" if i % 2 else "unmanaged", Grant("sandbox", f"user{i}@x.io", "developer"))
        for i in range(count)
    ]
    return drift_json(findings, [], "2026-01-01T00:00:00.000000Z")


def exception() -> ReviewException:
    return ReviewException(
        id=4,
        campaign="q1",
        item_id=12,
        grant=Grant("sandbox", "zoë@x.io", "admin"),
        user_id="u-1",
        causes=((2, "g-1", "cloud-admins"),),
        created_at="2026-01-01T00:00:00.000000Z",
        lifted_at=None,
        lifted_reason=None,
    )


def reports() -> Iterator[RunReport]:
    yield RunReport(dry_run=True, operations=[])
    small = operations(9, ("sandbox", "other"))
    yield RunReport(
        dry_run=True,
        operations=small,
        drift=drift(3),
        counts={"users": 3, "groups": 2, "desired": 6, "actual": 1},
        seconds=0.0123456,
        unknown_users=["ghost@x.io", "δ@x.io"],
    )
    yield RunReport(
        dry_run=False,
        operations=small,
        outcomes=[
            Outcome(op, ok=i % 3 != 1, error=None if i % 3 != 1 else 'HTTP 409: "taken" é')
            for i, op in enumerate(small)
        ],
        held=None,
        unreadable={"downstream": "timed out", "aws": "AccessDenied: ✗"},
        exceptions=(exception(),),
    )
    yield RunReport(
        dry_run=True,
        operations=operations(2 * CHUNK_ITEMS + 3, ("b-target", "a-target")),
        drift=DriftRows(
            [("missing", Grant("sandbox", f"user{i}@x.io", "r")) for i in range(CHUNK_ITEMS)],
            ["2026-01-01T00:00:00.000000Z"] * CHUNK_ITEMS,
        ),
        held="would be held: the plan revokes 668 grants, more than the limit of 50",
    )


@pytest.mark.parametrize("report", list(reports()), ids=["empty", "small", "applied", "large"])
def test_the_streamed_json_is_the_document_it_was(report: RunReport) -> None:
    streamed = plan_json(report)
    assert streamed == reference_json(report)  # byte for byte, layout included
    assert json.loads(streamed) == json.loads(reference_json(report))


@pytest.mark.parametrize("report", list(reports()), ids=["empty", "small", "applied", "large"])
def test_the_streamed_table_is_the_table_it_was(report: RunReport) -> None:
    assert plan_table(report) == reference_table(report)


def test_a_long_table_streams_as_the_plain_layout() -> None:
    rows = [(f"cell{i}", "漢字" if i % 9 == 0 else "x" * (i % 13), "", "end") for i in range(2500)]
    assert len(rows) > tables.MAX_WRAPPED_ROWS
    assert list(tables.streamed(lambda: iter(rows), indent=2)) == tables.plain(None, rows, indent=2)


class Recording(io.StringIO):
    """stdout, remembering each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []

    def write(self, text: str) -> int:
        self.writes.append(len(text))
        return super().write(text)


@pytest.mark.parametrize("output_format", ["json", "table"])
def test_a_large_plan_goes_out_in_many_writes(
    output_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = RunReport(dry_run=True, operations=operations(10 * CHUNK_ITEMS), drift=drift(2000))
    out = Recording()
    monkeypatch.setattr("sys.stdout", out)
    write_plan(report, output_format)
    text = out.getvalue()
    expected = plan_json(report) if output_format == "json" else plan_table(report)
    assert text == expected + "\n"
    assert len(out.writes) >= 10
    assert max(out.writes) < len(text) / 5


class Counted(Sequence[dict[str, str]]):
    """Drift rows that count how many were read."""

    def __init__(self, rows: list[dict[str, str]]) -> None:
        self.rows = rows
        self.read = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> Any:
        return self.rows[index]

    def __iter__(self) -> Iterator[dict[str, str]]:
        for row in self.rows:
            self.read += 1
            yield row


def test_chunks_are_made_as_the_rows_are_read() -> None:
    rows = Counted(drift(5 * CHUNK_ITEMS))
    chunks = plan_json_chunks(RunReport(dry_run=True, operations=[], drift=rows))
    taken = []
    while rows.read == 0:
        taken.append(next(chunks))
    assert rows.read <= 2 * CHUNK_ITEMS  # the first chunk of drift, not all of it
    taken.extend(chunks)
    assert rows.read == len(rows.rows)
    assert json.loads("".join(taken))["drift"] == rows.rows


def test_drift_rows_are_what_drift_json_made() -> None:
    findings = [
        ("missing", Grant("b", "u1", "r")),
        ("missing", Grant("a", "u2", "r")),
        ("unmanaged", Grant("a", "u3", "admin")),
    ]
    known = [DriftFinding("unmanaged", "a", "u3", "admin", "2025-12-01", "2025-12-31")]
    made = drift_json(findings, known, "2026-01-01")
    rows = DriftRows(findings, ["2026-01-01", "2026-01-01", "2025-12-01"])
    assert list(rows) == made
    assert rows == made
    assert (len(rows), rows[2], rows[-1], rows[0:2]) == (3, made[2], made[2], made[0:2])


def test_grants_sort_in_their_own_order() -> None:
    grants = [Grant(t, u, r) for t in ("b", "a", "ab") for u in ("u2", "u1", "U") for r in "yxz"]
    assert sort_grants(reversed(grants)) == sorted(grants)


@pytest.fixture(params=["sqlite", "postgresql"])
async def twins(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[SqlStore]]:
    """Two empty stores on one backend: one recorded the old way, one the new way."""
    if request.param == "sqlite":
        stores = [await SqlStore.open(tmp_path / f"{name}.db") for name in ("a", "b")]
        try:
            yield stores
        finally:
            for store in stores:
                await store.close()
        return
    async with fresh_database() as first, fresh_database() as second:
        stores = [await SqlStore.open_postgres(url) for url in (first, second)]
        try:
            yield stores
        finally:
            for store in stores:
                await store.close()


def finding(kind: str, target: str, user: str) -> tuple[str, Grant]:
    return kind, Grant(target, user, "developer")


async def test_recording_findings_set_wise_is_recording_them_one_by_one(
    twins: list[SqlStore],
) -> None:
    old, new = (SqlAssurance(store.db) for store in twins)
    runs: list[tuple[list[tuple[str, Grant]], bool, tuple[str, ...]]] = [
        ([finding("missing", "a", "u1"), finding("unmanaged", "b", "u2")], True, ()),
        # u1 again, u2 gone, u3 new; a complete run resolves what it did not find again.
        ([finding("missing", "a", "u1"), finding("missing", "a", "u3")], True, ()),
        # A partial run resolves nothing; a complete run skips an unreadable target.
        ([finding("unmanaged", "b", "u4")], False, ()),
        ([finding("missing", "a", "u3")], True, ("b",)),
        ([], True, ()),
    ]
    for number, (found, complete, unreadable) in enumerate(runs):
        now = T0 + timedelta(days=number)
        seen_old, seen_new = [], []

        async def alerts_old(
            _conn: Any, fresh: list[DriftFinding], out: list[Any] = seen_old
        ) -> None:
            out.extend(fresh)

        async def alerts_new(
            _conn: Any, fresh: list[DriftFinding], out: list[Any] = seen_new
        ) -> None:
            out.extend(fresh)

        was_new, open_old = await old.record_drift(
            found, now, scope_complete=complete, unreadable=unreadable, also=alerts_old
        )
        record = await new.record_findings(
            found, now, scope_complete=complete, unreadable=unreadable, also=alerts_new
        )
        assert record.new == was_new == seen_old == seen_new
        assert await new.open_drift() == open_old
        first = {(d.kind, d.target, d.user, d.role): d.first_seen for d in open_old}
        assert record.first_seen == [first[(k, g.target, g.user, g.role)] for k, g in found]
        kinds = [d.kind for d in open_old]
        assert record.open_counts == {kind: kinds.count(kind) for kind in set(kinds)}


def test_operations_sharing_heads_and_tails_are_each_written_in_full() -> None:
    """The written heads (action, target) and tails (reason, privileged) are reused; every
    operation still reads as json.dumps writes it, escapes and all."""
    found = [
        Operation("grant", "sandbox", "zoë@x.io", 'role "a"', 'rule 1: group "eng"', True),
        Operation("grant", "sandbox", "bob@x.io", "role\tb", 'rule 1: group "eng"', False),
        Operation("grant", "sandbox", "ann@x.io", "role-c", 'rule 1: group "eng"', True),
        Operation("grant", "other", "ann@x.io", "role-c", 'rule 1: group "eng"', True),
        Operation("disable", "other", "ann@x.io", None, "leaver"),
    ]
    rows = [
        {**row, "first_seen": stamp}
        for row, stamp in zip(drift(4), ["t1", "t1", "t2", "t1"], strict=True)
    ]
    report = RunReport(dry_run=True, operations=found, drift=rows)
    assert plan_json(report) == reference_json(report)
