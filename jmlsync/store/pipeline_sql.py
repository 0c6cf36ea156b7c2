"""SQL of the provisioning pipeline (SQLite and PostgreSQL): the queue, leaver records, the
audit chain.

Every function takes the connection of the caller's transaction, so a SCIM write, the queue
rows it causes and its audit row commit together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from jmlsync.audit import GENESIS, AuditEntry, chain_hash
from jmlsync.domain.directory import Job, QueueRow, QueueStats, format_timestamp
from jmlsync.store.database import Conn, WriteConn

AUDIT_HEAD = "audit_head"
#: "seq:hash" of the newest pruned audit row: where verification of the kept rows starts.
AUDIT_ANCHOR = "audit_anchor"


async def enqueue(
    conn: WriteConn,
    user_names: Iterable[str],
    *,
    cause: str,
    now: datetime,
    leaver: bool = False,
) -> int:
    """Add (or coalesce into) one pending row per userName; return how many were touched.

    A coalesced row keeps its place, becomes due now, forgets a dead letter (a new change
    deserves new attempts), plans every target again (``pending_targets`` back to NULL), and
    bumps its generation so that a worker holding an older lease does not delete it.
    """
    stamp = format_timestamp(now)
    rows = [(name, bool(leaver), cause, stamp, stamp) for name in set(user_names)]
    await conn.executemany(
        "INSERT INTO queue (user_name, leaver, cause, enqueued_at, next_attempt_at)"
        " VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (user_name) DO UPDATE SET"
        " generation = queue.generation + 1, leaver = (queue.leaver OR excluded.leaver),"
        " cause = excluded.cause, next_attempt_at = excluded.next_attempt_at,"
        " attempts = CASE WHEN queue.failed_at IS NULL THEN queue.attempts ELSE 0 END,"
        " failed_at = NULL, pending_targets = NULL",
        rows,
    )
    return len(rows)


async def enqueue_joiner(conn: WriteConn, user_name: str, *, cause: str, now: datetime) -> None:
    """:func:`enqueue` a new, active user only when something could already give it work on a
    target: a grant jmlsync applied under that userName, a time-bound request for it, or a
    job pending for the name (coalesced as ``enqueue`` does). A user just created is in no
    group, so otherwise its job would plan nothing and ask no target; the membership or
    request that later gives it access enqueues it then."""
    stamp = format_timestamp(now)
    await conn.execute(
        "INSERT INTO queue (user_name, leaver, cause, enqueued_at, next_attempt_at)"
        " SELECT CAST(? AS TEXT), FALSE, CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT)"
        " WHERE EXISTS (SELECT 1 FROM applied_grants WHERE user_name = ?)"
        " OR EXISTS (SELECT 1 FROM access_requests WHERE user_name = ?)"
        " OR EXISTS (SELECT 1 FROM queue WHERE user_name = ?)"
        " ON CONFLICT (user_name) DO UPDATE SET"
        " generation = queue.generation + 1, cause = excluded.cause,"
        " next_attempt_at = excluded.next_attempt_at,"
        " attempts = CASE WHEN queue.failed_at IS NULL THEN queue.attempts ELSE 0 END,"
        " failed_at = NULL, pending_targets = NULL",
        (user_name, cause, stamp, stamp, user_name, user_name, user_name),
    )


async def enqueue_everyone(conn: WriteConn, *, cause: str, now: datetime) -> int:
    """Enqueue every principal jmlsync knows: each user, and each name it granted to."""
    async with conn.execute(
        "SELECT user_name FROM users UNION SELECT user_name FROM applied_grants"
    ) as cursor:
        names = [row[0] async for row in cursor]
    return await enqueue(conn, names, cause=cause, now=now)


async def lease(
    conn: Conn,
    owner: str,
    now: datetime,
    lease_for: timedelta,
    *,
    include_leavers: bool = True,
) -> Job | None:
    """Take the next due job, leavers first, for ``lease_for``; None when nothing is due."""
    stamp = format_timestamp(now)
    leavers = "" if include_leavers else " AND NOT leaver"
    async with conn.execute(
        "UPDATE queue SET leased_until = ?, lease_owner = ? WHERE id = ("
        " SELECT id FROM queue WHERE failed_at IS NULL AND next_attempt_at <= ?"
        f" AND (leased_until IS NULL OR leased_until < ?){leavers}"
        f" ORDER BY leaver DESC, next_attempt_at, id LIMIT 1{conn.dialect.skip_locked})"
        " RETURNING id, user_name, leaver, cause, generation, attempts, enqueued_at,"
        " pending_targets",
        (format_timestamp(now + lease_for), owner, stamp, stamp),
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    pending = frozenset(json.loads(row[7])) if row[7] is not None else None
    return Job(row[0], row[1], bool(row[2]), row[3], row[4], row[5], row[6], pending)


#: A leaver who holds a grant jmlsync applied (on any target): access to take away, where
#: another leaver's job only checks that nothing was granted outside jmlsync.
_HOLDS = " AND EXISTS (SELECT 1 FROM applied_grants g WHERE g.user_name = queue.user_name)"
_LANES = {
    "any": "",
    "leavers": " AND leaver",
    "holders": " AND leaver" + _HOLDS,
    "others": " AND NOT leaver",
}


async def lease_batch(
    conn: WriteConn,
    owner: str,
    now: datetime,
    lease_for: timedelta,
    *,
    limit: int,
    lane: str = "any",
) -> list[Job]:
    """Take up to ``limit`` due jobs, leavers first, for ``lease_for``.

    ``lane``: ``leavers`` only, ``others`` (no leavers), or ``any``: the due leavers when
    there are some, else the others. A batch never mixes leavers with other jobs: a leaver's
    calls take the target's reserved slot and its job is done when its batch is, so a slow
    joiner or mover in its batch would hold it up (and take that slot). Among leavers, those
    who hold a grant jmlsync applied come first, in batches of their own: a burst of leavers
    with nothing recorded (each a read of every target) never delays one whose access is
    known. The jobs come back in id order."""
    if lane == "any":
        leavers = await lease_batch(conn, owner, now, lease_for, limit=limit, lane="leavers")
        if leavers:
            return leavers
        lane = "others"
    if lane == "leavers":
        holders = await lease_batch(conn, owner, now, lease_for, limit=limit, lane="holders")
        if holders:
            return holders
    stamp = format_timestamp(now)
    async with conn.execute(
        "UPDATE queue SET leased_until = ?, lease_owner = ? WHERE id IN ("
        " SELECT id FROM queue WHERE failed_at IS NULL AND next_attempt_at <= ?"
        f" AND (leased_until IS NULL OR leased_until < ?){_LANES[lane]}"
        f" ORDER BY leaver DESC, next_attempt_at, id LIMIT ?{conn.dialect.skip_locked})"
        " RETURNING id, user_name, leaver, cause, generation, attempts, enqueued_at,"
        " pending_targets",
        (format_timestamp(now + lease_for), owner, stamp, stamp, limit),
    ) as cursor:
        rows = await cursor.fetchall()
    jobs = [
        Job(
            r[0],
            r[1],
            bool(r[2]),
            r[3],
            r[4],
            r[5],
            r[6],
            frozenset(json.loads(r[7])) if r[7] is not None else None,
        )
        for r in rows
    ]
    return sorted(jobs, key=lambda job: job.id)


async def seen(conn: Conn, jobs: Sequence[Job]) -> bool:
    """Whether ``conn`` sees every job's row at (at least) the generation it was leased at:
    in one statement, so on a reader whose snapshot may lag (SQLite: one connection, its
    read transaction kept open while any of its statements is), every later read on it is
    at least as new as the commits that made these jobs due."""
    if not jobs:
        return True
    wanted = {job.id: job.generation for job in jobs}
    found: dict[int, int] = {}
    ids = sorted(wanted)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        async with conn.execute(
            f"SELECT id, generation FROM queue WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ) as cursor:
            found.update((int(row[0]), int(row[1])) for row in await cursor.fetchall())
    return all(found.get(job_id, -1) >= generation for job_id, generation in wanted.items())


#: The most jobs one acknowledging DELETE names (two parameters each).
_ACK_CHUNK = 200


async def ack_batch(conn: WriteConn, jobs: Sequence[Job]) -> list[bool]:
    """:func:`ack` for each job, in the caller's one transaction: one DELETE for the batch
    (per 200 jobs), and one UPDATE releasing the rows a newer change coalesced into
    meanwhile. True for each row deleted."""
    deleted: set[int] = set()
    for start in range(0, len(jobs), _ACK_CHUNK):
        chunk = jobs[start : start + _ACK_CHUNK]
        where = " OR ".join(["(id = ? AND generation = ?)"] * len(chunk))
        params = [value for job in chunk for value in (job.id, job.generation)]
        async with conn.execute(f"DELETE FROM queue WHERE {where} RETURNING id", params) as c:
            deleted.update(int(row[0]) for row in await c.fetchall())
    kept = [(job.id,) for job in jobs if job.id not in deleted]
    if kept:
        await conn.executemany(
            "UPDATE queue SET leased_until = NULL, lease_owner = NULL WHERE id = ?", kept
        )
    return [job.id in deleted for job in jobs]


async def ack(conn: WriteConn, job: Job) -> bool:
    """Finish ``job``: delete its row unless a newer change coalesced into it meanwhile
    (then release the lease so the row runs again). True when the row was deleted.
    """
    (deleted,) = await ack_batch(conn, [job])
    return deleted


async def release(conn: WriteConn, job_ids: Collection[int]) -> None:
    """Give leases back untouched (graceful shutdown): the rows are due again at once."""
    await conn.executemany(
        "UPDATE queue SET leased_until = NULL, lease_owner = NULL WHERE id = ?",
        [(job_id,) for job_id in job_ids],
    )


async def renew(conn: WriteConn, job_ids: Collection[int], owner: str, until: datetime) -> None:
    """Extend the leases ``owner`` holds on these rows (a heartbeat while jobs run)."""
    stamp = format_timestamp(until)
    await conn.executemany(
        "UPDATE queue SET leased_until = ? WHERE id = ? AND lease_owner = ?",
        [(stamp, job_id, owner) for job_id in job_ids],
    )


async def release_all(conn: WriteConn) -> int:
    """Drop every lease: at the start of the only process using the database, any lease
    left is from a process that died."""
    async with conn.execute(
        "UPDATE queue SET leased_until = NULL, lease_owner = NULL WHERE leased_until IS NOT NULL"
    ) as cursor:
        return int(cursor.rowcount)


#: The first key of the session advisory locks that name a live process's lease owner.
OWNER_LOCK = 7_263_003
#: A lease owner a live process names in its session lock (see ``store.postgres.OwnerLock``).
_OWNER_KEY = r"^worker-[0-9a-f]{8}/"


async def release_orphans(conn: WriteConn, lock_key: int = OWNER_LOCK) -> int:
    """PostgreSQL: drop the leases whose owner no longer holds its session advisory lock
    ``(lock_key, owner key)``: its process died or lost the database, so nothing renews or
    finishes them. Owners in another format are left to expire."""
    async with conn.execute(
        "UPDATE queue SET leased_until = NULL, lease_owner = NULL"
        " WHERE leased_until IS NOT NULL AND lease_owner ~ ?"
        " AND NOT EXISTS (SELECT 1 FROM pg_locks AS l WHERE l.locktype = 'advisory'"
        " AND l.granted AND l.classid = ?::bigint::oid AND l.objsubid = 2"
        " AND l.objid::bigint ="
        " ('x' || lpad(substr(split_part(queue.lease_owner, '/', 1), 8), 16, '0'))"
        "::bit(64)::bigint)",
        (_OWNER_KEY, lock_key),
    ) as cursor:
        return int(cursor.rowcount)


async def fail(
    conn: Conn,
    job: Job,
    error: str,
    now: datetime,
    *,
    retry_in: timedelta | None,
    pending_targets: Collection[str] | None = None,
) -> bool:
    """Record a failed attempt: reschedule after ``retry_in``, or dead-letter when None.

    ``pending_targets`` names the targets the next attempt must plan (the others are done);
    None keeps the row's current set. A newer change coalesced into the row meanwhile is
    retried at once, on every target (its enqueue reset the set). Returns True when the row
    was dead-lettered.
    """
    stamp = format_timestamp(now)
    dead = retry_in is None
    next_at = stamp if retry_in is None else format_timestamp(now + retry_in)
    pending = None if pending_targets is None else json.dumps(sorted(pending_targets))
    await conn.execute(
        "UPDATE queue SET attempts = attempts + 1, last_error = ?, leased_until = NULL,"
        " lease_owner = NULL,"
        " next_attempt_at = CASE WHEN generation = ? THEN ? ELSE ? END,"
        " failed_at = CASE WHEN generation = ? AND ? THEN ? ELSE NULL END,"
        " pending_targets = CASE WHEN generation = ? AND CAST(? AS TEXT) IS NOT NULL"
        " THEN CAST(? AS TEXT) ELSE pending_targets END"
        " WHERE id = ?",
        (
            error[:2000],
            job.generation,
            next_at,
            stamp,
            job.generation,
            dead,
            stamp,
            job.generation,
            pending,
            pending,
            job.id,
        ),
    )
    return dead


async def queue_rows(conn: Conn, *, failed_only: bool) -> list[QueueRow]:
    sql = (
        "SELECT id, user_name, leaver, cause, enqueued_at, next_attempt_at, attempts,"
        " leased_until, last_error, failed_at, pending_targets FROM queue"
    )
    if failed_only:
        sql += " WHERE failed_at IS NOT NULL"
    rows = await conn.execute_fetchall(sql + " ORDER BY leaver DESC, next_attempt_at, id")
    return [
        QueueRow(
            r[0],
            r[1],
            bool(r[2]),
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            r[9],
            None if r[10] is None else tuple(json.loads(r[10])),
        )
        for r in rows
    ]


async def retry_failed(conn: WriteConn, now: datetime, job_id: int | None = None) -> int:
    """Re-drive dead letters (one by id, or all): attempts start again, due now."""
    sql = (
        "UPDATE queue SET failed_at = NULL, attempts = 0, last_error = NULL,"
        " next_attempt_at = ? WHERE failed_at IS NOT NULL"
    )
    params: list[object] = [format_timestamp(now)]
    if job_id is not None:
        sql += " AND id = ?"
        params.append(job_id)
    async with conn.execute(sql, params) as cursor:
        return int(cursor.rowcount)


async def queue_stats(conn: Conn) -> QueueStats:
    """Pending rows, dead letters, and when the oldest pending row was enqueued."""
    async with conn.execute(
        "SELECT count(*) FILTER (WHERE failed_at IS NULL),"
        " count(*) FILTER (WHERE failed_at IS NOT NULL),"
        " min(enqueued_at) FILTER (WHERE failed_at IS NULL) FROM queue"
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return QueueStats(0, 0, None)
    return QueueStats(int(row[0]), int(row[1]), row[2])


async def open_leaver(conn: Conn, user_name: str, user_id: str | None, now: datetime) -> None:
    """Record a leaver event at ``now`` unless one is already open for this userName."""
    await conn.execute(
        "INSERT INTO leavers (user_name, user_id, left_at)"
        " SELECT CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT)"
        " WHERE NOT EXISTS (SELECT 1 FROM leavers WHERE user_name = ?"
        " AND cleared_at IS NULL AND cancelled_at IS NULL)",
        (user_name, user_id, format_timestamp(now), user_name),
    )


async def cancel_leaver(conn: Conn, user_name: str, now: datetime) -> None:
    """A re-activation before clearing cancels the open leaver event."""
    await conn.execute(
        "UPDATE leavers SET cancelled_at = ? WHERE user_name = ? AND cleared_at IS NULL"
        " AND cancelled_at IS NULL",
        (format_timestamp(now), user_name),
    )


async def clear_leaver(conn: Conn, user_name: str, now: datetime) -> list[str]:
    """Mark the open leaver event of ``user_name`` cleared; return the ``left_at`` of each."""
    async with conn.execute(
        "UPDATE leavers SET cleared_at = ? WHERE user_name = ? AND cleared_at IS NULL"
        " AND cancelled_at IS NULL RETURNING left_at",
        (format_timestamp(now), user_name),
    ) as cursor:
        return [row[0] async for row in cursor]


async def record_leaver_targets(
    conn: WriteConn,
    user_name: str,
    outcomes: Mapping[str, str | None],
    every_target: Collection[str],
    now: datetime,
) -> list[str]:
    """Record one attempt's outcome per target for the open leaver event(s) of ``user_name``.

    ``outcomes`` maps a target to None (its revocations and disable were all applied: it is
    cleared) or to the error that keeps it pending. A target keeps the time it was first
    cleared. An event is cleared overall once every target in ``every_target`` is; returns
    the ``left_at`` of each event this call cleared.
    """
    stamp = format_timestamp(now)
    events = await conn.execute_fetchall(
        "SELECT id, left_at FROM leavers WHERE user_name = ? AND cleared_at IS NULL"
        " AND cancelled_at IS NULL",
        (user_name,),
    )
    cleared = []
    for leaver_id, left_at in events:
        await conn.executemany(
            "INSERT INTO leaver_targets (leaver_id, target, attempted_at, cleared_at, last_error)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (leaver_id, target) DO UPDATE SET"
            " attempted_at = excluded.attempted_at,"
            " cleared_at = coalesce(leaver_targets.cleared_at, excluded.cleared_at),"
            " last_error = CASE WHEN leaver_targets.cleared_at IS NULL"
            " THEN excluded.last_error END",
            [
                (leaver_id, target, stamp, stamp if error is None else None, error)
                for target, error in sorted(outcomes.items())
            ],
        )
        rows = await conn.execute_fetchall(
            "SELECT target FROM leaver_targets WHERE leaver_id = ? AND cleared_at IS NOT NULL",
            (leaver_id,),
        )
        if set(every_target) <= {row[0] for row in rows}:
            await conn.execute("UPDATE leavers SET cleared_at = ? WHERE id = ?", (stamp, leaver_id))
            cleared.append(str(left_at))
    return cleared


async def leaver_events_since(conn: Conn, since: datetime) -> int:
    async with conn.execute(
        "SELECT count(*) FROM leavers WHERE left_at >= ?", (format_timestamp(since),)
    ) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


_INSERT_AUDIT = (
    "INSERT INTO audit (seq, at, actor, action, subject, target, role, outcome, detail,"
    " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


async def append_audit(conn: Conn, entry: AuditEntry) -> None:
    """Append ``entry`` to the chain; the caller's transaction makes this serial.

    A batch's write connection remembers the chain's next seq and head for the rest of the
    batch (``audit_head``): the batch's transaction holds the head, so only its first append
    reads them, each later one chains to the row before it in memory. It also holds the
    batch's rows (``audit_pending``): they are inserted in one statement, and the head's row
    written once, by :func:`keep_audit_head` before the batch commits. A body that reads the
    audit table calls :func:`flush_audit` first.
    """
    cached: tuple[int, str] | None = getattr(conn, "audit_head", None)
    if cached is None:
        seq, previous = await _chain_head(conn)
    else:
        seq, previous = cached
    digest = chain_hash(previous, entry)
    row = (
        seq,
        entry.at,
        entry.actor,
        entry.action,
        entry.subject,
        entry.target,
        entry.role,
        entry.outcome,
        entry.detail,
        previous,
        digest,
    )
    pending: list[tuple[Any, ...]] | None = getattr(conn, "audit_pending", None)
    if pending is not None:
        pending.append(row)
    else:
        await conn.execute(_INSERT_AUDIT, row)
    if hasattr(conn, "audit_head"):
        conn.audit_head = (seq + 1, digest)
    else:
        await set_state(conn, AUDIT_HEAD, digest)


async def flush_audit(conn: WriteConn) -> None:
    """Insert the audit rows the batch holds so far (before a body reads the audit table)."""
    pending = conn.audit_pending
    if pending:
        rows = list(pending)
        pending.clear()
        await conn.executemany(_INSERT_AUDIT, rows)


async def keep_audit_head(conn: WriteConn) -> None:
    """Insert the batch's audit rows and write the head its appends left in memory (none
    appended: nothing to write)."""
    await flush_audit(conn)
    head: tuple[int, str] | None = conn.audit_head
    if head is not None:
        await set_state(conn, AUDIT_HEAD, head[1])


async def lock_audit_head(conn: WriteConn) -> None:
    """Take the audit chain's head (and its lock) before anything else in the transaction.

    With several replicas on one database, a commit batch that locked a row (a group it
    updates) and then waited for the head, held by another replica's batch that waits for that
    row, would deadlock, and PostgreSQL would fail one write. Taken first, the head orders the
    batches: whoever holds it takes rows after it, and a batch that waits for it holds none."""
    if conn.audit_head is None:
        conn.audit_head = await _chain_head(conn)


async def _chain_head(conn: Conn) -> tuple[int, str]:
    """The next seq and the hash it chains to, read under the head's lock."""
    # Locked, so appends from several processes on one database chain one after another.
    async with conn.execute(
        f"SELECT value FROM service_state WHERE key = ?{conn.dialect.for_update}", (AUDIT_HEAD,)
    ) as c:
        row = await c.fetchone()
    previous = row[0] if row else GENESIS
    # The next seq is taken under the head's lock, so the numbering has no gaps to mistake
    # for deleted rows (a sequence would skip numbers on rollback).
    async with conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM audit") as c:
        seq_row = await c.fetchone()
    seq = int(seq_row[0]) if seq_row else 1
    if seq == 1:  # no row: the first ever, or every row pruned (then it follows the anchor)
        anchor = await get_state(conn, AUDIT_ANCHOR)
        if anchor:
            seq = int(anchor.partition(":")[0]) + 1
    return seq, str(previous)


async def append_audits(conn: WriteConn, entries: Sequence[AuditEntry]) -> None:
    """Append ``entries`` to the chain in order, in the caller's transaction. The batch's
    connection keeps the chain's head and rows in memory (see :func:`append_audit`), so the
    head is read once per commit batch and the rows are inserted together."""
    for entry in entries:
        await append_audit(conn, entry)


async def get_state(conn: Conn, key: str) -> str | None:
    async with conn.execute("SELECT value FROM service_state WHERE key = ?", (key,)) as cursor:
        row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def set_state(conn: Conn, key: str, value: str) -> None:
    await conn.execute(
        "INSERT INTO service_state (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
