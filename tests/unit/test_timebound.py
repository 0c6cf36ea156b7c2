"""The lifecycle rules of time-bound access (pure domain), and their configuration."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from jmlsync.cli import main
from jmlsync.config import ConfigError, load_settings
from jmlsync.domain.access import Grant, Reason, RoleGrant
from jmlsync.domain.policy import timebound_grants, with_timebound
from jmlsync.domain.timebound import (
    AccessRefused,
    AccessRequest,
    Eligibility,
    Person,
    approve,
    deny,
    end,
    end_if_ineligible,
    expire,
    extend,
    format_duration,
    mark_verified,
    new_request,
    parse_duration,
    seconds_past_expiry,
    start,
    time_out,
)
from jmlsync.policy_config import eligibilities_from_settings

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ELIGIBILITY = Eligibility(
    name="prod-admin",
    grants=(RoleGrant("ledger", "admin"),),
    max_duration=timedelta(hours=4),
    groups=frozenset({"oncall"}),
    approvals=2,
    approvers=frozenset({"approvers"}),
    ticket_pattern=r"INC-\d+",
    approval_timeout=timedelta(hours=1),
    privileged=True,
)
ADA = Person("ada@x.io", True, frozenset({"OnCall"}))
BOB = Person("bob@x.io", True, frozenset({"approvers"}))
CY = Person("cy@x.io", True, frozenset({"Approvers"}))
EVE = Person("eve@x.io", True, frozenset({"oncall"}))


def _request(**overrides: object) -> AccessRequest:
    args: dict[str, object] = {
        "duration": timedelta(hours=2),
        "reason": "incident",
        "ticket": "INC-12",
        "now": NOW,
    }
    args.update(overrides)
    made = new_request([ELIGIBILITY], ADA, "ledger", "admin", **args)  # type: ignore[arg-type]
    return made.__class__(**{**made.__dict__, "id": 12})


def _active() -> AccessRequest:
    approved = approve(approve(_request(), ELIGIBILITY, BOB, NOW), ELIGIBILITY, CY, NOW)
    return start(approved, ELIGIBILITY, ADA, NOW)


def test_the_happy_path_runs_pending_to_verified() -> None:
    request = _request()
    assert request.state == "pending"
    assert request.privileged
    once = approve(request, ELIGIBILITY, BOB, NOW)
    assert once.state == "pending"
    assert once.approvers() == ["bob@x.io"]
    twice = approve(once, ELIGIBILITY, CY, NOW)
    assert twice.state == "approved"
    active = start(twice, ELIGIBILITY, ADA, NOW + timedelta(seconds=1))
    assert active.state == "active"
    assert active.expires_at == NOW + timedelta(hours=2, seconds=1)
    assert expire(active, NOW + timedelta(hours=1)) == active
    ended = expire(active, NOW + timedelta(hours=3))
    assert (ended.state, ended.end_reason) == ("ended", "expired")
    verified = mark_verified(ended, NOW + timedelta(hours=3, seconds=5))
    assert verified.state == "verified"
    assert seconds_past_expiry(verified) == pytest.approx(3600 + 4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"duration": timedelta(hours=5)}, "over the maximum"),
        ({"reason": "  "}, "reason is required"),
        ({"ticket": "JIRA-1"}, "does not match"),
        ({"ticket": None}, "ticket is required"),
    ],
)
def test_bad_requests_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(AccessRefused, match=message):
        _request(**overrides)


def test_unknown_grants_and_ineligible_people_are_refused() -> None:
    with pytest.raises(AccessRefused, match="unknown target or role"):
        new_request(
            [ELIGIBILITY],
            ADA,
            "ledger",
            "nope",
            duration=timedelta(hours=1),
            reason="x",
            ticket="INC-1",
            now=NOW,
        )
    with pytest.raises(AccessRefused, match="not eligible"):
        new_request(
            [ELIGIBILITY],
            BOB,
            "ledger",
            "admin",
            duration=timedelta(hours=1),
            reason="x",
            ticket="INC-1",
            now=NOW,
        )
    with pytest.raises(AccessRefused, match="not an active"):
        new_request(
            [ELIGIBILITY],
            Person("ada@x.io", False, ADA.groups),
            "ledger",
            "admin",
            duration=timedelta(hours=1),
            reason="x",
            ticket="INC-1",
            now=NOW,
        )


def test_approvers_are_checked() -> None:
    request = _request()
    with pytest.raises(AccessRefused, match="their own request"):
        approve(request, ELIGIBILITY, ADA, NOW)
    with pytest.raises(AccessRefused, match="approver group"):
        approve(request, ELIGIBILITY, EVE, NOW)
    with pytest.raises(AccessRefused, match="not an active"):
        approve(request, ELIGIBILITY, Person("bob@x.io", False, BOB.groups), NOW)
    once = approve(request, ELIGIBILITY, BOB, NOW)
    with pytest.raises(AccessRefused, match="already approved"):
        approve(once, ELIGIBILITY, Person("BOB@x.io", True, BOB.groups), NOW)


def test_a_timed_out_request_cannot_be_approved() -> None:
    later = NOW + timedelta(hours=2)
    with pytest.raises(AccessRefused, match="timed out"):
        approve(_request(), ELIGIBILITY, BOB, later)
    assert time_out(_request(), ELIGIBILITY, later).state == "timed_out"
    assert time_out(_request(), ELIGIBILITY, NOW).state == "pending"


def test_deny_and_cancel() -> None:
    denied = deny(_request(), ELIGIBILITY, BOB, "not now", NOW)
    assert (denied.state, denied.decided_by) == ("denied", "bob@x.io")
    with pytest.raises(AccessRefused, match="reason is required"):
        deny(_request(), ELIGIBILITY, BOB, " ", NOW)
    with pytest.raises(AccessRefused, match="nothing to approve"):
        approve(denied, ELIGIBILITY, CY, NOW)
    assert end(_request(), ELIGIBILITY, ADA, NOW).state == "cancelled"


def test_eligibility_is_checked_again_at_start() -> None:
    approved = approve(approve(_request(), ELIGIBILITY, BOB, NOW), ELIGIBILITY, CY, NOW)
    moved = Person("ada@x.io", True, frozenset())
    assert start(approved, ELIGIBILITY, moved, NOW).state == "cancelled"
    assert start(approved, ELIGIBILITY, None, NOW).state == "cancelled"


def test_who_may_end_early() -> None:
    active = _active()
    assert end(active, ELIGIBILITY, ADA, NOW).state == "ended"
    assert end(active, ELIGIBILITY, BOB, NOW).ended_by == "bob@x.io"
    assert end(active, ELIGIBILITY, None, NOW, admin=True, actor_name="operator").state == "ended"
    with pytest.raises(AccessRefused, match="may not end"):
        end(active, ELIGIBILITY, EVE, NOW)


def test_leaving_or_losing_eligibility_ends_the_grant() -> None:
    active = _active()
    assert end_if_ineligible(active, ELIGIBILITY, ADA, NOW) == active
    assert end_if_ineligible(active, ELIGIBILITY, None, NOW).end_reason == "leaver"
    gone = Person("ada@x.io", True, frozenset({"other"}))
    assert end_if_ineligible(active, ELIGIBILITY, gone, NOW).end_reason == "eligibility lost"
    assert end_if_ineligible(active, None, ADA, NOW).end_reason == "eligibility removed"


def test_extend_needs_the_approvals_again() -> None:
    active = _active()
    with pytest.raises(AccessRefused, match="only ada"):
        extend(active, ELIGIBILITY, BOB, timedelta(hours=1), NOW)
    with pytest.raises(AccessRefused, match="over the maximum"):
        extend(active, ELIGIBILITY, ADA, timedelta(hours=9), NOW)
    asked = extend(active, ELIGIBILITY, ADA, timedelta(hours=1), NOW)
    assert asked.expires_at == active.expires_at
    assert asked.extension == timedelta(hours=1)
    # The approvers of the request approve the extension afresh, as a new round.
    once = approve(asked, ELIGIBILITY, BOB, NOW)
    assert once.expires_at == active.expires_at
    twice = approve(once, ELIGIBILITY, CY, NOW)
    assert active.expires_at is not None
    assert twice.expires_at == active.expires_at + timedelta(hours=1)
    assert twice.extension is None
    assert twice.state == "active"


people = st.sampled_from([ADA, BOB, CY, EVE, Person("zed@x.io", False, frozenset({"approvers"}))])


@given(st.lists(people, max_size=6))
def test_approval_needs_n_distinct_qualified_approvers(approvers: list[Person]) -> None:
    request = _request()
    for person in approvers:
        try:
            request = approve(request, ELIGIBILITY, person, NOW)
        except AccessRefused:
            continue
    distinct = set(request.approvers())
    assert "ada@x.io" not in distinct
    assert "eve@x.io" not in distinct
    assert "zed@x.io" not in distinct
    assert len(distinct) == len(request.approvers())
    assert (request.state == "approved") == (len(distinct) >= ELIGIBILITY.approvals)


@given(st.integers(min_value=1, max_value=10 * 86400))
def test_durations_round_trip(seconds: int) -> None:
    delta = timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta)) == delta


@pytest.mark.parametrize("text", ["", "2", "2x", "0h", "-1h", "h", "9" * 30 + "w", "1h" * 40])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def _config(tmp_path: Path, eligibility: str) -> Path:
    path = tmp_path / "jmlsync.toml"
    path.write_text(
        f"""
