"""Supervised workers: store errors while leasing, renewing or settling a job never end a
worker; the outage is logged once and its end once; no job is lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jmlsync.clock import now_utc
from jmlsync.config import load_settings
from jmlsync.domain.errors import StoreUnavailable
from jmlsync.engine.apply import Applier
from jmlsync.engine.retry import RetryPolicy
from jmlsync.engine.supervision import store_outage
from jmlsync.engine.worker import Pipeline, PipelineOptions
from jmlsync.policy_config import rules_from_settings
from jmlsync.runtime import open_runtime
from tests.conftest import write_config
from tests.fakes import FlakyLedgerFake, RecordingAlerts
from tests.service.test_pipeline import PIPELINE
from tests.service.test_pipeline_failures import Rig

WORKERS = 3


class StoreOutageFake:
    """The real queue behind a fault injector: while ``down``, the calls named in
    ``failing`` raise StoreUnavailable, as both backends do when the store refuses writes."""

    def __init__(self, queue: Any, failing: set[str]) -> None:
        self._queue = queue
        self.failing = failing
        self.down = False
        self.failures = 0
        self.enough = asyncio.Event()
        self.enough_after = 1
        self.error: Exception = StoreUnavailable("SQLite: database or disk is full (injected)")

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._queue, name)
        # "lease" covers lease_batch, "ack" ack_batch: the batch forms of the same calls.
        if name not in self.failing and name.removesuffix("_batch") not in self.failing:
            return method

        async def maybe_fail(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.failures += 1
                if self.failures >= self.enough_after:
                    self.enough.set()
                raise type(self.error)(*self.error.args)  # a new one, as the backends do
            return await method(*args, **kwargs)

        return maybe_fail


async def _no_sleep(_seconds: float) -> None:
    return None


@pytest.fixture
async def outage_rig(store_url: str, tmp_path: Path) -> AsyncIterator[tuple[Rig, StoreOutageFake]]:
    settings = load_settings(write_config(tmp_path, extra=PIPELINE, store_url=store_url))
    async with open_runtime(settings) as runtime:
        flaky = FlakyLedgerFake(runtime.targets["sandbox"])
        outage = StoreOutageFake(runtime.queue, {"lease", "ack", "renew", "release", "fail"})
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
            outage,
            applier,
            rules_from_settings(settings),
            clock=now_utc,
            alerts=alerts,
            options=PipelineOptions(
                workers=WORKERS,
                retry_base=timedelta(0),
                poll_seconds=0.05,
                outage_initial_wait=0,
                outage_max_wait=0,
            ),
        )
        yield Rig(tmp_path / "jmlsync.toml", runtime, flaky, pipeline, alerts), outage


def _outage_lines(caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    messages = [r.getMessage() for r in caplog.records if r.name == "jmlsync.worker"]
    started = [m for m in messages if m.startswith("workers cannot use the store")]
    ended = [m for m in messages if m.startswith("workers use the store again")]
    return started, ended


def _worker_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("jmlsync-worker-")]


@pytest.mark.timeout(30)
async def test_workers_survive_many_store_errors_and_log_the_outage_once(
    outage_rig: tuple[Rig, StoreOutageFake], caplog: pytest.LogCaptureFixture
) -> None:
    rig, outage = outage_rig
    caplog.set_level(logging.INFO)
    outage.down = True
    outage.enough_after = 200
    await rig.join("ann@x.io")
    task = asyncio.create_task(rig.pipeline.run())
    await outage.enough.wait()
    alive = [t for t in _worker_tasks() if not t.done()]
    assert len(alive) == WORKERS, "a worker ended during the outage"
    health = rig.pipeline.health
    assert health.since is not None
    assert "disk is full" in (health.error or "")
    assert await rig.flaky.ledger.grants_of("ann@x.io") == frozenset()

    outage.down = False
    await rig.pipeline.wait_drained()
    assert await rig.flaky.ledger.grants_of("ann@x.io") == {"developer"}
    assert await rig.runtime.queue.rows() == []
    assert rig.pipeline.health.since is None
    started, ended = _outage_lines(caplog)
    assert len(started) == 1, started
    assert len(ended) == 1, ended
    assert f"{outage.failures} failed attempt" in ended[0]
    rig.pipeline.stop()
    await task


@pytest.mark.timeout(30)
async def test_a_job_whose_ack_cannot_be_written_runs_again_and_is_not_lost(
    outage_rig: tuple[Rig, StoreOutageFake], caplog: pytest.LogCaptureFixture
) -> None:
    rig, outage = outage_rig
    caplog.set_level(logging.INFO)
    outage.failing = {"ack", "release"}
    outage.down = True
    outage.enough_after = 50
    await rig.join("bob@x.io")
    task = asyncio.create_task(rig.pipeline.run())
    # The grant lands on the target; then the ack and the release of its lease fail.
    await outage.enough.wait()
    assert await rig.flaky.ledger.grants_of("bob@x.io") == {"developer"}
    (row,) = await rig.runtime.queue.rows()
    assert row.leased_until is not None, "the job must stay leased, not be dropped"
    outage.down = False
    await rig.pipeline.wait_drained()
    assert await rig.runtime.queue.rows() == []
    assert rig.flaky.calls.get("grant") == 1, "the grant was applied twice"
    started, ended = _outage_lines(caplog)
    # Fifty failed acks are not fifty log lines: the outage is logged when it starts and
    # when a store call succeeds again. A worker's lease may succeed between two failing
    # acks (leases are not failing here), which ends one outage and lets the next start.
    assert len(started) == len(ended)
    assert 1 <= len(started) <= 3, started
    rig.pipeline.stop()
    await task


@pytest.mark.timeout(30)
async def test_an_unexpected_error_while_leasing_does_not_shrink_the_pool(
    outage_rig: tuple[Rig, StoreOutageFake], caplog: pytest.LogCaptureFixture
) -> None:
    rig, outage = outage_rig
    caplog.set_level(logging.INFO)
    outage.failing = {"lease"}
    outage.error = RuntimeError("a bug")
    outage.down = True
    outage.enough_after = 100
    await rig.join("cat@x.io")
    task = asyncio.create_task(rig.pipeline.run())
    await outage.enough.wait()
    assert len([t for t in _worker_tasks() if not t.done()]) == WORKERS
    outage.down = False
    await rig.pipeline.wait_drained()
    assert await rig.flaky.ledger.grants_of("cat@x.io") == {"developer"}
    errors = [r for r in caplog.records if r.getMessage().startswith("workers hit an unexpected")]
    assert len(errors) == 1
    assert errors[0].exc_info is not None, "the first unexpected error carries its traceback"
    rig.pipeline.stop()
    await task


@pytest.mark.timeout(30)
async def test_a_loop_that_ends_unexpectedly_is_started_again(
    outage_rig: tuple[Rig, StoreOutageFake], caplog: pytest.LogCaptureFixture
) -> None:
    rig, _outage = outage_rig
    caplog.set_level(logging.INFO)
    heartbeat = rig.pipeline._heartbeat
    runs = 0
    restarted = asyncio.Event()

    async def heartbeat_with_a_bug() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("a bug outside the loop's own guard")
        restarted.set()
        await heartbeat()

    rig.pipeline._heartbeat = heartbeat_with_a_bug  # type: ignore[method-assign]
    task = asyncio.create_task(rig.pipeline.run())
    await restarted.wait()
    await rig.join("cat@x.io")
    await rig.pipeline.wait_drained()
    assert await rig.flaky.ledger.grants_of("cat@x.io") == {"developer"}
    lines = [
        r for r in caplog.records if r.getMessage().endswith("ended unexpectedly; restarting it")
    ]
    assert [r.getMessage() for r in lines] == [
        "jmlsync-lease-heartbeat ended unexpectedly; restarting it"
    ]
    assert lines[0].exc_info is not None
    rig.pipeline.stop()
    await task
    assert not [t for t in _worker_tasks() if not t.done()], "no worker outlives the pool"


def test_a_store_outage_is_found_inside_a_task_groups_exception_group() -> None:
    outage = StoreUnavailable("PostgreSQL: connection lost")
    nested = ExceptionGroup("lanes", [ValueError("other"), ExceptionGroup("inner", [outage])])
    assert store_outage(nested) is outage
    assert store_outage(ExceptionGroup("lanes", [ValueError("other")])) is None
    assert store_outage(RuntimeError("a bug")) is None


def test_the_backoff_is_capped_however_long_the_outage(
    outage_rig: tuple[Rig, StoreOutageFake],
) -> None:
    rig, _ = outage_rig
    rig.pipeline.options = PipelineOptions(outage_initial_wait=0.1, outage_max_wait=2.0)
    waits = [rig.pipeline._backoff(n) for n in (1, 2, 3, 10, 5000)]
    assert waits == [0.1, 0.2, 0.4, 2.0, 2.0]
