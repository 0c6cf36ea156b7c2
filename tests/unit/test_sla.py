"""The leaver SLA report: verdicts, summaries, the window parser and every rendering."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from jmlsync.domain.sla import LeaverRecord, MoverRevocation, TargetDetail
from jmlsync.report.sla.build import SlaReport, build_report, parse_since, percentile, render_json
from jmlsync.report.sla.html import render_html
from jmlsync.report.sla.text import CSV_COLUMNS, MOVER_CSV_COLUMNS, render_csv, render_table

SLA = 900
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=30)
LEFT = datetime(2024, 5, 20, 9, 0, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>@x.io"


def _after(seconds: float | None, start: datetime = LEFT) -> datetime | None:
    return None if seconds is None else start + timedelta(seconds=seconds)


def leaver(
    user: str,
    clear: float | None = None,
    verify: float | None = None,
    *,
    breached: bool = False,
    left: datetime = LEFT,
    targets: tuple[TargetDetail, ...] = (),
) -> LeaverRecord:
    """A leaver who left at ``left`` and was cleared / verified that many seconds later."""
    return LeaverRecord(
        user=user,
        left_at=left,
        cleared_at=_after(clear, left),
        verified_at=_after(verify, left),
        breached_at=left + timedelta(seconds=SLA + 1) if breached else None,
        targets=targets,
    )


def mover(user: str, seconds: float) -> MoverRevocation:
    revoked = LEFT + timedelta(seconds=seconds)
    return MoverRevocation(user, "aws", "admin", LEFT, revoked, revoked + timedelta(seconds=1))


def report(leavers: list[LeaverRecord], movers: list[MoverRevocation] | None = None) -> SlaReport:
    return build_report(leavers, movers or [], sla_seconds=SLA, since=SINCE, until=NOW, now=NOW)


@pytest.fixture
def mixed() -> SlaReport:
    """Two in time, one late, one with a recorded breach, one pending, one overdue."""
    first = LEFT - timedelta(hours=1)
    aws = TargetDetail("aws", 3, True, 0, _after(100, first))
    gcp = TargetDetail("gcp", 1, False, 2, None)
    return report(
        [
            leaver("ok1@x.io", 100, 120, left=first, targets=(aws, gcp)),
            leaver("ok2@x.io", 300, 310),
            leaver("late@x.io", 1000, 1100),
            leaver(HOSTILE, 200, 250, breached=True),
            leaver("pending@x.io", left=NOW - timedelta(seconds=60)),
            leaver("overdue@x.io", 500),
        ],
        [mover("m1@x.io", 10), mover("m2@x.io", 2000)],
    )


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (leaver("a", 100, 200), True),
        (leaver("a", 100, SLA), True),
        (leaver("a", 100, SLA + 0.001), False),
        (leaver("a", 100, 200, breached=True), False),
        (leaver("a", left=NOW - timedelta(seconds=SLA)), None),
        (leaver("a", 10, left=NOW - timedelta(seconds=60)), None),
        (leaver("a", left=NOW - timedelta(seconds=SLA + 1)), False),
        (leaver("a", 100), False),
        (leaver("a", left=NOW - timedelta(seconds=60), breached=True), False),
    ],
    ids=[
        "verified-in-time",
        "verified-at-the-limit",
        "verified-late",
        "breach-recorded-though-verified-in-time",
        "pending-at-the-limit",
        "cleared-not-verified-inside-window",
        "not-verified-past-sla",
        "cleared-never-verified-past-sla",
        "breach-recorded-while-inside-window",
    ],
)
def test_within_sla(record: LeaverRecord, expected: bool | None) -> None:
    (outcome,) = report([record]).leavers
    assert outcome.within_sla is expected
    assert outcome.mark == {True: "OK", False: "BREACH", None: "pending"}[expected]


def test_seconds_to_clear_and_verify() -> None:
    (outcome,) = report([leaver("a", 12.3456, 20)]).leavers
    assert outcome.seconds_to_clear == 12.346
    assert outcome.seconds_to_verify == 20.0
    (uncleared,) = report([leaver("b")]).leavers
    assert uncleared.seconds_to_clear is None
    assert uncleared.seconds_to_verify is None


@pytest.mark.parametrize(
    ("values", "rank", "expected"),
    [
        ([], 50, None),
        ([7.0], 50, 7.0),
        ([7.0], 95, 7.0),
        ([10.0, 20.0, 30.0, 40.0], 50, 25.0),
        ([10.0, 20.0, 30.0, 40.0], 95, 38.5),
        ([10.0, 20.0, 30.0, 40.0], 100, 40.0),
        ([float(n) for n in range(1, 101)], 95, 95.05),
    ],
)
def test_percentile(values: list[float], rank: float, expected: float | None) -> None:
    assert percentile(values, rank) == pytest.approx(expected)


def test_summary(mixed: SlaReport) -> None:
    summary = mixed.summary
    assert (summary.count, summary.cleared, summary.verified, summary.pending) == (6, 5, 4, 1)
    # time to clear of the cleared five: 100, 200, 300, 500, 1000
    assert summary.p50_seconds == 300.0
    assert summary.p95_seconds == 900.0
    assert summary.max_seconds == 1000.0
    assert summary.breaches == 3
    # two met out of five decided: the pending leaver is left out
    assert summary.compliance_percent == 40.0
    assert mixed.has_breach


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([], None),
        ([leaver("p", left=NOW - timedelta(seconds=5))], None),
        ([leaver("a", 1, 2), leaver("b", 1, 2), leaver("c", 1, 2000)], 66.67),
        ([leaver("a", 1, 2), leaver("p", left=NOW - timedelta(seconds=5))], 100.0),
        ([leaver("a", 1, 2000)], 0.0),
    ],
    ids=["empty", "only-pending", "rounded", "pending-excluded", "all-late"],
)
def test_compliance(records: list[LeaverRecord], expected: float | None) -> None:
    built = report(records)
    assert built.summary.compliance_percent == expected
    assert built.has_breach is (expected is not None and expected < 100.0)


def test_a_window_without_a_decided_leaver_reads_n_a() -> None:
    built = report([])
    assert "compliance n/a" in render_table(built)
    assert "100.00" not in render_table(built)
    assert "n/a" in render_html(built)
    assert json.loads(render_json(built))["summary"]["compliance_percent"] is None


def test_no_clears_leave_latencies_empty() -> None:
    summary = report([leaver("p", left=NOW - timedelta(seconds=5))]).summary
    assert (summary.p50_seconds, summary.p95_seconds, summary.max_seconds) == (None, None, None)
    assert summary.pending == 1


def test_movers(mixed: SlaReport) -> None:
    assert [(m.seconds, m.within_sla) for m in mixed.movers] == [(10.0, True), (2000.0, False)]
    summary = mixed.movers_summary
    assert (summary.count, summary.cleared, summary.verified, summary.pending) == (2, 2, 2, 0)
    assert (summary.breaches, summary.compliance_percent) == (1, 50.0)
    assert (summary.p50_seconds, summary.max_seconds) == (1005.0, 2000.0)
    assert report([], [mover("m", SLA)]).movers[0].within_sla is True


def test_window_leaves_out_records_outside_it() -> None:
    built = report(
        [
            leaver("before", 1, 2, left=SINCE - timedelta(seconds=1)),
            leaver("first", 1, 2, left=SINCE),
            leaver("last", left=NOW),
        ]
    )
    assert [o.record.user for o in built.leavers] == ["first", "last"]
    assert built.window == {
        "since": "2024-05-02T12:00:00.000000Z",
        "until": "2024-06-01T12:00:00.000000Z",
    }


@pytest.mark.parametrize(
    ("sla_seconds", "since", "until"),
    [(0, SINCE, NOW), (-5, SINCE, NOW), (SLA, NOW, SINCE)],
)
def test_build_report_rejects_bad_arguments(
    sla_seconds: int, since: datetime, until: datetime
) -> None:
    with pytest.raises(ValueError, match=r"the SLA must be|the window starts"):
        build_report([], [], sla_seconds=sla_seconds, since=since, until=until, now=NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3600s", NOW - timedelta(seconds=3600)),
        ("90m", NOW - timedelta(minutes=90)),
        ("12h", NOW - timedelta(hours=12)),
        ("30d", NOW - timedelta(days=30)),
        ("2w", NOW - timedelta(weeks=2)),
        (" 7D ", NOW - timedelta(days=7)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T09:30:00", datetime(2024, 5, 1, 9, 30, tzinfo=UTC)),
        ("2024-05-01T09:30:00Z", datetime(2024, 5, 1, 9, 30, tzinfo=UTC)),
        ("2024-05-01T11:30:00+02:00", datetime(2024, 5, 1, 9, 30, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    parsed = parse_since(text, NOW)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text", ["", "30", "d", "30y", "-3d", "1.5h", "3 d", "yesterday", "2024-13-01", "9" * 20 + "w"]
)
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="window start"):
        parse_since(text, NOW)


LEAVER_KEYS = {
    "user",
    "left_at",
    "cleared_at",
    "verified_at",
    "seconds_to_clear",
    "within_sla",
    "seconds_to_verify",
    "breached_at",
    "targets",
    "pending_targets",
    "breach_cause",
    "regranted_at",
}
SUMMARY_KEYS = {
    "count",
    "cleared",
    "verified",
    "pending",
    "p50_seconds",
    "p95_seconds",
    "max_seconds",
    "breaches",
    "compliance_percent",
}


def test_json_shape(mixed: SlaReport) -> None:
    document = json.loads(render_json(mixed))
    assert document == mixed.as_dict()
    assert set(document) == {
        "sla_seconds",
        "window",
        "scope",
        "audit",
        "leavers",
        "summary",
        "movers",
        "generated",
        "sha256",
    }
    assert document["sla_seconds"] == SLA
    assert set(document["window"]) == {"since", "until"}
    assert all(set(row) == LEAVER_KEYS for row in document["leavers"])
    assert set(document["summary"]) == SUMMARY_KEYS
    assert set(document["movers"]) == {"sla_seconds", "revocations", "summary"}
    assert set(document["movers"]["summary"]) == SUMMARY_KEYS
    assert set(document["movers"]["revocations"][0]) == {
        "user",
        "target",
        "role",
        "requested_at",
        "revoked_at",
        "verified_at",
        "seconds",
        "seconds_to_revoke",
        "seconds_to_verify",
        "within_sla",
        "breached_at",
        "cause",
        "actor",
    }
    first = document["leavers"][0]
    assert first["targets"][0] == {
        "target": "aws",
        "revocations": 3,
        "disabled": True,
        "failures": 0,
        "last_change_at": "2024-05-20T08:01:40.000000Z",
        "state": "cleared",
        "cleared_at": None,
        "last_error": None,
    }
    assert first["left_at"] == "2024-05-20T08:00:00.000000Z"
    assert (first["seconds_to_clear"], first["within_sla"]) == (100.0, True)
    pending = next(row for row in document["leavers"] if row["user"] == "pending@x.io")
    assert (pending["within_sla"], pending["cleared_at"], pending["seconds_to_clear"]) == (
        None,
        None,
        None,
    )


def test_json_timestamps_are_utc_with_z() -> None:
    offset = datetime.fromisoformat("2024-05-20T11:00:00+02:00")
    naive = datetime(2024, 5, 20, 9, 0)
    built = report([leaver("a", 1, 2, left=offset), leaver("b", 1, 2, left=naive)])
    stamps = {row["left_at"] for row in built.as_dict()["leavers"]}
    assert stamps == {"2024-05-20T09:00:00.000000Z"}


def test_csv(mixed: SlaReport) -> None:
    rows = list(csv.reader(io.StringIO(render_csv(mixed))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0] == [
        "user",
        "left_at",
        "cleared_at",
        "verified_at",
        "seconds_to_clear",
        "seconds_to_verify",
        "within_sla",
        "breached_at",
        "targets",
        "pending_targets",
        "targets_cleared_at",
        "breach_cause",
    ]
    movers = rows[len(mixed.leavers) + 2 : len(mixed.leavers) + 3 + len(mixed.movers)]
    assert movers[0] == list(MOVER_CSV_COLUMNS)
    assert [(row[0], row[6], row[8]) for row in movers[1:]] == [
        ("m1@x.io", "10.0", "true"),
        ("m2@x.io", "2000.0", "false"),
    ]
    assert rows[1] == [
        "ok1@x.io",
        "2024-05-20T08:00:00.000000Z",
        "2024-05-20T08:01:40.000000Z",
        "2024-05-20T08:02:00.000000Z",
        "100.0",
        "120.0",
        "true",
        "",
        "aws:3;gcp:1",
        "",
        "",
        "",
    ]
    pending = next(row for row in rows if row[0] == "pending@x.io")
    assert pending[2:] == ["", "", "", "", "", "", "", "", "", ""]
    provenance = dict(tuple(row) for row in rows[len(mixed.leavers) + 5 + len(mixed.movers) :])
    assert provenance["sha256"] == mixed.sha256
    assert provenance["window_until"] == "2024-06-01T12:00:00.000000Z"


def test_table_marks_breaches_first(mixed: SlaReport) -> None:
    text = render_table(mixed)
    assert "SLA 900 s" in text
    rows = [line for line in text.splitlines() if line.startswith(("OK", "BREACH", "pending"))]
    marks = [row.split()[0] for row in rows]
    assert marks == ["BREACH", "BREACH", "BREACH", "OK", "OK", "pending"]
    assert any("late@x.io" in row for row in rows if row.startswith("BREACH"))
    assert "compliance 40.00 %" in text
    assert "Movers' revocations: 2" in text


def test_table_without_leavers() -> None:
    assert "No leaver in this window." in render_table(report([]))


def test_table_neutralises_control_characters() -> None:
    text = render_table(report([leaver("evil\x1b[2J\nname", 1, 2)]))
    assert "\x1b" not in text
    assert "evil\\x1b[2J\\nname" in text


class _Page(HTMLParser):
    """Checks that every opened element is closed in order and collects what the tests need."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.seen: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append(tag)
        self.elements.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append(tag)
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(document: str) -> _Page:
    page = _Page()
    page.feed(document)
    page.close()
    return page


