"""`jmlsync reconcile`, `explain` and `config` against a real store and a real ledger."""

from __future__ import annotations

import asyncio
import gc
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from jmlsync.config import load_settings
from jmlsync.domain.access import PrincipalSpec
from jmlsync.domain.directory import Change, Member, MemberOp
from jmlsync.engine.reconcile import collector_paused
from jmlsync.store.directory import SqlStore
from jmlsync.targets.ledger import LedgerTarget

RULES = """
[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[targets.other]
kind = "ledger"
path = "other.db"

[[rules]]
group = "engineering"
grants = [{ target = "sandbox", role = "developer" }, { target = "other", role = "reader" }]

[[rules]]
group = "cloud-admins"
privileged = true
grants = [{ target = "sandbox", role = "admin" }]

[[rules]]
group = "engineering"
user_filter = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "SRE"'
grants = [{ target = "sandbox", role = "oncall" }]
"""

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class World:
    """A configuration, its store and ledgers, driven synchronously from tests."""

    config: Path
    ids: dict[str, str]

    def run(self, *args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, [*args, "--config", str(self.config)])
        return result.exit_code, result.stdout, result.stderr

    def plan(self, *args: str) -> tuple[int, dict[str, Any]]:
        code, out, err = self.run("reconcile", "--format", "json", *args)
        assert code in (0, 2, 3), err
        return code, json.loads(out)

    def store(self, action: Any) -> Any:
        async def go() -> Any:
            settings = load_settings(self.config)
            store = await SqlStore.open(settings.store.sqlite_path)
            try:
                return await action(store)
            finally:
                await store.close()

        return asyncio.run(go())

    def ledger(self, action: Any, name: str = "ledger.db") -> Any:
        async def go() -> Any:
            ledger = await LedgerTarget.open("sandbox", self.config.parent / name)
            try:
                return await action(ledger)
            finally:
                await ledger.close()

        return asyncio.run(go())

    def set_active(self, user: str, active: bool) -> None:
        def mutate(current: Any) -> Change:
            return Change(doc={**current.doc, "active": active})

        self.store(lambda s: s.update("User", self.ids[user], mutate, NOW))

    def leave_group(self, user: str, group: str) -> None:
        op = MemberOp("remove", ids=frozenset({self.ids[user]}))

        def mutate(current: Any) -> Change:
            return Change(doc=current.doc, members=(op,))

        self.store(lambda s: s.update("Group", self.ids[group], mutate, NOW))


def _user(name: str, department: str | None = None) -> Change:
    doc: dict[str, Any] = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "active": True,
        "displayName": name.split("@")[0].title(),
        "emails": [{"value": name, "type": "work", "primary": True}],
    }
    if department:
        doc[ENTERPRISE] = {"department": department}
    return Change(doc=doc)


@pytest.fixture
def world(tmp_path: Path) -> World:
    config = tmp_path / "jmlsync.toml"
    config.write_text(f'[store]\nurl = "sqlite:///jmlsync.db"\n{RULES}')
    (tmp_path / "tokens").write_text("x" * 32)
    (tmp_path / "tokens").chmod(0o600)
    ids: dict[str, str] = {}
    world = World(config, ids)

    async def populate(store: SqlStore) -> None:
        for name, dept in (("alice@x.io", "SRE"), ("bob@x.io", None), ("carol@x.io", None)):
            ids[name] = (await store.create("User", _user(name, dept), NOW)).id
        for group, members in (
            ("Engineering", ["alice@x.io", "bob@x.io"]),
            ("cloud-admins", ["carol@x.io"]),
            ("marketing", ["bob@x.io"]),
        ):
            items = tuple(Member(ids[m]) for m in members)
            change = Change(
                doc={
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": group,
                },
                members=(MemberOp("replace", items=items),),
            )
            ids[group] = (await store.create("Group", change, NOW)).id

    world.store(populate)
    return world


def ops(document: dict[str, Any]) -> list[tuple[str, str, str, str | None]]:
    return [(o["action"], o["target"], o["user"], o["role"]) for o in document["operations"]]


