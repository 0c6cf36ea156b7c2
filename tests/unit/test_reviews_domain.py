"""The pure side of access reviews: configuration, scope, reviewers, decision files,
exceptions and what they take out of a plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from jmlsync.config import ConfigError, Settings
from jmlsync.domain.access import Grant, GroupInfo, Reason, RoleGrant, Rule, UserState
from jmlsync.domain.plan import PlanInput, plan
from jmlsync.domain.policy import grant_causes, rules_by_group, without_exceptions
from jmlsync.domain.reviews import (
    DecisionError,
    Item,
    NotReviewer,
    Owner,
    PastDeadline,
    Person,
    ReviewScope,
    Source,
    UnknownItem,
    assign_reviewer,
    check_decisions,
    exception_holds,
    item_from_dict,
    parse_decisions,
    snapshot_digest,
)
from jmlsync.policy_config import load_checked_settings

NOW = datetime(2026, 3, 1, tzinfo=UTC)
TARGET = """
[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "admins"
privileged = true
grants = [{ target = "sandbox", role = "admin" }]
"""


def _load(tmp_path: Path, reviews: str) -> Settings:
    path = tmp_path / "jmlsync.toml"
    path.write_text(TARGET + reviews)
    return load_checked_settings(path, environ={})


def test_a_complete_campaign_loads(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        """
[[reviews]]
name = "quarterly"
scope = [{ target = "sandbox", role = "admin" }, { target = "sandbox" }]
reviewers = ["manager", "group:security"]
schedule = "0 9 1 */3 *"
duration = "P14D"
on_no_decision = "revoke"

[[reviews.owners]]
target = "sandbox"
role = "admin"
reviewers = ["group:platform"]
""",
    )
    review = settings.reviews[0]
    assert review.duration == timedelta(days=14)
    assert review.on_no_decision == "revoke"
    assert review.owners[0].reviewers == ["group:platform"]
    schema = Settings.model_json_schema()
    assert "reviews" in schema["properties"]
    config = str(tmp_path / "jmlsync.toml")
    assert CliRunner().invoke(main, ["db", "upgrade", "--config", config]).exit_code == 0
    result = CliRunner().invoke(main, ["config", "check", "--config", config])
    assert result.exit_code == 0, result.stderr
    assert "quarterly: scope listed, reviewers manager, group:security, schedule" in result.stdout
    assert "reviews[1]: reviewer group 'security' has not been pushed yet" in result.stderr
    assert "reviewer group 'platform' has not been pushed yet" in result.stderr


@pytest.mark.parametrize(
    ("reviews", "message"),
    [
        (
            '[[reviews]]\nname = "q"\nreviewers = ["boss"]\n',
            'reviews[1].reviewers: expected "manager"',
        ),
        (
            '[[reviews]]\nname = "q"\nscope = [{ target = "nowhere" }]\n',
            "reviews[1].scope[1].target: unknown target 'nowhere'",
        ),
        ('[[reviews]]\nname = "q"\nscope = { rules = [4] }\n', "reviews[1].scope.rules: no rule 4"),
        (
            '[[reviews]]\nname = "q"\nschedule = "every day"\n',
            "reviews[1].schedule: not a cron expression",
        ),
        ('[[reviews]]\nname = "q"\non_no_decision = "maybe"\n', "reviews[1].on_no_decision"),
        (
            '[[reviews]]\nname = "q"\n[[reviews]]\nname = "q"\n',
            "reviews[2].name: duplicate campaign name",
        ),
        ('[[reviews]]\nname = "q"\nduration = "PT0S"\n', "duration must be positive"),
        (
            '[[reviews]]\nname = "q"\n[[reviews.owners]]\ntarget = "x"\nreviewers = ["manager"]\n',
            "reviews[1].owners[1].target: unknown target 'x'",
        ),
    ],
)
def test_bad_campaigns_are_named(tmp_path: Path, reviews: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, reviews)
    assert message in str(caught.value)
    result = CliRunner().invoke(
        main, ["config", "check", "--config", str(tmp_path / "jmlsync.toml")]
    )
    assert result.exit_code == 1
    assert message in result.stderr


def _item(user: str = "ann", reviewer: str | None = "boss", item_id: int = 1) -> Item:
    return Item(
        id=item_id,
        campaign="c",
        snapshot_at="2026-03-01T00:00:00.000000Z",
        target="sandbox",
        role="admin",
        privileged=True,
        user=Person(user, "Ann", True, "boss"),
        source=Source("rule", 1, "admins"),
        granted_at=None,
        reviewer=reviewer,
    )


def test_scope() -> None:
    grant = Grant("sandbox", "ann", "admin")
    rule = Source("rule", 2, "admins")
    assert ReviewScope("privileged").covers(grant, True, rule)
    assert not ReviewScope("privileged").covers(grant, False, rule)
    assert ReviewScope("all").covers(grant, False, Source("unmanaged"))
    assert ReviewScope("roles", roles=frozenset({("sandbox", None)})).covers(grant, False, rule)
    assert not ReviewScope("roles", roles=frozenset({("sandbox", "dev")})).covers(
        grant, False, rule
    )
    assert ReviewScope("rules", rules=frozenset({2})).covers(grant, False, rule)
    assert not ReviewScope("rules", rules=frozenset({2})).covers(grant, False, Source("unmanaged"))


def test_reviewers_are_tried_in_order_owners_first_never_oneself() -> None:
    person = Person("ann", manager="boss")
    groups = {"security": frozenset({"sec"}), "solo": frozenset({"ann"})}
    active = frozenset({"ann", "boss", "sec"})

    def assign(
        reviewers: list[str], owners: tuple[Owner, ...] = (), who: Person = person
    ) -> str | None:
        return assign_reviewer(
            who,
            "sandbox",
            "admin",
            owners=owners,
            reviewers=reviewers,
            active_users=active,
            groups=groups,
        )

    assert assign(["manager", "group:security"]) == "boss"
    assert assign(["manager", "group:security"], who=Person("ann")) == "group:security"
    assert assign(["manager"], who=Person("ann", manager="gone")) is None
    assert assign(["group:solo", "manager"]) == "boss"
    assert assign(["group:missing"]) is None
    assert (
        assign(["manager"], (Owner("sandbox", "admin", ("group:security",)),)) == "group:security"
    )
    assert assign(["manager"], (Owner("sandbox", None, ("group:security",)),)) == "group:security"
    assert assign(["manager"], (Owner("sandbox", "other", ("group:security",)),)) == "boss"
    assert assign(["manager"], who=Person("boss", manager="boss")) is None


def test_decision_files() -> None:
    rows = parse_decisions(
        "item_id,decision,reviewer,comment\n1,Keep,boss,fine\n\n2,revoke,sec,\n", "csv"
    )
    assert [(r.row, r.item_id, r.decision, r.reviewer) for r in rows] == [
        (2, 1, "keep", "boss"),
        (4, 2, "revoke", "sec"),
    ]
    assert (
        parse_decisions('[{"item_id": 1, "decision": "revoke", "reviewer": "boss"}]', "json")[
            0
        ].comment
        == ""
    )
    for text, kind, message in [
        ("decision,reviewer\nkeep,boss\n", "csv", "row 1: the header lacks item_id"),
        ("item_id,decision,reviewer\nx,keep,boss\n", "csv", "row 2: item_id 'x' is not a number"),
        ("item_id,decision,reviewer\n\u00b2,keep,boss\n", "csv", "row 2: item_id '\u00b2' is not"),
        ("item_id,decision,reviewer\n1,keep,\n", "csv", "row 2: missing reviewer"),
        ('item_id,decision,reviewer\n1,keep,"boss\n', "csv", "row 2: malformed CSV"),
        ("", "csv", "empty"),
        ("{}", "json", "a JSON list"),
        ("[1]", "json", "row 1: expected an object"),
        ("[", "json", "not valid JSON"),
    ]:
        with pytest.raises(DecisionError, match=message):
            parse_decisions(text, kind)  # type: ignore[arg-type]


def test_checking_decisions() -> None:
    items = {1: _item(), 2: _item("bob", "group:security", 2), 3: _item("cy", None, 3)}
    groups = {"security": frozenset({"sec", "bob"})}
    deadline = NOW + timedelta(days=1)

    def check(text: str, *, now: datetime = NOW, late: bool = False) -> None:
        rows = parse_decisions("item_id,decision,reviewer,comment\n" + text, "csv")
        check_decisions(rows, items, groups, now=now, deadline=deadline, late=late)

    check("1,keep,BOSS,\n2,revoke,sec,\n")
    for text, kind, message in [
        ("9,keep,boss,\n", UnknownItem, "row 2: unknown item_id 9"),
        ("1,keep,boss,\n2,keep,boss,\n", NotReviewer, "row 3: boss is not the reviewer of item 2"),
        # the holder, though in the group
        ("2,keep,bob,\n", NotReviewer, "row 2: bob is not the reviewer"),
        ("3,keep,boss,\n", NotReviewer, "assigned: nobody"),
        ("1,keep,boss,\n1,revoke,boss,\n", DecisionError, "row 3: item_id 1 is decided again"),
    ]:
        # The kinds let the API answer 403 or 422; the CLI catches them all as DecisionError.
        with pytest.raises(kind, match=message):
            check(text)
    rows = parse_decisions("item_id,decision,reviewer\n1,revoke,boss\n", "csv")
    with pytest.raises(DecisionError, match="row 2: ann is a protected account"):
        check_decisions(
            rows,
            items,
            groups,
            now=NOW,
            deadline=deadline,
            late=False,
            protected=frozenset({"ann"}),
        )
    with pytest.raises(PastDeadline, match="deadline"):
        check("1,keep,boss,\n", now=deadline + timedelta(seconds=1))
    check("1,keep,boss,\n", now=deadline + timedelta(seconds=1), late=True)


def test_snapshot_digest_is_stable_and_items_round_trip() -> None:
    from dataclasses import asdict

    items = [_item(), _item("bob", item_id=2)]
    assert snapshot_digest(items) == snapshot_digest(list(reversed(items)))
    assert snapshot_digest(items) != snapshot_digest(items[:1])
    assert [item_from_dict(asdict(i)) for i in items] == items


def test_exceptions_hold_until_the_path_changes() -> None:
    assert exception_holds({(1, "g")}, {(1, "g")})
    assert not exception_holds({(1, "g")}, {(1, "g"), (3, "h")})
    assert not exception_holds({(1, "g")}, set())
    rules = [
        Rule(1, "admins", (RoleGrant("sandbox", "admin"),), privileged=True),
        Rule(2, "ops", (RoleGrant("sandbox", "admin"),)),
    ]
    groups = [GroupInfo("g1", "admins"), GroupInfo("g2", "ops")]
    by_group = rules_by_group(rules, groups)
    ann = UserState("u1", "ann", True, frozenset({"g1"}))
    grant = Grant("sandbox", "ann", "admin")
    causes = grant_causes([ann], by_group)
    assert causes == {grant: frozenset({(1, "g1")})}
    desired = {grant: Reason(1, "admins", True)}
    kept, held = without_exceptions(desired, causes, {grant: frozenset({(1, "g1")})})
    assert kept == {}
    assert held == {grant}
    both = grant_causes([UserState("u1", "ann", True, frozenset({"g1", "g2"}))], by_group)
    kept, held = without_exceptions(desired, both, {grant: frozenset({(1, "g1")})})
    assert kept == desired
    assert held == frozenset()


def test_withheld_grants_are_revoked_on_any_role_and_never_granted() -> None:
    mine = Grant("sandbox", "ann", "admin")
    hand = Grant("sandbox", "mal", "console")
    inp = PlanInput(
        desired={mine: Reason(1, "admins", True)},
        actual={hand},
        managed=frozenset({("sandbox", "admin")}),
        privileged=frozenset({("sandbox", "admin")}),
        applied=frozenset(),
        users={"ann": True, "mal": True},
        leavers=frozenset(),
        principals={},
        withheld=frozenset({mine, hand}),
    )
    operations = plan(inp)
    assert [(o.action, o.user, o.role, o.reason) for o in operations] == [
        ("revoke", "mal", "console", "review")
    ]


def test_bad_requests_are_one_line(tmp_path: Path) -> None:
    _load(tmp_path, '[[reviews]]\nname = "q"\n')
    config = str(tmp_path / "jmlsync.toml")
    (tmp_path / "d.csv").write_text("item_id,decision,reviewer\n1,keep,boss\n")
    (tmp_path / "d.txt").write_text("x")
    for args, message in [
        (["review", "start", "nope"], "no campaign 'nope' in [[reviews]] (configured: q)"),
        (["review", "show", "q-1"], "no campaign 'q-1'"),
        (["review", "export", "q-1"], "no campaign 'q-1'"),
        (["review", "evidence", "q-1", "--output", str(tmp_path / "out")], "no campaign 'q-1'"),
        (["review", "decide", "q-1", "--file", str(tmp_path / "d.csv")], "no campaign 'q-1'"),
        (
            ["review", "decide", "q-1", "--file", str(tmp_path / "d.txt")],
            "expected a .csv or .json",
        ),
        (["review", "lift", "7", "--reason", "x"], "no active review exception 7"),
    ]:
        result = CliRunner().invoke(main, [*args, "--config", config])
        assert result.exit_code == 1, args
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(main, ["review", "list", "--config", config])
    assert (result.exit_code, result.stdout) == (0, "no campaigns\n")


def test_verify_evidence_refuses_what_is_not_a_bundle(tmp_path: Path) -> None:
    def verify() -> str:
        result = CliRunner().invoke(main, ["review", "verify-evidence", str(tmp_path)])
        assert result.exit_code == 1
        assert "Traceback" not in result.output
        return result.stderr

    assert "manifest.json: cannot read" in verify()
    (tmp_path / "manifest.json").write_text("[1, 2]")
    assert "not a manifest of an evidence bundle" in verify()
    (tmp_path / "manifest.json").write_text(
        '{"files": {"../../etc/passwd": {"sha256": "x"}, "summary.html": 3},'
        ' "anchors": {"bundle": 1}}'
    )
    errors = verify()
    assert "lists '../../etc/passwd', which is not a file of a bundle" in errors
    assert "snapshot.csv: not in the manifest" in errors
    assert "anchor snapshot: missing" in errors
