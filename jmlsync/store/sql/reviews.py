"""SQL of access reviews: campaigns, their items and decisions, remediations, exceptions, and
the audit rows a review reads back as evidence."""

from __future__ import annotations

CAMPAIGN_COLUMNS = (
    "id, name, started_at, deadline, snapshot_sha256, audit_seq, items, closed_at, reminded_at"
)

INSERT_CAMPAIGN = (
    "INSERT INTO review_campaigns (id, name, started_at, deadline, started_by,"
    " snapshot_sha256, audit_seq, items) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_ITEM = (
    "INSERT INTO review_items (campaign_id, item_id, user_name, user_key, reviewer,"
    " item) VALUES (?, ?, ?, ?, ?, ?)"
)
#: Optionally followed by :data:`CAMPAIGNS_NAMED`, then :data:`CAMPAIGNS_ORDER`.
CAMPAIGNS = f"SELECT {CAMPAIGN_COLUMNS} FROM review_campaigns"
CAMPAIGNS_NAMED = " WHERE name = ?"
CAMPAIGNS_ORDER = " ORDER BY started_at, id"
CAMPAIGN = f"SELECT {CAMPAIGN_COLUMNS} FROM review_campaigns WHERE id = ?"
ITEMS = "SELECT item FROM review_items WHERE campaign_id = ? ORDER BY item_id"

DECISIONS = (
    "SELECT item_id, decision, reviewer, comment, decided_at, imported_by, late,"
    " audit_seq FROM review_decisions WHERE campaign_id = ? ORDER BY item_id"
)
DELETE_DECISION = "DELETE FROM review_decisions WHERE campaign_id = ? AND item_id = ?"
INSERT_DECISION = (
    "INSERT INTO review_decisions (campaign_id, item_id, decision, reviewer,"
    " comment, decided_at, imported_by, late, audit_seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

APPLIED_DETAILS = "SELECT target, user_name, role, reason, applied_at FROM applied_grants"

#: Optionally followed by :data:`REMEDIATIONS_OF_CAMPAIGN`, then :data:`REMEDIATIONS_ORDER`.
REMEDIATIONS = (
    "SELECT campaign_id, item_id, job_id, requested_at, revoked_at, verified_at,"
    " last_error FROM review_remediations"
)
REMEDIATIONS_OF_CAMPAIGN = " WHERE campaign_id = ?"
REMEDIATIONS_ORDER = " ORDER BY campaign_id, item_id"
#: Optionally followed by ``AND i.user_key IN (?, ...)``.
PENDING_REVOCATIONS = (
    "SELECT i.item FROM review_remediations r JOIN review_items i"
    " ON i.campaign_id = r.campaign_id AND i.item_id = r.item_id"
    " WHERE r.verified_at IS NULL"
)
MARK_REMEDIATED = (
    "UPDATE review_remediations SET revoked_at = coalesce(revoked_at, ?),"
    " verified_at = ?, last_error = ? WHERE campaign_id = ? AND item_id = ?"
)
QUEUE_JOB_OF = "SELECT id FROM queue WHERE user_name = ?"
UPSERT_REMEDIATION = (
    "INSERT INTO review_remediations (campaign_id, item_id, job_id, requested_at)"
    " VALUES (?, ?, ?, ?)"
    " ON CONFLICT (campaign_id, item_id) DO UPDATE SET job_id = excluded.job_id"
)
DELETE_OPEN_REMEDIATION = (
    "DELETE FROM review_remediations WHERE campaign_id = ? AND item_id = ? AND verified_at IS NULL"
)

#: Optionally followed by a ``WHERE`` clause, then `` ORDER BY id``.
EXCEPTIONS = (
    "SELECT id, campaign_id, item_id, target, user_name, role, user_id, causes,"
    " created_at, lifted_at, lifted_reason FROM review_exceptions"
)
EXCEPTION_USER = "SELECT user_name FROM review_exceptions WHERE id = ?"
ACTIVE_EXCEPTIONS = (
    "SELECT id, user_id, user_name, target, role, causes FROM review_exceptions"
    " WHERE lifted_at IS NULL"
)
ACTIVE_EXCEPTIONS_OF_ITEM = (
    "SELECT id, user_name FROM review_exceptions"
    " WHERE campaign_id = ? AND item_id = ? AND lifted_at IS NULL"
)
INSERT_EXCEPTION = (
    "INSERT INTO review_exceptions (campaign_id, item_id, target, user_name, user_key,"
    " user_id, role, causes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
LIFT_EXCEPTION = (
    "UPDATE review_exceptions SET lifted_at = ?, lifted_reason = ?"
    " WHERE id = ? AND lifted_at IS NULL"
)
IS_MEMBER = "SELECT 1 FROM memberships WHERE group_id = ? AND user_id = ?"

FIRST_REVOKE_SINCE = (
    "SELECT at, seq FROM audit WHERE action = 'revoke' AND outcome = 'applied'"
    " AND subject = ? AND target = ? AND role = ? AND at >= ? ORDER BY seq LIMIT 1"
)
AUDIT_ROW = (
    "SELECT seq, at, actor, action, subject, target, role, outcome, detail, prev_hash,"
    " hash FROM audit WHERE seq = ?"
)

#: Followed by the reviewers' placeholders, then :data:`OPEN_ITEMS_ORDER`.
OPEN_ITEMS_OF = (
    "SELECT i.item FROM review_items i JOIN review_campaigns c ON c.id = i.campaign_id"
    " WHERE c.closed_at IS NULL AND lower(i.reviewer) IN "
)
OPEN_ITEMS_ORDER = " ORDER BY c.started_at, i.campaign_id, i.item_id"