def _x_ticks(document: str) -> dict[str, float]:
    ticks = re.findall(r'<text class="xtick" x="([\d.]+)"[^>]*>([^<]+)</text>', document)
    return {label: float(x) for x, label in ticks}


def test_html_is_well_formed_and_self_contained(mixed: SlaReport) -> None:
    document = render_html(mixed)
    page = _parse(document)
    assert page.errors == []
    assert page.stack == []
    assert document.startswith("<!DOCTYPE html>")
    for tag in ("html", "head", "title", "style", "body", "main", "section", "table", "svg"):
        assert tag in page.seen
    assert "http://" not in document
    assert "https://" not in document
    assert not {"script", "link", "img", "iframe"} & set(page.seen)
    assert not re.search(r"\b(src|href)=", document)


def test_html_contents(mixed: SlaReport) -> None:
    document = render_html(mixed)
    text = " ".join(_parse(document).text)
    assert "Leaver SLA report" in text
    assert "Generated" in text
    assert "2024-06-01 12:00:00Z" in text
    assert "SLA 900 s" in text
    assert "2024-05-02 12:00:00Z" in text
    for number in ("300", "900", "1000", "40.00 %", "Breaches"):
        assert number in text
    assert "late@x.io" in text
    assert "overdue@x.io" in text
    assert "No breach in this window" not in text
    assert "50.00 %" in text  # the movers' compliance