def test_dry_run_shows_joiners_and_changes_nothing(world: World) -> None:
    code, document = world.plan("--dry-run", "--detailed-exitcode")
    assert code == 2
    assert document["dry_run"] is True
    assert ops(document) == [
        ("grant", "other", "alice@x.io", "reader"),
        ("grant", "other", "bob@x.io", "reader"),
        ("grant", "sandbox", "alice@x.io", "developer"),
        ("grant", "sandbox", "alice@x.io", "oncall"),
        ("grant", "sandbox", "bob@x.io", "developer"),
        ("grant", "sandbox", "carol@x.io", "admin"),
    ]
    admin = next(o for o in document["operations"] if o["role"] == "admin")
    assert admin["privileged"] is True
    assert admin["reason"] == "rule 2: group cloud-admins"
    assert document["summary"]["grant"] == 6
    assert [(d["kind"], d["target"], d["user"], d["role"]) for d in document["drift"]] == [
        ("missing", *op[1:]) for op in ops(document)
    ]
    assert all(d["first_seen"].endswith("Z") for d in document["drift"])
    assert world.ledger(lambda led: led.write_count()) == 0


def test_apply_then_nothing_to_do(world: World) -> None:
    code, document = world.plan()
    assert code == 0
    assert {o["outcome"] for o in document["operations"]} == {"applied"}
    assert world.ledger(lambda led: led.grants_of("alice@x.io")) == {"developer", "oncall"}
    code, document = world.plan("--dry-run", "--detailed-exitcode")
    assert (code, document["operations"]) == (0, [])
    code, out, _ = world.run("reconcile", "--dry-run")
    assert "Nothing to do" in out


def test_leaver_loses_everything_and_is_disabled(world: World) -> None:
    world.plan()
    world.set_active("alice@x.io", False)
    _, document = world.plan("--dry-run")
    assert ops(document) == [
        ("revoke", "other", "alice@x.io", "reader"),
        ("revoke", "sandbox", "alice@x.io", "developer"),
        ("revoke", "sandbox", "alice@x.io", "oncall"),
        ("disable", "other", "alice@x.io", None),
        ("disable", "sandbox", "alice@x.io", None),
    ]
    assert {o["reason"] for o in document["operations"]} == {"leaver"}
    world.plan()
    assert world.ledger(lambda led: led.grants_of("alice@x.io")) == frozenset()
    principal = world.ledger(lambda led: led.principal("alice@x.io"))
    assert principal is not None
    assert principal.enabled is False
    world.set_active("alice@x.io", True)
    _, document = world.plan()
    assert ("grant", "sandbox", "alice@x.io", "developer") in ops(document)
    principal = world.ledger(lambda led: led.principal("alice@x.io"))
    assert principal is not None
    assert principal.enabled is True


def test_mover_and_user_filter(world: World) -> None:
    world.plan()
    world.leave_group("alice@x.io", "Engineering")
    _, document = world.plan("--dry-run")
    assert ops(document) == [
        ("revoke", "other", "alice@x.io", "reader"),
        ("revoke", "sandbox", "alice@x.io", "developer"),
        ("revoke", "sandbox", "alice@x.io", "oncall"),
    ]
    assert {o["reason"] for o in document["operations"]} == {"mover"}


def test_unmanaged_grants_are_never_touched(world: World) -> None:
    async def hand_made(ledger: LedgerTarget) -> None:
        await ledger.ensure_principal(PrincipalSpec(user="bob@x.io"))
        await ledger.grant("bob@x.io", "break-glass")

    world.ledger(hand_made)
    world.plan()
    world.set_active("bob@x.io", False)
    _, document = world.plan()
    assert ("revoke", "sandbox", "bob@x.io", "break-glass") not in ops(document)
    assert world.ledger(lambda led: led.grants_of("bob@x.io")) == {"break-glass"}


def test_removed_rule_revokes_what_jmlsync_granted(world: World) -> None:
    world.plan()
    text = world.config.read_text()
    world.config.write_text(text.replace('role = "admin"', 'role = "auditor"'))
    _, document = world.plan("--dry-run")
    assert ops(document) == [
        ("revoke", "sandbox", "carol@x.io", "admin"),
        ("grant", "sandbox", "carol@x.io", "auditor"),
    ]
    assert document["operations"][0]["reason"] == "no rule"


