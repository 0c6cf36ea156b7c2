"""Scheduled work on APScheduler 3 (the only module that imports it): full reconciliation on
a cron schedule, leaver verification on an interval, and daily housekeeping.

Each job runs at most once at a time (``max_instances=1``), missed runs coalesce into one,
and every run is recorded with its start, end, outcome and counts (see `jmlsync status`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger("jmlsync.scheduling")

#: A scheduled job: returns (outcome, counts, detail) for the run record.
Job = Callable[[], Awaitable[tuple[str, dict[str, int], str | None]]]
#: Records runs: start(job) -> id, finish(id, outcome, counts, detail).
Recorder = tuple[
    Callable[[str], Awaitable[int]],
    Callable[[int, str, dict[str, int], str | None], Awaitable[None]],
]


def check_cron(expression: str) -> None:
    """Raise ValueError when ``expression`` is not a 5-field crontab expression."""
    try:
        CronTrigger.from_crontab(expression, timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"not a cron expression ({exc})") from exc


class Scheduler:
    """Owns the APScheduler instance and the jobs registered on it."""

    def __init__(
        self, recorder: Recorder, gate: Callable[[], Awaitable[bool]] | None = None
    ) -> None:
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._start_run, self._finish_run = recorder
        self._gate = gate

    def add_cron(
        self, name: str, expression: str, job: Job, *, records_itself: bool = False
    ) -> None:
        """Run ``job`` on a crontab schedule. A job that ``records_itself`` writes its own run
        record (to commit its alerts with it); the scheduler then only logs its outcome."""
        trigger = CronTrigger.from_crontab(expression, timezone=UTC)
        self._add(name, trigger, job, records_itself)

    def add_interval(self, name: str, seconds: float, job: Job) -> None:
        self._add(name, IntervalTrigger(seconds=seconds, timezone=UTC), job, False)

    def _add(
        self,
        name: str,
        trigger: CronTrigger | IntervalTrigger,
        job: Job,
        records_itself: bool,
    ) -> None:
        async def run() -> None:
            try:
                # With several replicas only the leader runs scheduled jobs; the others skip.
                if self._gate is None or await self._gate():
                    await self.run_now(name, job, records_itself=records_itself)
            except asyncio.CancelledError:
                # Shutdown cancelled a run in progress (this is the top of its task): its
                # record stays unfinished and the next start runs the job again. Not an error.
                log.info("scheduled %s interrupted by shutdown", name)

        self._scheduler.add_job(
            run,
            trigger,
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )

    async def run_now(self, name: str, job: Job, *, records_itself: bool = False) -> str:
        """Run ``job`` once, recorded; an exception is a failed run, never a crash."""
        run_id = None if records_itself else await self._start_run(name)
        try:
            outcome, counts, detail = await job()
        except Exception as exc:
            log.exception("scheduled %s failed", name)
            outcome, counts, detail = "failed", {}, f"{type(exc).__name__}: {exc}"
        if run_id is not None:
            await self._finish_run(run_id, outcome, counts, detail)
        log.info(
            "scheduled %s: %s",
            name,
            outcome,
            extra={"fields": {"job": name, "outcome": outcome, **counts}},
        )
        return outcome

    def start(self) -> None:
        self._scheduler.start()

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def next_runs(self) -> dict[str, datetime | None]:
        return {job.id: job.next_run_time for job in self._scheduler.get_jobs()}