def test_html_breach_table_lists_breaches() -> None:
    document = render_html(report([leaver("late@x.io", 1000, 1100), leaver("fine@x.io", 1, 2)]))
    section = document[document.index('<section id="breaches">') :]
    section = section[: section.index("</section>")]
    assert "late@x.io" in section
    assert "fine@x.io" not in section


def test_html_histogram_marks_the_sla(mixed: SlaReport) -> None:
    document = render_html(mixed)
    page = _parse(document)
    (sla_line,) = [
        attrs for tag, attrs in page.elements if tag == "line" and attrs.get("class") == "sla"
    ]
    x1, x2 = float(sla_line["x1"] or ""), float(sla_line["x2"] or "")
    assert x1 == x2
    ticks = _x_ticks(document)
    assert ticks["900"] == pytest.approx(x1, abs=0.15)
    zero, other = ticks["0"], next(label for label in ticks if label not in {"0", "900"})
    expected = zero + (ticks[other] - zero) * SLA / float(other)
    assert x1 == pytest.approx(expected, abs=0.2)
    bars = [
        attrs
        for tag, attrs in page.elements
        if tag == "rect" and "bar" in (attrs.get("class") or "")
    ]
    assert len(bars) == 5
    assert sum("late" in (b.get("class") or "") for b in bars) == 1