def test_guard_holds_mass_revocation(world: World) -> None:
    world.plan()
    for user in ("alice@x.io", "bob@x.io"):
        world.set_active(user, False)
    code, _, err = world.run("reconcile", "--max-revocations", "2")
    assert code == 3
    assert "revokes 5 grants" in err
    assert "--max-revocations 5" in err
    assert world.ledger(lambda led: led.grants_of("alice@x.io")) == {"developer", "oncall"}
    code, document = world.plan("--max-revocations", "5")
    assert code == 0
    assert document["summary"]["revoke"] == 5


def test_scope_by_target_and_user(world: World) -> None:
    _, document = world.plan("--dry-run", "--target", "other")
    assert {o["target"] for o in document["operations"]} == {"other"}
    _, document = world.plan("--dry-run", "--user", "ALICE@x.io")
    assert {o["user"] for o in document["operations"]} == {"alice@x.io"}
    assert len(document["operations"]) == 3
    code, _, err = world.run("reconcile", "--target", "nope")
    assert code == 1
    assert "unknown target nope" in err


def test_table_output_groups_by_target_and_marks_privileged(world: World) -> None:
    code, out, _ = world.run("reconcile", "--dry-run")
    assert code == 0
    assert "Plan: 6 to grant, 0 to revoke, 0 to disable (dry run, nothing changed)" in out
    assert "target other" in out
    assert "target sandbox" in out
    admin = next(line for line in out.splitlines() if "admin" in line)
    assert "[privileged]" in admin
    assert "rule 2: group cloud-admins" in admin


