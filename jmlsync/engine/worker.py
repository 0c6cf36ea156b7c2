"""The pipeline: workers that lease queued principals, plan them and apply the plan.

Each job is one principal (a userName). Its plan is computed from the directory (desired)
and the targets themselves (actual, read back per target), so a job that runs twice, after a
crash or an expired lease, finds the work done and changes nothing.

Workers are supervised: an error of the store (disk full, database gone) or any unexpected
error while leasing, renewing or settling a job never ends a worker. The outage is logged
once when it starts and once when it ends, the workers retry with a capped backoff, and a job
whose outcome could not be written gives its lease back (or lets it expire) so it runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from jmlsync.domain.access import Rule
from jmlsync.domain.directory import Job, parse_timestamp
from jmlsync.domain.policy import (
    managed_roles,
    privileged_roles,
)
from jmlsync.engine.alerting import stage_alert
from jmlsync.engine.apply import Applier
from jmlsync.engine.job_plans import JobPlanner
from jmlsync.engine.per_target import JobWork, RoleSets, TargetResult, run_batch
from jmlsync.engine.supervision import Outage, OwnerLock, PipelineHealth, store_outage
from jmlsync.engine.timebound import TimeboundAccess
from jmlsync.ports import AlertSink, Clock, PipelineQueue, PlanningStore, ReviewHolds

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
    #: How many due rows a worker leases, plans and applies together (one lease, one
    #: transaction per target that supports it, one ack).
    batch_size: int = 32
    #: Workers that take only leavers, so a burst of joiners and movers never delays a
    #: leaver (at most ``workers - 1``: one worker at least takes everything).
    leaver_workers: int = 1
    #: While the store refuses the workers: the first wait between attempts, doubling up
    #: to the second (tests set both to 0).
    outage_initial_wait: float = 0.1
    outage_max_wait: float = 2.0


class JobFailed(Exception):
    """A job's plan could not be applied completely.

    ``targets`` names the targets that failed (the next attempt plans only those); empty when
    the failure is not a target's (the next attempt plans what was pending before).
    """

    def __init__(self, message: str, *, permanent: bool, targets: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.targets = tuple(targets)


class _ReaderBehind(Exception):
    """The store's reader does not yet see the leased rows (see ``Pipeline._caught_up``)."""


