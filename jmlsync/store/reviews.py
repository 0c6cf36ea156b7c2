"""The review store: campaigns, items, decisions, remediation and exceptions (both backends).

Every write that an auditor relies on commits with its audit row: a campaign with the row
anchoring its snapshot's hash, a decisions file with one row per decision, an exception with
its creation and its lifting.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from jmlsync.audit import AuditEntry
from jmlsync.domain.access import Grant
from jmlsync.domain.directory import format_timestamp
from jmlsync.domain.review_records import (
    Decision,
    NewException,
    Remediation,
    ReviewException,
)
from jmlsync.domain.reviews import Campaign, DecisionRow, Item, item_from_dict
from jmlsync.store import pipeline_sql, reviews_sql
from jmlsync.store.database import Backend, WriteConn
from jmlsync.store.sql import reviews as sql


def item_from_json(text: str) -> Item:
    """An item as stored (its JSON)."""
    return item_from_dict(json.loads(text))


def _campaign(row: Any) -> Campaign:
    return Campaign(
        id=row[0],
        name=row[1],
        started_at=row[2],
        deadline=row[3],
        snapshot_sha256=row[4],
        audit_seq=row[5],
        items=int(row[6]),
        closed_at=row[7],
        reminded_at=row[8],
    )


class SqlReviews:
    """The ReviewStore port on the store's database."""

    def __init__(self, db: Backend) -> None:
        self.db = db

    async def create_campaign(
        self, campaign: Campaign, items: Sequence[Item], started_by: str, entry: AuditEntry
    ) -> int:
        """Store the campaign and its snapshot with the audit row anchoring its hash; return
        that row's seq."""

        async def body(conn: WriteConn) -> int:
            seq = await reviews_sql.audit(conn, entry)
            await conn.execute(
                sql.INSERT_CAMPAIGN,
                (
                    campaign.id,
                    campaign.name,
                    campaign.started_at,
                    campaign.deadline,
                    started_by,
                    campaign.snapshot_sha256,
                    seq,
                    len(items),
                ),
            )
            await conn.executemany(
                sql.INSERT_ITEM,
                [
                    (
                        campaign.id,
                        i.id,
                        i.user.user_name,
                        i.user.user_name.casefold(),
                        i.reviewer,
                        json.dumps(asdict(i)),
                    )
                    for i in items
                ],
            )
            return seq

        return await self.db.write(body)

    async def campaigns(self, name: str | None = None) -> list[Campaign]:
        query = sql.CAMPAIGNS
        params: list[str] = []
        if name is not None:
            query += sql.CAMPAIGNS_NAMED
            params.append(name)
        rows = await self.db.reader.execute_fetchall(query + sql.CAMPAIGNS_ORDER, params)
        return [_campaign(r) for r in rows]

    async def campaign(self, campaign_id: str) -> Campaign | None:
        rows = await self.db.reader.execute_fetchall(sql.CAMPAIGN, (campaign_id,))
        return _campaign(rows[0]) if rows else None

    async def open_items_of(self, reviewers: Collection[str]) -> list[Item]:
        specs = sorted(set(reviewers))
        if not specs:
            return []
        rows = await self.db.reader.execute_fetchall(
            f"{sql.OPEN_ITEMS_OF}({', '.join('?' for _ in specs)}){sql.OPEN_ITEMS_ORDER}", specs
        )
        return [item_from_json(row[0]) for row in rows]

    async def items(self, campaign_id: str) -> list[Item]:
        rows = await self.db.reader.execute_fetchall(
            sql.ITEMS,
            (campaign_id,),
        )
        return [item_from_json(r[0]) for r in rows]

    async def decisions(self, campaign_id: str) -> dict[int, Decision]:
        rows = await self.db.reader.execute_fetchall(
            sql.DECISIONS,
            (campaign_id,),
        )
        return {
            int(r[0]): Decision(int(r[0]), r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7])
            for r in rows
        }

    async def record_decisions(
        self,
        campaign: Campaign,
        rows: Sequence[DecisionRow],
        items: dict[int, Item],
        *,
        now: datetime,
        imported_by: str,
        late: bool,
        exceptions: Sequence[NewException],
    ) -> int:
        """Record every decision of one file at once (a decision already there is replaced),
        each with its audit row; revoke decisions queue their holder's job, with a
        remediation row and, for a rule-given grant, an exception. Return the jobs queued."""
        stamp = format_timestamp(now)
        by_item = {e.item_id: e for e in exceptions}

        async def body(conn: WriteConn) -> int:
            revoked: list[Item] = []
            for row in rows:
                item = items[row.item_id]
                seq = await reviews_sql.audit(
                    conn, reviews_sql.decision_entry(campaign, item, row, stamp, imported_by, late)
                )
                await conn.execute(
                    sql.DELETE_DECISION,
                    (campaign.id, row.item_id),
                )
                await conn.execute(
                    sql.INSERT_DECISION,
                    (
                        campaign.id,
                        row.item_id,
                        row.decision,
                        row.reviewer,
                        row.comment,
                        stamp,
                        imported_by,
                        int(late),
                        seq,
                    ),
                )
                if row.decision == "revoke":
                    revoked.append(item)
                    exception = by_item.get(row.item_id)
                    if exception is not None:
                        await reviews_sql.add_exception(
                            conn, campaign, item, exception, stamp, imported_by
                        )
                else:
                    await reviews_sql.withdraw(conn, campaign.id, row.item_id, stamp, imported_by)
            for item in revoked:
                await reviews_sql.remediate(conn, campaign.id, item, now)
            return len({i.user.user_name for i in revoked})

        return await self.db.write(body, notify=True)

    async def applied_details(self) -> dict[Grant, tuple[str, str]]:
        """Every grant jmlsync applied: (reason, applied_at)."""
        rows = await self.db.reader.execute_fetchall(sql.APPLIED_DETAILS)
        return {Grant(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}

    async def remediations(self, campaign_id: str | None = None) -> list[Remediation]:
        query = sql.REMEDIATIONS
        params: list[str] = []
        if campaign_id is not None:
            query += sql.REMEDIATIONS_OF_CAMPAIGN
            params.append(campaign_id)
        rows = await self.db.reader.execute_fetchall(query + sql.REMEDIATIONS_ORDER, params)
        return [Remediation(r[0], int(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows]

    async def pending_revocations(self, user_names: Collection[str] | None = None) -> set[Grant]:
        """Grants a review revoked that were not yet read back as gone."""
        query = sql.PENDING_REVOCATIONS
        params: list[str] = []
        if user_names is not None:
            # Narrowed in SQL: every pipeline job asks for its one principal.
            params = sorted({name.casefold() for name in user_names})
            query += f" AND i.user_key IN ({','.join('?' * len(params)) or 'NULL'})"
        rows = await self.db.reader.execute_fetchall(query, params)
        return {item_from_json(r[0]).grant for r in rows}

    async def mark_remediated(
        self,
        remediation: Remediation,
        *,
        revoked_at: str | None,
        verified_at: str | None,
        error: str | None,
    ) -> None:
        async def body(conn: WriteConn) -> None:
            await conn.execute(
                sql.MARK_REMEDIATED,
                (revoked_at, verified_at, error, remediation.campaign, remediation.item_id),
            )

        await self.db.write(body)

    async def exceptions(
        self, user_names: Collection[str] | None = None, *, active_only: bool = True
    ) -> list[ReviewException]:
        query = sql.EXCEPTIONS
        clauses, params = (["lifted_at IS NULL"] if active_only else []), []
        if user_names is not None:
            params = sorted({name.casefold() for name in user_names})
            clauses.append(f"user_key IN ({','.join('?' * len(params)) or 'NULL'})")
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        rows = await self.db.reader.execute_fetchall(query + " ORDER BY id", params)
        found = [
            ReviewException(
                id=int(r[0]),
                campaign=r[1],
                item_id=int(r[2]),
                grant=Grant(r[3], r[4], r[5]),
                user_id=r[6],
                causes=tuple((int(c[0]), str(c[1]), str(c[2])) for c in json.loads(r[7])),
                created_at=r[8],
                lifted_at=r[9],
                lifted_reason=r[10],
            )
            for r in rows
        ]
        return found

    async def lift(self, exception_id: int, reason: str, now: datetime, actor: str) -> bool:
        """Lift an exception by hand (audited); False when there is no such active one."""

        async def body(conn: WriteConn) -> bool:
            lifted = await reviews_sql.lift_exception(
                conn, exception_id, f"exception {exception_id}", reason, now, actor
            )
            if lifted:
                rows = await conn.execute_fetchall(sql.EXCEPTION_USER, (exception_id,))
                await pipeline_sql.enqueue(
                    conn, [rows[0][0]], cause="review.exception.lift", now=now
                )
            return lifted

        return await self.db.write(body, notify=True)

    async def mark_campaign(self, campaign_id: str, column: str, now: datetime) -> bool:
        """Set ``reminded_at``, ``closed_at`` or ``auto_revoked_at`` once; False when it was
        already set."""
        assert column in ("reminded_at", "closed_at", "auto_revoked_at")

        async def body(conn: WriteConn) -> bool:
            cursor = await conn.execute(
                f"UPDATE review_campaigns SET {column} = ? WHERE id = ? AND {column} IS NULL",
                (format_timestamp(now), campaign_id),
            )
            return bool(cursor.rowcount > 0)

        return await self.db.write(body)

    async def revoke_audit(self, grant: Grant, since: str) -> tuple[str, int] | None:
        """The first applied revocation of ``grant`` at or after ``since``: (at, seq)."""
        rows = await self.db.reader.execute_fetchall(
            sql.FIRST_REVOKE_SINCE,
            (f"user {grant.user}", grant.target, grant.role, since),
        )
        return (rows[0][0], int(rows[0][1])) if rows else None

    async def audit_row(self, seq: int) -> dict[str, Any] | None:
        """One audit row (for evidence manifests)."""
        rows = await self.db.reader.execute_fetchall(
            sql.AUDIT_ROW,
            (seq,),
        )
        if not rows:
            return None
        keys = (
            "seq",
            "at",
            "actor",
            "action",
            "subject",
            "target",
            "role",
            "outcome",
            "detail",
            "prev_hash",
            "hash",
        )
        return dict(zip(keys, rows[0], strict=True))

    async def append_audit(self, entry: AuditEntry) -> int:
        async def body(conn: WriteConn) -> int:
            return await reviews_sql.audit(conn, entry)

        return await self.db.write(body)
