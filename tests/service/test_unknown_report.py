"""What an ignored attribute leaves behind: one log line an hour, a bounded metric label set,
bounded state, and names safe for logs, audit rows and PostgreSQL text."""

from __future__ import annotations

import logging

import pytest

from jmlsync.scim.errors import InvalidValue
from jmlsync.scim.unknown import LOG_NAMES, IgnoredReporter, Unknowns


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "jmlsync.scim"]


def test_each_name_is_logged_once_an_hour_and_counted_every_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted: list[tuple[str, str]] = []
    clock = Clock()
    reporter = IgnoredReporter(lambda r, a: counted.append((r, a)), clock=clock)
    with caplog.at_level(logging.WARNING, logger="jmlsync.scim"):
        reporter.report("Users", ["costCenter"])
        clock.now += 3599
        reporter.report("Users", ["costCenter", "extensionAttribute1"])
        reporter.report("Groups", ["costCenter"])
        clock.now += 1
        reporter.report("Users", ["costCenter"])
    assert lines(caplog) == [
        "Users: ignored the undeclared attribute 'costCenter' (logged once an hour)",
        "Users: ignored the undeclared attribute 'extensionAttribute1' (logged once an hour)",
        "Groups: ignored the undeclared attribute 'costCenter' (logged once an hour)",
        "Users: ignored the undeclared attribute 'costCenter' (logged once an hour)",
    ]
    assert counted.count(("Users", "costCenter")) == 3


def test_a_flood_of_names_is_a_few_lines_and_bounded_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted: list[str] = []
    reporter = IgnoredReporter(
        lambda _r, a: counted.append(a), clock=Clock(), max_names=50, max_labels=10
    )
    names = [f"attr{i}" for i in range(500)]
    with caplog.at_level(logging.WARNING, logger="jmlsync.scim"):
        reporter.report("Users", names)
    assert len(lines(caplog)) == LOG_NAMES + 1
    assert lines(caplog)[-1] == (
        f"Users: ignored {500 - LOG_NAMES} more undeclared attribute name(s), not logged one by one"
    )
    for _ in range(10):
        reporter.report("Users", names)
    assert reporter.remembered == 50
    assert set(counted) == {f"attr{i}" for i in range(10)} | {"other"}
    assert counted.count("other") == 11 * 490


def test_labels_refuse_odd_characters() -> None:
    reporter = IgnoredReporter()
    assert reporter.label("urn:x:y:Custom:2.0:User:costCenter") == (
        "urn:x:y:Custom:2.0:User:costCenter"
    )
    assert reporter.label('a"b\nc') == "other"
    assert reporter.label("x" * 129) == "other"


def test_recorded_names_are_safe_and_audited_briefly() -> None:
    unknowns = Unknowns("ignore")
    for index in range(25):
        unknowns.meet(f"a{index}", InvalidValue("unknown"))
    unknowns.meet("nul\x00", InvalidValue("unknown"))
    unknowns.meet("lone\ud800", InvalidValue("unknown"))
    unknowns.meet("a0", InvalidValue("unknown"))
    assert unknowns.ignored[25:] == ["nul\\x00", "lone\\ud800", "a0"]
    (note,) = unknowns.notes()
    assert note.startswith("ignored attributes: a0, a1, ")
    assert note.endswith(" and 7 more")
    note.encode("utf-8")


def test_reject_raises_and_store_says_so() -> None:
    error = InvalidValue("unknown attribute 'x'")
    with pytest.raises(InvalidValue):
        Unknowns("reject").meet("x", error, storable=True)
    stored = Unknowns("store")
    assert stored.meet("x", error, storable=True) is True
    assert stored.meet("name.x", error) is False
    assert stored.notes() == ("ignored attributes: name.x", "stored unrecognised attributes: x")