class Pipeline:
    """Workers over the queue; ``run`` until ``stop``."""

    def __init__(
        self,
        store: PlanningStore,
        queue: PipelineQueue,
        applier: Applier,
        rules: Sequence[Rule],
        *,
        clock: Clock,
        alerts: AlertSink,
        options: PipelineOptions | None = None,
        on_cleared: Callable[[str, float], None] | None = None,
        protected: Iterable[str] = (),
        reviews: ReviewHolds | None = None,
        timebound: TimeboundAccess | None = None,
    ) -> None:
        self.timebound = timebound
        self.queue = queue
        self.applier = applier
        self.clock = clock
        self.alerts = alerts
        self.options = options or PipelineOptions()
        self.on_cleared = on_cleared or (lambda _user, _seconds: None)
        self.planner = JobPlanner(store, rules, clock=clock, reviews=reviews, timebound=timebound)
        self.protected = frozenset(name.casefold() for name in protected)
        extra = timebound.roles if timebound else frozenset()
        extra_privileged = timebound.privileged if timebound else frozenset()
        self._roles = RoleSets(
            managed_roles(rules) | extra, privileged_roles(rules) | extra_privileged
        )
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        #: Names this process in its leases' owner, and in its OwnerLock on PostgreSQL.
        self.owner_key = secrets.randbelow(2**31)
        self._owner = f"worker-{self.owner_key:08x}"
        self._owner_lock: OwnerLock | None = None
        self._outage = Outage(clock)
        self._in_flight: dict[int, tuple[str, Job]] = {}
        #: When each in-flight job's lease ends, as far as this process last wrote it.
        self._lease_until: dict[int, datetime] = {}
        self._idle_workers = 0
        self._paused = False
        self._drained = asyncio.Event()
        #: Commits announced so far (``wake`` calls), and for each lane the count at which a
        #: lease in it last found nothing due: until the next commit, another worker woken
        #: by the same one has nothing to look for in that lane (see :meth:`_next_jobs`).
        self._wakes = 0
        self._found_nothing: dict[str, int] = {}
        self._leasing = asyncio.Lock()

    def wake(self) -> None:
        """Tell idle workers that new rows may be due (called after every commit)."""
        self._wakes += 1
        self._wake.set()

    @property
    def health(self) -> PipelineHealth:
        """The workers' last store error and since when, while they cannot use the store."""
        return PipelineHealth(self._outage.error, self._outage.since)

    async def run(self, owner_lock: OwnerLock | None = None) -> None:
        """Run the workers until :meth:`stop`; in-flight jobs finish within the grace time.

        ``owner_lock`` (PostgreSQL) is held while leasing, so other replicas can tell this
        process's leases from those of a process that died.
        """
        self._stopping.clear()
        self._owner_lock = owner_lock
        await self._recover()
        loops: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            f"jmlsync-worker-{index}": functools.partial(self._work, index)
            for index in range(self.options.workers)
        }
        loops["jmlsync-lease-heartbeat"] = self._heartbeat
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._supervise(name, loop), name=name)
                for name, loop in loops.items()
            ]
            await self._stopping.wait()
            _done, pending = await asyncio.wait(tasks, timeout=self.options.shutdown_grace_seconds)
            for task in pending:
                task.cancel()

    async def _supervise(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run one loop of the pool until the pool stops. The loops catch everything; should
        one end anyway, the pool must not shrink: it is started again after a pause."""
        while True:
            error: Exception | None = None
            try:
                await loop()
            except Exception as exc:
                error = exc
            if self._stopping.is_set():
                if error is not None:
                    log.error("worker stopped with an error", exc_info=error)
                return
            log.error("%s ended unexpectedly; restarting it", name, exc_info=error)
            await self._pause(self.options.outage_max_wait)
            if self._stopping.is_set():
                return

    async def _recover(self) -> None:
        """Take back leases left by a process that died; without the store, leave them to
        expire (or to the heartbeat's sweep on PostgreSQL)."""
        try:
            recovered = await self.queue.recover()
        except Exception as exc:
            self._outage.failed(exc)
            return
        if recovered:
            log.warning("took back %d lease(s) left by a stopped process", recovered)

    async def _heartbeat(self) -> None:
        """Renew the leases of running jobs, so only a dead process's leases expire, and take
        back those of replicas that are gone."""
        interval = min(self.options.lease.total_seconds() / 3, 5.0)
        while not self._stopping.is_set():
            await self._pause(interval)
            if self._stopping.is_set():
                return
            try:
                await self._beat()
            except Exception as exc:
                self._outage.failed(exc)

    async def _beat(self) -> None:
        if self._owner_lock is not None:
            await self._owner_lock.hold()
        jobs = dict(self._in_flight)
        until = self.clock() + self.options.lease
        for owner in {owner for owner, _ in jobs.values()}:
            ids = [job_id for job_id, (who, _) in jobs.items() if who == owner]
            await self.queue.renew(ids, owner, until)
            for job_id in ids:
                if job_id in self._lease_until:
                    self._lease_until[job_id] = until
        taken = await self.queue.take_back_orphans()
        if taken:
            log.warning("took back %d lease(s) of a replica that is gone", taken)
            self.wake()

    def _backoff(self, failures: int) -> float:
        # The exponent is capped: an outage of thousands of attempts must not overflow.
        wait = self.options.outage_initial_wait * 2.0 ** min(max(0, failures - 1), 32)
        return float(min(wait, self.options.outage_max_wait))

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less when stopping."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

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

    def _lane(self, index: int) -> Literal["any", "leavers"]:
        """Worker ``index``'s lane: the first ``leaver_workers`` take only leavers."""
        reserved = min(self.options.leaver_workers, self.options.workers - 1)
        return "leavers" if index < reserved else "any"

    async def _work(self, index: int) -> None:
        owner = f"{self._owner}/{index}"
        lane = self._lane(index)
        failures = 0
        woken = False  # by a commit (else: starting, after work, after the poll interval)
        while not self._stopping.is_set():
            # Cleared before looking, so a commit that lands while we look still wakes us.
            self._wake.clear()
            try:
                jobs = await self._next_jobs(owner, lane, woken=woken)
            except Exception as exc:
                self._outage.failed(exc)
                failures += 1
                await self._pause(self._backoff(failures))
                woken = False
                continue
            failures = 0
            self._outage.recovered()
            if not jobs:
                self._idle_workers += 1
                if self._idle_workers == self.options.workers:
                    self._drained.set()
                try:
                    woken = await self._idle()
                finally:
                    self._idle_workers -= 1
                continue
            self._drained.clear()
            woken = False
            await self._run_jobs(owner, jobs)

    async def _next_jobs(
        self, owner: str, lane: Literal["any", "leavers"], *, woken: bool = False
    ) -> list[Job]:
        """Lease a batch in ``lane``. A worker ``woken`` by a commit looks only if no lease
        since that commit found the lane (or every lane) empty: one commit wakes every idle
        worker, and each empty lease is a write of its own. Leases go one at a time, so the
        second worker sees what the first found."""
        if self._owner_lock is not None:
            await self._owner_lock.hold()
        paused = await self._leavers_paused()
        if paused and lane == "leavers":
            return []
        asked: Literal["any", "leavers", "others"] = "others" if paused else lane
        async with self._leasing:
            seen = self._wakes
            if woken and seen in (self._found_nothing.get(asked), self._found_nothing.get("any")):
                return []
            now = self.clock()
            jobs = await self.queue.lease_batch(
                owner,
                now,
                self.options.lease,
                limit=max(1, self.options.batch_size),
                lane=asked,
            )
            if not jobs:
                self._found_nothing[asked] = seen
        for job in jobs:
            self._lease_until[job.id] = now + self.options.lease
        return jobs

    async def _run_jobs(self, owner: str, jobs: list[Job]) -> None:
        for job in jobs:
            self._in_flight[job.id] = (owner, job)
        ids = [job.id for job in jobs]
        try:
            await self.process_batch(jobs)
        except asyncio.CancelledError:
            # Shutdown ran out of grace: give the leases back so the next start takes the
            # jobs at once (their operations are idempotent, so a partial run is harmless).
            with contextlib.suppress(Exception):
                await asyncio.shield(self.queue.release(ids))
            raise
        except _ReaderBehind as exc:
            # Nothing was planned or applied: planned again at once, no attempt counted.
            log.warning("%s; the batch is planned again", exc)
            await self._settle(jobs[0], lambda: self.queue.release(ids))
        except Exception as exc:
            outage = store_outage(exc)
            if outage is not None:
                # Not the jobs' fault: they run again once the store is back, with no
                # attempt counted (the outage would otherwise dead-letter leavers).
                self._outage.failed(outage)
                await self._settle(jobs[0], lambda: self.queue.release(ids))
                return
            names = ", ".join(job.user_name for job in jobs)
            log.exception("a batch of %d job(s) crashed (%s); retried", len(jobs), names)
            failure = JobFailed("internal error", permanent=False)
            for job in jobs:
                await self._settle(job, functools.partial(self._failed, job, failure))
        else:
            self._outage.recovered()
        finally:
            for job in jobs:
                self._in_flight.pop(job.id, None)
                self._lease_until.pop(job.id, None)

    async def _settle(self, job: Job, write: Callable[[], Awaitable[None]]) -> None:
        """Write a job's outcome, retrying with backoff while its lease is surely ours;
        after that the lease expires and the job runs again (never lost, never run by two
        workers at once on our account)."""
        failures = 0
        margin = self.options.lease / 3
        while True:
            try:
                await write()
            except Exception as exc:
                self._outage.failed(exc)
                failures += 1
            else:
                self._outage.recovered()
                return
            until = self._lease_until.get(job.id)
            if self._stopping.is_set() or until is None or self.clock() >= until - margin:
                log.info(
                    "job %d for %s runs again once its lease expires (its outcome could not"
                    " be written)",
                    job.id,
                    job.user_name,
                )
                return
            await self._pause(self._backoff(failures))

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

    async def _idle(self) -> bool:
        """Wait for a commit or the poll interval; True when a commit woke us."""
        if self._stopping.is_set():
            return False
        try:
            async with asyncio.timeout(self.options.poll_seconds):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True

    async def process(self, job: Job) -> None:
        """Plan and apply one job (a batch of one, see :meth:`process_batch`)."""
        await self.process_batch([job])

    async def process_batch(self, jobs: Sequence[Job]) -> None:
        """Plan and apply the jobs' principals on each target independently, together.

        A target that cannot be read or written keeps only its own operations pending: the
        job is retried (or dead-lettered) for those targets alone, while every healthy target
        got its grants and revocations in this attempt. A job is acknowledged only after
        its effects are recorded; the jobs that are done are acknowledged in one write.
        """
        done: list[Job] = []
        planned: list[tuple[Job, JobWork]] = []
        # Planned from what the changes that made the jobs due wrote, never from an older
        # snapshot: a plan of a leaver from before its deactivation grants nothing, revokes
        # nothing and is acknowledged, and the leaver is lost.
        await self._caught_up(jobs)
        works = await self.planner.plan(
            [job.user_name for job in jobs if job.user_name.casefold() not in self.protected]
        )
        plans = iter(works)
        for job in jobs:
            if job.user_name.casefold() in self.protected:
                # A break-glass account: never changed by jmlsync; the IdP touched it, so tell.
                await self.alerts.alert(
                    "protected_user",
                    f"the IdP changed protected user {job.user_name} ({job.cause}); jmlsync"
                    " changed nothing in any target",
                    user=job.user_name,
                    cause=job.cause,
                )
                done.append(job)
                continue
            work = next(plans)
            if work is None:
                done.append(job)
                continue
            planned.append((job, replace(work, requested_at=job.enqueued_at)))
        if planned:
            outcomes = await run_batch(
                self.applier,
                self._roles,
                [(work, self._targets_of(job)) for job, work in planned],
            )
            finished = await asyncio.gather(
                *(
                    self._finish(job, work, results)
                    for (job, work), results in zip(planned, outcomes, strict=True)
                )
            )
            done.extend(job for (job, _), ok in zip(planned, finished, strict=True) if ok)
        await self.queue.ack_batch(done)

    async def _caught_up(self, jobs: Sequence[Job]) -> None:
        """Return once the store's reader sees the jobs' rows at their leased generation.

        A guard: a reader whose snapshot lasts while reads overlap on it (as one shared SQLite
        connection did) could keep it from before a commit the writer has made; the SQLite
        store now gives every read a connection of its own. The wait is
        brief (until the overlapping reads end); if it lasts beyond a third of the lease,
        the jobs are given back (no attempt counted) to be planned again."""
        wait = 0.001
        deadline = time.monotonic() + self.options.lease.total_seconds() / 3
        while not await self.queue.seen(jobs):
            if time.monotonic() >= deadline:
                raise _ReaderBehind(f"the store's reader still lags for {len(jobs)} job(s)")
            await asyncio.sleep(wait)
            wait = min(wait * 2, 0.05)

    async def _finish(self, job: Job, work: JobWork, results: list[TargetResult]) -> bool:
        """Record a planned job's outcome but its ack; True when it is done (to be acked)."""
        failed = [result for result in results if result.error is not None]
        if self.timebound is not None:
            succeeded = [result.target for result in results if result.error is None]
            await self.timebound.after_job(job.user_name, work.person, succeeded, work.desired)
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
            return False
        return True

    def _targets_of(self, job: Job) -> list[str]:
        """The targets this attempt plans: those still pending from an earlier attempt (that
        are still configured), or every target."""
        names = sorted(self.applier.targets)
        if job.pending_targets is None:
            return names
        return [name for name in names if name in job.pending_targets]

    async def _failed(self, job: Job, error: JobFailed) -> None:
        attempts = job.attempts + 1
        pending = error.targets or None
        where = f" on {', '.join(error.targets)}" if error.targets else ""
        if error.permanent or attempts >= self.options.max_attempts:
            # The alert's row commits with the dead letter: a crash between them loses neither.
            alert = stage_alert(
                self.alerts,
                "dead_letter",
                f"job for {job.user_name} dead-lettered after {attempts} attempt(s){where}:"
                f" {error}",
                user=job.user_name,
                job=job.id,
                leaver=job.leaver,
                targets=list(error.targets),
            )
            await self.queue.fail(
                job,
                str(error),
                self.clock(),
                retry_in=None,
                pending_targets=pending,
                also=alert.write,
            )
            await alert.after_commit()
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
        batch_size=int(settings.get("batch_size", PipelineOptions.batch_size)),
        leaver_workers=int(settings.get("leaver_workers", PipelineOptions.leaver_workers)),
    )
