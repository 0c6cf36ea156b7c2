"""What proves jmlsync's work, on SQLite or PostgreSQL: leaver verification and breaches,
movers' revocations, drift findings, the record of scheduled runs, and housekeeping."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from jmlsync.domain.access import Grant
from jmlsync.domain.assurance import DriftFinding, DriftRecord, OpenLeaver, RunRecord
from jmlsync.domain.directory import format_timestamp, parse_timestamp
from jmlsync.domain.sla import LeaverRecord, MoverRevocation, TargetDetail
from jmlsync.store import outbox, pipeline_sql
from jmlsync.store.database import Backend, WriteConn
from jmlsync.store.movers import SqlMovers
from jmlsync.store.sql import assurance as sql

__all__ = ["DriftFinding", "DriftRecord", "OpenLeaver", "RunRecord", "SqlAssurance"]


@dataclass
class _Tally:
    revocations: int = 0
    disabled: bool = False
    failures: int = 0
    last: str | None = None


def _when(text: str | None) -> datetime | None:
    return parse_timestamp(text) if text else None


class SqlAssurance:
    """Leaver verification, drift, runs and housekeeping on the store's database."""

    def __init__(self, db: Backend) -> None:
        self.db = db
        self.movers = SqlMovers(db)

    async def unverified_leavers(self) -> list[OpenLeaver]:
        """Leaver events neither verified nor cancelled, oldest first."""
        rows = await self.db.reader.execute_fetchall(sql.UNVERIFIED_LEAVERS)
        return [
            OpenLeaver(r[0], r[1], parse_timestamp(r[2]), _when(r[3]), _when(r[4])) for r in rows
        ]

    async def mark_verified(self, leaver_id: int, now: datetime) -> None:
        async def body(conn: WriteConn) -> None:
            await conn.execute(
                sql.MARK_LEAVER_VERIFIED,
                (format_timestamp(now), leaver_id),
            )

        await self.db.write(body)

    async def mark_breached(
        self,
        leaver_id: int,
        now: datetime,
        cause: str | None = None,
        *,
        also: Callable[[Any], Awaitable[object]] | None = None,
    ) -> bool:
        """Record the breach and its cause; True the first time only (so it is alerted once).
        ``also`` (the breach's alert row) runs in the same transaction, that first time."""

        async def body(conn: WriteConn) -> bool:
            async with conn.execute(
                sql.MARK_LEAVER_BREACHED,
                (format_timestamp(now), format_timestamp(now), cause, leaver_id),
            ) as cursor:
                first = bool(cursor.rowcount > 0)
            if first and also is not None:
                await also(conn)
            return first

        return await self.db.write(body)

    async def mark_regranted(
        self,
        user_name: str,
        cause: str,
        now: datetime,
        also: Callable[[Any], Awaitable[object]] | None = None,
    ) -> bool:
        """A verified leaver's revoked access was found again: the event is breached (its
        first breach time kept), with ``cause``, and no longer verified, so verification reads
        it back again. True when the user's newest leaver event was verified (alert then);
        ``also`` (the breach's alert rows) runs in the same transaction, only then."""
        stamp = format_timestamp(now)
        # Read first: most unmanaged grants of inactive users are not re-grants (no write then).
        seen = await self.db.reader.execute_fetchall(sql.NEWEST_LEAVER, (user_name,))
        if not seen or seen[0][1] is None:
            return False

        async def body(conn: WriteConn) -> bool:
            rows = await conn.execute_fetchall(sql.NEWEST_LEAVER, (user_name,))
            if not rows or rows[0][1] is None:
                return False
            await conn.execute(
                sql.MARK_LEAVER_REGRANTED,
                (stamp, cause, stamp, stamp, rows[0][0]),
            )
            if also is not None:
                await also(conn)
            return True

        return await self.db.write(body)

    async def pending_targets_of(
        self, leaver_id: int, targets: Iterable[str]
    ) -> dict[str, str | None]:
        """The configured targets a leaver event has no clear for, with the last error."""
        rows = await self.db.reader.execute_fetchall(sql.LEAVER_TARGETS, (leaver_id,))
        known = {row[0]: (row[1], row[2]) for row in rows}
        return {
            name: known.get(name, (None, None))[1]
            for name in sorted(targets)
            if known.get(name, (None, None))[0] is None
        }

    async def record_mover_revocation(
        self, grant: Grant, requested_at: str, revoked_at: datetime, actor: str | None = None
    ) -> None:
        """Record a mover's revocation on its own transaction (the applier records the ones
        it revokes with the revocation itself)."""
        await self.movers.record(grant, requested_at, revoked_at, actor)

    async def leaver_records(self, since: datetime, until: datetime) -> list[LeaverRecord]:
        """Leaver events (not cancelled) that started in the window, with per-target detail."""
        rows = await self.db.reader.execute_fetchall(
            sql.LEAVERS_IN_WINDOW,
            (format_timestamp(since), format_timestamp(until)),
        )
        return [await self._record(tuple(row)) for row in rows]

    async def latest_leaver(self, user_name: str) -> LeaverRecord | None:
        """The newest leaver event of ``user_name`` (not cancelled), with per-target detail."""
        rows = await self.db.reader.execute_fetchall(sql.LATEST_LEAVER, (user_name,))
        return await self._record(tuple(rows[0])) if rows else None

    async def pending_by_target(self, targets: Iterable[str]) -> dict[str, int]:
        """For each target, the open leaver events (not cleared, not cancelled) that still
        wait on it: no clear recorded there yet."""
        rows = await self.db.reader.execute_fetchall(sql.OPEN_LEAVER_CLEARS)
        cleared: dict[int, set[str]] = {}
        for leaver_id, target in rows:
            done = cleared.setdefault(int(leaver_id), set())
            if target is not None:
                done.add(str(target))
        return {
            name: sum(1 for done in cleared.values() if name not in done)
            for name in sorted(targets)
        }

    async def _record(self, row: tuple[Any, ...]) -> LeaverRecord:
        """A leaver row (:data:`.sql.assurance.LEAVER_COLUMNS`) with its per-target detail:
        operations from the audit log, outcomes from leaver_targets."""
        leaver_id, user, left_at, cleared_at, verified_at, breached_at, cause, regranted = row
        details = await self._target_details(user, left_at)
        states = await self.db.reader.execute_fetchall(sql.LEAVER_TARGETS, (leaver_id,))
        by_target = {t.target: t for t in details}
        for target, target_cleared, error in states:
            detail = by_target.get(target) or TargetDetail(target, 0, False, 0, None)
            by_target[target] = replace(detail, cleared_at=_when(target_cleared), last_error=error)
        return LeaverRecord(
            user=user,
            left_at=parse_timestamp(left_at),
            cleared_at=_when(cleared_at),
            verified_at=_when(verified_at),
            breached_at=_when(breached_at),
            targets=tuple(by_target[name] for name in sorted(by_target)),
            breach_cause=cause,
            regranted_at=_when(regranted),
        )

    async def _target_details(self, user: str, left_at: str) -> list[TargetDetail]:
        rows = await self.db.reader.execute_fetchall(
            sql.LEAVER_OPERATIONS, (f"user {user}", left_at)
        )
        tally: dict[str, _Tally] = {}
        for target, action, outcome, last, count in rows:
            entry = tally.setdefault(target, _Tally())
            if outcome != "applied":
                entry.failures += count
            elif action == "revoke":
                entry.revocations += count
            else:
                entry.disabled = True
            entry.last = max(entry.last or last, last)
        return [
            TargetDetail(t, e.revocations, e.disabled, e.failures, _when(e.last))
            for t, e in sorted(tally.items())
        ]

    async def mover_revocations(self, since: datetime, until: datetime) -> list[MoverRevocation]:
        """Movers' revocations requested in [since, until), with their read-back."""
        return await self.movers.in_window(since, until)

    async def record_drift(
        self,
        findings: Iterable[tuple[str, Grant]],
        now: datetime,
        *,
        scope_complete: bool,
        unreadable: Collection[str] = (),
        also: Callable[[Any, list[DriftFinding]], Awaitable[object]] | None = None,
    ) -> tuple[list[DriftFinding], list[DriftFinding]]:
        """Upsert what this run found; resolve what it no longer finds (when it looked at
        everything), except on the ``unreadable`` targets: not reading a target is not
        finding it clean. ``also`` runs in the same transaction with its connection and the
        new findings (their alert rows). Returns (new findings, all open findings)."""
        stamp = format_timestamp(now)
        new: list[DriftFinding] = []
        seen: set[tuple[str, str, str, str]] = set()

        async def body(conn: WriteConn) -> None:
            for kind, grant in findings:
                key = (kind, grant.target, grant.user, grant.role)
                seen.add(key)
                async with conn.execute(sql.TOUCH_DRIFT, (stamp, *key)) as cursor:
                    if cursor.rowcount:
                        continue
                await conn.execute(sql.INSERT_DRIFT, (*key, stamp, stamp))
                new.append(DriftFinding(*key, stamp, stamp))
            if scope_complete:
                await _resolve_unseen(conn, seen, stamp, frozenset(unreadable))
            if also is not None:
                await also(conn, new)

        await self.db.write(body)
        return new, await self.open_drift()

    async def record_findings(
        self,
        findings: Sequence[tuple[str, Grant]],
        now: datetime,
        *,
        scope_complete: bool,
        unreadable: Collection[str] = (),
        also: Callable[[Any, list[DriftFinding]], Awaitable[object]] | None = None,
    ) -> DriftRecord:
        """:meth:`record_drift` in a few set-wise statements, for runs finding hundreds of
        thousands of findings: one read of the open findings, then batched updates and
        inserts. Returns each finding's first sighting and the open counts by kind rather
        than every open finding."""
        stamp = format_timestamp(now)
        unread = frozenset(unreadable)
        first_seen = [stamp] * len(findings)
        new: list[DriftFinding] = []
        counts: dict[str, int] = {}

        async def body(conn: WriteConn) -> None:
            new.clear()
            counts.clear()
            index = {(k, g.target, g.user, g.role): i for i, (k, g) in enumerate(findings)}
            found = [False] * len(findings)
            stamps: dict[str, str] = {}
            seen: list[tuple[str, int]] = []
            every = scope_complete and not unread
            gone: list[tuple[str, int]] = []
            sql = (
                "SELECT id, kind, target, user_name, role, first_seen FROM drift"
                " WHERE resolved_at IS NULL"
            )
            async with conn.execute(sql) as cursor:
                async for row in cursor:
                    at = index.get((row[1], row[2], row[3], row[4]))
                    if at is not None:
                        found[at] = True
                        first_seen[at] = stamps.setdefault(row[5], row[5])
                        if not every:
                            seen.append((stamp, row[0]))
                    elif scope_complete and row[2] not in unread:
                        gone.append((stamp, row[0]))
                        continue
                    counts[row[1]] = counts.get(row[1], 0) + 1
            del index
            await conn.executemany("UPDATE drift SET resolved_at = ? WHERE id = ?", gone)
            if every:
                # Every open finding left was seen again: one statement, not one per row.
                await conn.execute(
                    "UPDATE drift SET last_seen = ? WHERE resolved_at IS NULL", (stamp,)
                )
            else:
                await conn.executemany("UPDATE drift SET last_seen = ? WHERE id = ?", seen)
            for (kind, grant), was in zip(findings, found, strict=True):
                if not was:
                    new.append(
                        DriftFinding(kind, grant.target, grant.user, grant.role, stamp, stamp)
                    )
                    counts[kind] = counts.get(kind, 0) + 1
            await conn.executemany(
                "INSERT INTO drift (kind, target, user_name, role, first_seen, last_seen)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(d.kind, d.target, d.user, d.role, stamp, stamp) for d in new],
            )
            if also is not None:
                await also(conn, new)

        await self.db.write(body)
        return DriftRecord(new, first_seen, counts)

    async def open_drift(self) -> list[DriftFinding]:
        rows = await self.db.reader.execute_fetchall(sql.OPEN_DRIFT)
        return [DriftFinding(*row) for row in rows]

    async def start_run(self, job: str, now: datetime, runner: str | None = None) -> int:

        async def body(conn: WriteConn) -> int:
            async with conn.execute(sql.INSERT_RUN, (job, format_timestamp(now), runner)) as cursor:
                row = await cursor.fetchone()
            assert row is not None
            return int(row[0])

        return await self.db.write(body)

    async def finish_run(
        self,
        run_id: int,
        now: datetime,
        outcome: str,
        counts: dict[str, int] | None = None,
        detail: str | None = None,
        also: Callable[[Any], Awaitable[object]] | None = None,
    ) -> None:
        """Close run ``run_id``; ``also`` (a held run's guard alert rows) runs in the same
        transaction, so the record and its alert commit together or not at all."""

        async def body(conn: WriteConn) -> None:
            await conn.execute(
                sql.FINISH_RUN,
                (format_timestamp(now), outcome, json.dumps(counts or {}), detail, run_id),
            )
            if also is not None:
                await also(conn)

        await self.db.write(body)

    async def last_runs(self) -> list[RunRecord]:
        """The newest run of each job."""
        rows = await self.db.reader.execute_fetchall(sql.LAST_RUNS)
        return [
            RunRecord(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else {}, r[5]) for r in rows
        ]

    async def open_breaches(self) -> int:
        async with self.db.reader.execute(sql.OPEN_BREACHES) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def housekeeping(self, now: datetime, keep: timedelta) -> dict[str, int]:
        """Prune history older than ``keep``: runs, resolved drift, movers' revocations,
        verified or cancelled leaver events, the oldest audit rows (their last hash is kept
        as the chain's anchor, so `audit verify` still checks what remains), and settled
        alerts."""
        cutoff = format_timestamp(now - keep)
        pruned: dict[str, int] = {}

        async def body(conn: WriteConn) -> None:
            for table, statement in sql.PRUNE_BY_AGE:
                params = (cutoff, cutoff) if table == "leavers" else (cutoff,)
                async with conn.execute(statement, params) as cursor:
                    pruned[table] = cursor.rowcount
            pruned["audit"] = await _prune_audit(conn, cutoff)
            pruned.update(await outbox.prune(conn, cutoff))

        await self.db.write(body)
        return pruned


async def _resolve_unseen(
    conn: WriteConn, seen: set[tuple[str, str, str, str]], stamp: str, unread: frozenset[str]
) -> None:
    """Close the open findings this complete run did not find again (on targets it read)."""
    rows = await conn.execute_fetchall(sql.UNRESOLVED_DRIFT)
    gone = [(stamp, row[0]) for row in rows if tuple(row)[1:] not in seen and row[2] not in unread]
    await conn.executemany(sql.RESOLVE_DRIFT, gone)


async def _prune_audit(conn: WriteConn, cutoff: str) -> int:
    await pipeline_sql.flush_audit(conn)  # the batch's rows so far, to be read with the rest
    async with conn.execute(sql.LAST_AUDIT_BEFORE, (cutoff,)) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return 0
    last_seq, last_hash = row[0], row[1]
    async with conn.execute(sql.DELETE_AUDIT_THROUGH, (last_seq,)) as cursor:
        count = int(cursor.rowcount)
    await pipeline_sql.set_state(conn, pipeline_sql.AUDIT_ANCHOR, f"{last_seq}:{last_hash}")
    return count