def test_html_histogram_gathers_the_long_tail() -> None:
    document = render_html(report([leaver("a", 10, 20), leaver("slow", 86400, 86500)]))
    assert "The last bar gathers every leaver cleared after 2700 s." in document
    assert "&gt; 2700 s" in document
    assert _parse(document).errors == []


def test_html_without_leavers() -> None:
    document = render_html(report([]))
    page = _parse(document)
    assert page.errors == []
    text = " ".join(page.text)
    assert "No breach in this window" in text
    assert "No leaver in this window" in text
    assert "No leaver cleared in this window" in text


@pytest.mark.parametrize("sla_seconds", [1, 7, 60, 900, 3600, 86400])
def test_html_histogram_for_any_sla(sla_seconds: int) -> None:
    records = [leaver(f"u{n}", n * 97.5, n * 98) for n in range(40)]
    built = build_report(records, [], sla_seconds=sla_seconds, since=SINCE, until=NOW, now=NOW)
    document = render_html(built)
    assert _parse(document).errors == []
    assert f"SLA {sla_seconds} s" in document
    assert str(sla_seconds) in _x_ticks(document)


def test_html_escapes_every_value() -> None:
    hostile_target = TargetDetail('"><b>t</b>', 1, False, 0, None)
    document = render_html(report([leaver(HOSTILE, 10, 2000, targets=(hostile_target,))]))
    assert "<script" not in document
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@x.io" in document
    assert "<b>t</b>" not in document
    page = _parse(document)
    assert page.errors == []
    assert "script" not in page.seen
    assert HOSTILE in " ".join(page.text)


