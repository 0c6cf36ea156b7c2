"""Failures in the pipeline: retries, dead letters and re-drive, and the audit chain's guard."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from jmlsync.clock import now_utc
from jmlsync.config import load_settings
from jmlsync.domain.directory import Change, Member, MemberOp
from jmlsync.engine.apply import Applier
from jmlsync.engine.retry import RetryPolicy
from jmlsync.engine.worker import Pipeline, PipelineOptions
from jmlsync.policy_config import rules_from_settings
from jmlsync.runtime import open_runtime
from tests.conftest import write_config
from tests.fakes import FlakyLedgerFake, RecordingAlerts
from tests.service.test_pipeline import PIPELINE

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


async def _no_sleep(_seconds: float) -> None:
    return None


@dataclass
class Rig:
    config: Path
    runtime: Any
    flaky: FlakyLedgerFake
    pipeline: Pipeline
    alerts: RecordingAlerts

    async def join(self, name: str) -> None:
        store = self.runtime.store
        created = await store.create(
            "User", Change({"schemas": [USER], "userName": name, "active": True}), now_utc()
        )
        groups = await store.list_groups()
        add = MemberOp("add", items=(Member(created.id),))
        if groups:
            await store.update("Group", groups[0].id, lambda c: Change(c.doc, (add,)), now_utc())
        else:
            doc = {"schemas": [GROUP], "displayName": "engineering"}
            await store.create("Group", Change(doc, (add,)), now_utc())

    async def run_until_drained(self) -> None:
        task = asyncio.create_task(self.pipeline.run())
        await self.pipeline.wait_drained()
        self.pipeline.stop()
        await task


@pytest.fixture
async def rig(store_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    config = write_config(tmp_path, extra=PIPELINE, store_url=store_url)
    settings = load_settings(config)
    async with open_runtime(settings) as runtime:
        flaky = FlakyLedgerFake(runtime.targets["sandbox"])
        applier = Applier(
            runtime.store,
            runtime.queue,
            {"sandbox": flaky},
            clock=now_utc,
            retry=RetryPolicy(attempts=3, sleep=_no_sleep),
        )
        alerts = RecordingAlerts()
        pipeline = Pipeline(
            runtime.store,
            runtime.queue,
            applier,
            rules_from_settings(settings),
            clock=now_utc,
            alerts=alerts,
            options=PipelineOptions(
                workers=2, max_attempts=3, retry_base=timedelta(0), poll_seconds=0.05
            ),
        )
        yield Rig(config, runtime, flaky, pipeline, alerts)


async def cli(config: Path, *args: str) -> tuple[int, str, str]:
    """The real command, in a thread: it runs its own event loop, as it does from a shell."""

    def invoke() -> tuple[int, str, str]:
        result = CliRunner().invoke(main, [*args, "--config", str(config)])
        return result.exit_code, result.stdout, result.stderr

    return await asyncio.to_thread(invoke)


async def test_transient_errors_are_retried_within_the_job(rig: Rig) -> None:
    rig.flaky.fail_next = 2
    await rig.join("ann@x.io")
    await rig.run_until_drained()
    assert await rig.flaky.ledger.grants_of("ann@x.io") == {"developer"}
    assert rig.flaky.calls["grant"] == 3
    assert await rig.runtime.queue.rows() == []
    assert rig.alerts.sent == []


async def test_a_job_that_keeps_failing_is_dead_lettered_then_redriven(rig: Rig) -> None:
    rig.flaky.fail_next = 9  # three jobs x three calls each
    await rig.join("bob@x.io")
    await rig.run_until_drained()
    (dead,) = await rig.runtime.queue.rows(failed_only=True)
    assert dead.user_name == "bob@x.io", dead
    assert dead.attempts == 3, dead
    assert "throttled" in (dead.last_error or "")
    (alert,) = rig.alerts.sent
    assert alert[0] == "dead_letter"
    assert "bob@x.io" in alert[1]
    code, out, _ = await cli(rig.config, "queue", "list", "--failed")
    assert code == 0
    assert "bob@x.io" in out
    assert "dead" in out
    code, out, _ = await cli(rig.config, "queue", "retry", str(dead.id))
    assert (code, out.strip()) == (0, "1 job(s) due again")
    await rig.run_until_drained()
    assert await rig.flaky.ledger.grants_of("bob@x.io") == {"developer"}
    assert await rig.runtime.queue.rows() == []


async def test_permanent_errors_dead_letter_at_once(rig: Rig) -> None:
    rig.flaky.fail_next = 1
    rig.flaky.permanent = True
    await rig.join("cat@x.io")
    await rig.run_until_drained()
    (dead,) = await rig.runtime.queue.rows(failed_only=True)
    assert dead.attempts == 1
    assert rig.flaky.calls["grant"] == 1
    code, out, _ = await cli(rig.config, "queue", "retry", "--all-failed")
    assert code == 0
    assert out.strip() == "1 job(s) due again"


async def test_queue_retry_needs_an_id_or_all(rig: Rig) -> None:
    code, _, err = await cli(rig.config, "queue", "retry")
    assert code == 64  # a usage error (EX_USAGE)
    assert "--all-failed" in err
    code, _, err = await cli(rig.config, "queue", "retry", "999")
    assert code == 1
    assert "not a dead letter" in err


async def tamper(rig: Rig, sql: str) -> Any:
    """Run ``sql`` on the store behind jmlsync's back, as an attacker with file or database
    access would: the first column of the first row it returns, if any."""
    store = load_settings(rig.config).store
    if store.is_postgres:
        conn = await asyncpg.connect(store.url)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()
    with sqlite3.connect(rig.config.parent / "state" / "jmlsync.db") as db:
        row = db.execute(sql).fetchone()
    return row[0] if row else None


async def test_audit_verify_detects_edits_and_deletions(rig: Rig) -> None:
    for name in ("dee@x.io", "eli@x.io"):
        await rig.join(name)
    await rig.run_until_drained()
    code, out, _ = await cli(rig.config, "audit", "verify")
    assert code == 0, out
    assert "intact" in out
    code, out, _ = await cli(rig.config, "audit", "tail", "-n", "3", "--format", "json")
    assert code == 0
    assert len(out.strip().splitlines()) == 3
    await tamper(rig, "UPDATE audit SET detail = 'nothing to see' WHERE seq = 2")
    code, _, err = await cli(rig.config, "audit", "verify")
    assert code == 1
    assert "row 2" in err
    original = await tamper(rig, "SELECT prev_hash FROM audit WHERE seq = 3")
    await tamper(rig, "DELETE FROM audit WHERE seq = 2")
    code, _, err = await cli(rig.config, "audit", "verify")
    assert code == 1
    assert "missing" in err
    assert original


async def test_audit_verify_detects_a_truncated_tail(rig: Rig) -> None:
    await rig.join("fay@x.io")
    await rig.run_until_drained()
    await tamper(rig, "DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)")
    code, _, err = await cli(rig.config, "audit", "verify")
    assert code == 1
    assert "head" in err


async def test_shutdown_gives_back_the_lease_of_a_stuck_job(rig: Rig) -> None:
    rig.flaky.hang = asyncio.Event()
    rig.pipeline.options = PipelineOptions(
        workers=1, shutdown_grace_seconds=0.05, poll_seconds=0.05
    )
    task = asyncio.create_task(rig.pipeline.run())
    await rig.join("gil@x.io")
    await rig.flaky.entered.wait()
    (row,) = await rig.runtime.queue.rows()
    assert row.leased_until is not None
    rig.pipeline.stop()
    await task
    (row,) = await rig.runtime.queue.rows()
    assert row.leased_until is None
    assert row.attempts == 0