def test_explain(world: World) -> None:
    world.plan("--target", "sandbox")
    code, out, _ = world.run("explain", "--user", "alice@x.io", "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["active"] is True
    assert document["groups"] == ["Engineering"]
    desired = {(d["target"], d["role"]): d["reasons"] for d in document["desired"]}
    assert desired[("sandbox", "oncall")] == [
        {"rule": 3, "group": "Engineering", "privileged": False}
    ]
    assert {(a["target"], a["role"]) for a in document["actual"]} == {
        ("sandbox", "developer"),
        ("sandbox", "oncall"),
    }
    assert ops(document) == [("grant", "other", "alice@x.io", "reader")]
    code, out, _ = world.run("explain", "--user", "alice@x.io")
    assert "rule 1: group Engineering" in out
    assert "+ grant" in out


def test_config_check_and_schema(world: World) -> None:
    code, out, err = world.run("config", "check")
    assert code == 0
    assert "targets (2)" in out
    assert "[2] group 'cloud-admins' -> sandbox:admin [privileged]" in out
    assert err == ""
    world.config.write_text(
        world.config.read_text()
        + '\n[[rules]]\ngroup = "ghosts"\ngrants = [{ target = "sandbox", role = "x" }]\n'
    )
    code, _, err = world.run("config", "check")
    assert code == 0
    assert "rules[4]: no group with displayName 'ghosts'" in err
    world.config.write_text(
        world.config.read_text().replace('target = "other"', 'target = "nowhere"')
    )
    code, _, err = world.run("config", "check")
    assert code == 1
    assert "rules[1].grants[2].target: unknown target 'nowhere'" in err
    result = CliRunner().invoke(main, ["config", "schema"])
    schema = json.loads(result.stdout)
    assert "targets" in schema["properties"]
    assert "rules" in schema["properties"]


def test_drift_keeps_its_first_sighting_and_finds_hand_made_grants(world: World) -> None:
    _, first = world.plan("--dry-run", "--record-drift")
    _, second = world.plan("--dry-run")
    assert [d["first_seen"] for d in second["drift"]] == [d["first_seen"] for d in first["drift"]]
    world.plan()

    async def by_hand(ledger: LedgerTarget) -> None:
        await ledger.grant("bob@x.io", "admin")

    world.ledger(by_hand)
    _, document = world.plan("--dry-run")
    assert [(d["kind"], d["user"], d["role"]) for d in document["drift"]] == [
        ("unmanaged", "bob@x.io", "admin")
    ]
    _, out, _ = world.run("reconcile", "--dry-run")
    # Table columns are two spaces apart when piped.
    assert "  unmanaged  sandbox  bob@x.io  admin  (first seen " in out


def test_a_plain_dry_run_records_no_drift(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """A preview: the findings are listed (their first sighting is now, as none is open) and
    counted as new, but nothing is recorded or alerted; a later run records them."""
    world.plan()

    async def by_hand(ledger: LedgerTarget) -> None:
        await ledger.grant("bob@x.io", "admin")

    world.ledger(by_hand)
    caplog.clear()
    _, document = world.plan("--dry-run")
    assert [(d["kind"], d["user"], d["role"]) for d in document["drift"]] == [
        ("unmanaged", "bob@x.io", "admin")
    ]
    assert not [m for m in caplog.messages if "ALERT" in m]
    _, out, _ = world.run("status", "--format", "json")
    status = json.loads(out)
    assert status["runs"]["reconcile"]["counts"]["new_findings"] == 1
    assert status["drift"]["unmanaged"] == 0, status["drift"]
    _, recorded = world.plan("--dry-run", "--record-drift")
    assert any(m.startswith("ALERT unmanaged_drift: bob@x.io") for m in caplog.messages)
    _, out, _ = world.run("status", "--format", "json")
    assert json.loads(out)["drift"]["unmanaged"] == 1
    _, again = world.plan("--dry-run")
    assert again["drift"][0]["first_seen"] == recorded["drift"][0]["first_seen"]
    _, out, _ = world.run("status", "--format", "json")
    assert json.loads(out)["runs"]["reconcile"]["counts"]["new_findings"] == 0


def test_guard_defaults_to_the_configured_limit(world: World) -> None:
    world.config.write_text(world.config.read_text() + "\n[reconcile]\nmax_revocations = 1\n")
    world.plan()
    world.set_active("alice@x.io", False)
    code, _, err = world.run("reconcile")
    assert code == 3
    assert "more than the limit of 1" in err


def test_the_cli_run_is_the_scheduled_run(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Drift alerts, the run record and movers' revocations, as the scheduled run has them."""
    world.plan()

    async def by_hand(ledger: LedgerTarget) -> None:
        await ledger.grant("bob@x.io", "admin")

    world.ledger(by_hand)
    caplog.clear()
    code, out, err = world.run("reconcile", "--dry-run", "--record-drift")
    assert code == 0, err
    assert any(
        m.startswith("ALERT unmanaged_drift: bob@x.io holds admin on sandbox")
        for m in caplog.messages
    )
    caplog.clear()
    world.run("reconcile", "--dry-run", "--record-drift")
    assert not [m for m in caplog.messages if "ALERT" in m]  # alerted when first found
    code, out, _ = world.run("status", "--format", "json")
    run = json.loads(out)["runs"]["reconcile"]
    assert (run["outcome"], run["counts"]["unmanaged"], run["counts"]["new_findings"]) == (
        "ok",
        1,
        0,
    )
    world.leave_group("alice@x.io", "Engineering")
    code, document = world.plan()
    assert ("revoke", "sandbox", "alice@x.io", "developer") in ops(document)
    code, out, _ = world.run("sla-report", "--since", "2025-12-01", "--format", "json")
    movers = json.loads(out)["movers"]["revocations"]
    assert {(m["user"], m["role"], m["actor"]) for m in movers} == {
        ("alice@x.io", "developer", "reconcile"),
        ("alice@x.io", "reader", "reconcile"),
        ("alice@x.io", "oncall", "reconcile"),
    }
    # The change is still queued (no service ran): measured from its commit.
    assert {m["requested_at"] for m in movers} == {"2026-01-01T00:00:00.000000Z"}


def test_the_collector_is_paused_only_while_a_run_lasts(world: World) -> None:
    """The command pauses Python's cyclic collector for its run and gives it back, on an
    error too (the command runs in this process here, as a caller embedding it would)."""
    assert gc.isenabled()
    seen: list[bool] = []
    with collector_paused():
        seen.append(gc.isenabled())
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("inside")
    assert seen == [False]
    assert gc.isenabled()
    world.plan("--dry-run")
    assert gc.isenabled()
    code, _, _ = world.run("reconcile", "--target", "nowhere")
    assert code == 1
    assert gc.isenabled()
