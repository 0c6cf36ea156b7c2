"""The pipeline: workers that lease queued principals, plan them and apply the plan.

Each job is one principal (a userName). Its plan is computed from the directory (desired)
and the targets themselves (actual, read back per target), so a job that runs twice, after a
crash or an expired lease, finds the work done and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from jmlsync.alerts import AlertSink
from jmlsync.domain.grants import Rule
from jmlsync.domain.models import Job, parse_timestamp
from jmlsync.domain.policy import desired_grants, managed_roles, privileged_roles, rules_by_group
from jmlsync.engine.apply import Applier
from jmlsync.engine.per_target import JobWork, RoleSets, run_targets
from jmlsync.ports import Queue, Store

log = logging.getLogger("jmlsync.worker")

#: Service state keys of the leaver pause.
LEAVERS_PAUSED = "leavers_paused"
LEAVERS_RESUMED_AT = "leavers_resumed_at"


@dataclass(frozen=True)
class PipelineOptions:
    """How the workers behave (``[pipeline]`` in the configuration)."""

    workers: int = 4
    max_attempts: int = 10
    retry_base: timedelta = timedelta(seconds=5)
    retry_max: timedelta = timedelta(seconds=900)
    lease: timedelta = timedelta(seconds=30)
    poll_seconds: float = 1.0
    shutdown_grace_seconds: float = 10.0
    max_leavers_per_minute: int | None = None


class JobFailed(Exception):
    """A job's plan could not be applied completely.

    ``targets`` names the targets that failed (the next attempt plans only those); empty when
    the failure is not a target's (the next attempt plans what was pending before).
    """

    def __init__(self, message: str, *, permanent: bool, targets: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.targets = tuple(targets)


class Pipeline:
    """Workers over the queue; ``run`` until ``stop``."""

    def __init__(
        self,
        store: Store,
        queue: Queue,
        applier: Applier,
        rules: Sequence[Rule],
        *,
        clock: Callable[[], datetime],
        alerts: AlertSink,
        options: PipelineOptions | None = None,
        on_cleared: Callable[[str, float], None] | None = None,
        protected: Iterable[str] = (),
    ) -> None:
        self.store = store
        self.queue = queue
        self.applier = applier
        self.rules = rules
        self.clock = clock
        self.alerts = alerts
        self.options = options or PipelineOptions()
        self.on_cleared = on_cleared or (lambda _user, _seconds: None)
        self.protected = frozenset(name.casefold() for name in protected)
        self._roles = RoleSets(managed_roles(rules), privileged_roles(rules))
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._owner = f"worker-{uuid.uuid4().hex[:8]}"
        self._in_flight: dict[int, tuple[str, Job]] = {}
        self._idle_workers = 0
        self._paused = False
        self._drained = asyncio.Event()

    def wake(self) -> None:
        """Tell idle workers that new rows may be due (called after every commit)."""
        self._wake.set()

    async def run(self) -> None:
        """Run the workers until :meth:`stop`; in-flight jobs finish within the grace time."""
        self._stopping.clear()
        recovered = await self.queue.recover()
        if recovered:
            log.warning("took back %d lease(s) left by a stopped process", recovered)
        tasks = [
            asyncio.create_task(self._work(index), name=f"jmlsync-worker-{index}")
            for index in range(self.options.workers)
        ]
        tasks.append(asyncio.create_task(self._heartbeat(), name="jmlsync-lease-heartbeat"))
        try:
            await self._stopping.wait()
            done, pending = await asyncio.wait(tasks, timeout=self.options.shutdown_grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("worker stopped with an error", exc_info=task.exception())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _heartbeat(self) -> None:
        """Renew the leases of running jobs, so only a dead process's leases expire."""
        interval = self.options.lease.total_seconds() / 3
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(interval):
                    await self._stopping.wait()
            except TimeoutError:
                pass
            jobs = dict(self._in_flight)
            for owner in {owner for owner, _ in jobs.values()}:
                ids = [job_id for job_id, (who, _) in jobs.items() if who == owner]
                await self.queue.renew(ids, owner, self.clock() + self.options.lease)

    async def wait_drained(self) -> None:
        """Return once every worker has found nothing due (the queue is worked off, except
        rows waiting for a retry or dead-lettered)."""
        self._drained.clear()
        self.wake()
        await self._drained.wait()

    def stop(self) -> None:
        """Stop taking new jobs; ``run`` returns once in-flight jobs are done or released."""
        self._stopping.set()
        self._wake.set()

    async def _work(self, index: int) -> None:
        owner = f"{self._owner}/{index}"
        while not self._stopping.is_set():
            # Cleared before looking, so a commit that lands while we look still wakes us.
            self._wake.clear()
            include_leavers = not await self._leavers_paused()
            job = await self.queue.lease(
                owner, self.clock(), self.options.lease, include_leavers=include_leavers
            )
            if job is None:
                self._idle_workers += 1
                if self._idle_workers == self.options.workers:
                    self._drained.set()
                try:
                    await self._idle()
                finally:
                    self._idle_workers -= 1
                continue
            self._drained.clear()
            self._in_flight[job.id] = (owner, job)
            try:
                await self.process(job)
            except asyncio.CancelledError:
                # Shutdown ran out of grace: give the lease back so the next start takes the
                # job at once (its operations are idempotent, so a partial run is harmless).
                await asyncio.shield(self.queue.release([job.id]))
                raise
            except Exception:
                log.exception("job %d for %s crashed; it will be retried", job.id, job.user_name)
                await self._failed(job, JobFailed("internal error", permanent=False))
            finally:
                self._in_flight.pop(job.id, None)

    async def _leavers_paused(self) -> bool:
        """Whether leaver jobs wait for an operator: tripped when more leaver events than
        ``max_leavers_per_minute`` arrive within a minute (an IdP gone wrong looks like
        that), until `jmlsync queue resume-leavers`."""
        limit = self.options.max_leavers_per_minute
        if limit is None:
            return False
        # Checked before every lease (a query on an index) so a wave is caught before its
        # first leaver is worked off; the cost is paid only when the limit is configured.
        now = self.clock()
        if await self.queue.get_state(LEAVERS_PAUSED) is not None:
            self._paused = True
            return True
        since = now - timedelta(minutes=1)
        resumed = await self.queue.get_state(LEAVERS_RESUMED_AT)
        if resumed is not None:
            since = max(since, parse_timestamp(resumed))
        count = await self.queue.leaver_events_since(since)
        self._paused = count > limit
        if self._paused:
            reason = f"{count} leavers within a minute, over the limit of {limit}"
            await self.queue.set_state(LEAVERS_PAUSED, reason)
            await self.alerts.alert(
                "leavers_paused",
                f"leaver processing paused: {reason}. Check the IdP, then run"
                " `jmlsync queue resume-leavers`.",
                count=count,
                key="leavers_paused",
            )
        return self._paused

    async def _idle(self) -> None:
        if self._stopping.is_set():
            return
        try:
            async with asyncio.timeout(self.options.poll_seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def process(self, job: Job) -> None:
        """Plan and apply the job's principal on each target independently.

        A target that cannot be read or written keeps only its own operations pending: the
        job is retried (or dead-lettered) for those targets alone, while every healthy target
        got its grants and revocations in this attempt.
        """
        if job.user_name.casefold() in self.protected:
            # A break-glass account: never changed by jmlsync; the IdP touched it, so tell.
            await self.alerts.alert(
                "protected_user",
                f"the IdP changed protected user {job.user_name} ({job.cause}); jmlsync"
                " changed nothing in any target",
                user=job.user_name,
                cause=job.cause,
            )
            await self.queue.ack(job)
            return
        work = await self._plan(job)
        if work is None:
            await self.queue.ack(job)
            return
        work = replace(work, requested_at=job.enqueued_at)
        results = await run_targets(self.applier, self._roles, work, self._targets_of(job))
        failed = [result for result in results if result.error is not None]
        if work.leaver:
            now = self.clock()
            cleared = await self.queue.record_leaver_targets(
                job.user_name,
                {result.target: result.error for result in results},
                list(self.applier.targets),
                now,
            )
            for left_at in cleared:
                self.on_cleared(job.user_name, (now - parse_timestamp(left_at)).total_seconds())
        if failed:
            await self._failed(
                job,
                JobFailed(
                    "; ".join(str(result.error) for result in failed),
                    permanent=all(result.permanent for result in failed),
                    targets=tuple(result.target for result in failed),
                ),
            )
            return
        await self.queue.ack(job)

    def _targets_of(self, job: Job) -> list[str]:
        """The targets this attempt plans: those still pending from an earlier attempt (that
        are still configured), or every target."""
        names = sorted(self.applier.targets)
        if job.pending_targets is None:
            return names
        return [name for name in names if name in job.pending_targets]

    async def _plan(self, job: Job) -> JobWork | None:
        """What the directory wants for the principal; None when no target needs asking."""
        user, groups = await self.store.policy_user(job.user_name)
        by_group = rules_by_group(self.rules, groups)
        desired = desired_grants([user] if user else [], by_group)
        applied = await self.store.applied_grants([job.user_name])
        leaver = user is None or not user.active
        if not desired and not applied and not leaver:
            # Nothing to grant and nothing of ours to take back: no need to ask the targets.
            # (Access granted by hand on a managed role is drift: full reconciliation finds it.)
            return None
        return JobWork(job.user_name, user.active if user else None, desired, applied, leaver)

    async def _failed(self, job: Job, error: JobFailed) -> None:
        attempts = job.attempts + 1
        pending = error.targets or None
        where = f" on {', '.join(error.targets)}" if error.targets else ""
        if error.permanent or attempts >= self.options.max_attempts:
            await self.queue.fail(
                job, str(error), self.clock(), retry_in=None, pending_targets=pending
            )
            await self.alerts.alert(
                "dead_letter",
                f"job for {job.user_name} dead-lettered after {attempts} attempt(s){where}:"
                f" {error}",
                user=job.user_name,
                job=job.id,
                leaver=job.leaver,
                targets=list(error.targets),
            )
            return
        delay = min(self.options.retry_base * 2 ** (attempts - 1), self.options.retry_max)
        await self.queue.fail(
            job, str(error), self.clock(), retry_in=delay, pending_targets=pending
        )
        log.warning(
            "job %d for %s failed%s (attempt %d), retrying in %.0fs: %s",
            job.id,
            job.user_name,
            where,
            attempts,
            delay.total_seconds(),
            error,
        )


def options_from(settings: Mapping[str, Any]) -> PipelineOptions:
    """PipelineOptions from the ``[pipeline]`` values."""
    return PipelineOptions(
        workers=int(settings["workers"]),
        max_attempts=int(settings["max_attempts"]),
        retry_base=timedelta(seconds=settings["retry_base_seconds"]),
        retry_max=timedelta(seconds=settings["retry_max_seconds"]),
        lease=timedelta(seconds=settings["lease_seconds"]),
        poll_seconds=float(settings["poll_seconds"]),
        shutdown_grace_seconds=float(settings["shutdown_grace_seconds"]),
        max_leavers_per_minute=(
            int(settings["max_leavers_per_minute"])
            if settings.get("max_leavers_per_minute")
            else None
        ),
    )