def test_a_leaver_pending_on_one_target_shows_that_target_pending() -> None:
    left = NOW - timedelta(seconds=60)
    ledger = TargetDetail("ledger", 1, True, 0, left, cleared_at=left + timedelta(seconds=2))
    scim = TargetDetail("scim", 0, False, 0, None, last_error="read scim: connection refused")
    record = leaver("half@x.io", left=left, targets=(ledger, scim))
    built = build_report(
        [record, leaver("done@x.io", 5, 9)],
        [],
        sla_seconds=SLA,
        since=SINCE,
        until=NOW,
        now=NOW,
        targets=["aws", "ledger", "scim"],
    )
    half, done = sorted(built.as_dict()["leavers"], key=lambda row: row["user"] != "half@x.io")
    assert half["pending_targets"] == ["aws", "scim"]
    states = {t["target"]: (t["state"], t["cleared_at"], t["last_error"]) for t in half["targets"]}
    assert states == {
        "aws": ("pending", None, None),
        "ledger": ("cleared", "2024-06-01T11:59:02.000000Z", None),
        "scim": ("pending", None, "read scim: connection refused"),
    }
    # A cleared leaver is not given pending targets it never had.
    assert (done["pending_targets"], done["targets"]) == ([], [])
    (row,) = [r for r in csv.DictReader(io.StringIO(render_csv(built))) if r["user"] == "half@x.io"]
    assert (row["pending_targets"], row["targets_cleared_at"]) == (
        "aws;scim",
        "ledger=2024-06-01T11:59:02.000000Z",
    )
    table = render_table(built)
    assert "PENDING ON" in table
    assert next(line for line in table.splitlines() if "half@x.io" in line).endswith("aws, scim")
    page = render_html(built)
    assert "scim: 0 revoked, PENDING (read scim: connection refused)" in page
    assert "ledger: 1 revoked, disabled, cleared 2024-06-01 11:59:02Z" in page