[targets.ledger]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "admins"
privileged = true
grants = [{{ target = "ledger", role = "root" }}]
{eligibility}
"""
    )
    return path


def test_eligibility_config_is_validated(tmp_path: Path) -> None:
    good = _config(
        tmp_path,
        """
[access]
expiry_check_seconds = 5

[[eligibility]]
name = "prod-admin"
groups = ["oncall"]
grants = [{ target = "ledger", role = "admin" }]
max_duration = "4h"
approvals = 2
approvers = ["approvers"]
ticket_pattern = "INC-[0-9]+"
""",
    )
    settings = load_settings(good)
    assert settings.access.expiry_check_seconds == 5
    assert settings.access.end_seconds == 300
    (only,) = eligibilities_from_settings(settings)
    assert only.max_duration == timedelta(hours=4)
    assert only.approvals == 2
    result = CliRunner().invoke(main, ["config", "check", "--config", str(good)])
    assert result.exit_code == 0, result.output
    assert "prod-admin: group 'oncall' -> ledger:admin for at most 4h, 2 approval(s)" in (
        result.output
    )
    schema = json.loads(CliRunner().invoke(main, ["config", "schema"]).output)
    assert "eligibility" in schema["properties"]
    assert "access" in schema["properties"]


@pytest.mark.parametrize(
    ("eligibility", "message"),
    [
        ('grants = [{ target = "nope", role = "x" }]', "unknown target 'nope'"),
        ('grants = [{ target = "ledger", role = "root" }]\napprovals = 0', "self-service"),
        ('grants = [{ target = "ledger", role = "x" }]\nmax_duration = "forever"', "duration"),
        ('grants = [{ target = "ledger", role = "x" }]\nticket_pattern = "("', "regular expr"),
        ('grants = [{ target = "ledger", role = "x" }]\napprovers = []', "approver groups"),
    ],
)
def test_bad_eligibility_is_refused(tmp_path: Path, eligibility: str, message: str) -> None:
    text = f'[[eligibility]]\nname = "e"\ngroups = ["g"]\napprovers = ["a"]\n{eligibility}\n'
    if "approvers = []" in eligibility:
        text = text.replace('approvers = ["a"]\n', "")
    path = _config(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path)
    result = CliRunner().invoke(main, ["config", "check", "--config", str(path)])
    assert result.exit_code == 1


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ada@x.io", "bob@x.io"]),
            st.sampled_from(["admin", "developer"]),
            st.sampled_from(["active", "ended", "pending"]),
            st.integers(min_value=-3600, max_value=3600),
        ),
        max_size=8,
    ),
    st.sets(st.sampled_from(["ada@x.io", "bob@x.io"])),
)
def test_desired_is_rules_plus_active_unexpired_grants(
    requests: list[tuple[str, str, str, int]], rule_users: set[str]
) -> None:
    rules = {Grant("ledger", user, "developer"): Reason(1, "eng", False) for user in rule_users}
    made = [
        AccessRequest(
            id=index + 1,
            user=user,
            eligibility="e",
            target="ledger",
            role=role,
            duration=timedelta(hours=1),
            reason="r",
            state=state,  # type: ignore[arg-type]
            created_at=NOW,
            expires_at=NOW + timedelta(seconds=offset),
        )
        for index, (user, role, state, offset) in enumerate(requests)
    ]
    timebound = timebound_grants(made, NOW)
    expected = {
        Grant("ledger", r.user, r.role)
        for r in made
        if r.state == "active" and r.expires_at is not None and r.expires_at > NOW
    }
    assert set(timebound) == expected
    desired = with_timebound(rules, timebound)
    assert set(desired) == set(rules) | expected
    for grant, reason in rules.items():
        assert desired[grant].request is None
        assert desired[grant].rule == reason.rule
