"""SQL of what proves jmlsync's work: leaver events and their per-target clears, movers'
revocations, drift findings, the record of scheduled runs, and housekeeping's pruning."""

from __future__ import annotations

LEAVER_COLUMNS = (
    "id, user_name, left_at, cleared_at, verified_at, breached_at, breach_cause, regranted_at"
)

UNVERIFIED_LEAVERS = (
    "SELECT id, user_name, left_at, cleared_at, breached_at FROM leavers"
    " WHERE verified_at IS NULL AND cancelled_at IS NULL ORDER BY left_at"
)
MARK_LEAVER_VERIFIED = "UPDATE leavers SET verified_at = ? WHERE id = ? AND verified_at IS NULL"
MARK_LEAVER_BREACHED = (
    "UPDATE leavers SET breached_at = ?, breach_alerted_at = ?, breach_cause = ?"
    " WHERE id = ? AND breached_at IS NULL"
)
#: The user's newest leaver event (not cancelled): its id and verified_at.
NEWEST_LEAVER = (
    "SELECT id, verified_at FROM leavers WHERE user_name = ? AND cancelled_at IS NULL"
    " ORDER BY left_at DESC, id DESC LIMIT 1"
)
MARK_LEAVER_REGRANTED = (
    "UPDATE leavers SET regranted_at = ?, breach_cause = ?, verified_at = NULL,"
    " breached_at = coalesce(breached_at, ?),"
    " breach_alerted_at = coalesce(breach_alerted_at, ?) WHERE id = ?"
)
LEAVER_TARGETS = "SELECT target, cleared_at, last_error FROM leaver_targets WHERE leaver_id = ?"
LEAVERS_IN_WINDOW = (
    f"SELECT {LEAVER_COLUMNS} FROM leavers"
    " WHERE cancelled_at IS NULL AND left_at >= ? AND left_at < ? ORDER BY left_at"
)
LATEST_LEAVER = (
    f"SELECT {LEAVER_COLUMNS} FROM leavers"
    " WHERE user_name = ? AND cancelled_at IS NULL ORDER BY left_at DESC, id DESC"
    " LIMIT 1"
)
#: Each open leaver event with each target it was cleared on (NULL for none).
OPEN_LEAVER_CLEARS = (
    "SELECT l.id, t.target FROM leavers l LEFT JOIN leaver_targets t"
    " ON t.leaver_id = l.id AND t.cleared_at IS NOT NULL"
    " WHERE l.cleared_at IS NULL AND l.cancelled_at IS NULL"
)
#: A leaver's revocations and disables since it left, per target, action and outcome.
LEAVER_OPERATIONS = (
    "SELECT target, action, outcome, max(at), count(*) FROM audit"
    " WHERE subject = ? AND at >= ? AND target IS NOT NULL"
    " AND action IN ('revoke', 'disable') GROUP BY target, action, outcome"
)
OPEN_BREACHES = (
    "SELECT count(*) FROM leavers WHERE breached_at IS NOT NULL AND verified_at IS NULL"
    " AND cancelled_at IS NULL"
)

MOVER_COLUMNS = (
    "id, user_name, target, role, requested_at, revoked_at, verified_at, breached_at, cause, actor"
)
INSERT_MOVER = (
    "INSERT INTO mover_revocations (user_name, target, role, requested_at, revoked_at,"
    " actor) VALUES (?, ?, ?, ?, ?, ?)"
)
UNVERIFIED_MOVERS = (
    f"SELECT {MOVER_COLUMNS} FROM mover_revocations WHERE verified_at IS NULL"
    " ORDER BY requested_at, id"
)
MARK_MOVER_VERIFIED = (
    "UPDATE mover_revocations SET verified_at = ? WHERE id = ? AND verified_at IS NULL"
)
MARK_MOVER_BREACHED = (
    "UPDATE mover_revocations SET breached_at = ?, cause = ? WHERE id = ? AND breached_at IS NULL"
)
MOVERS_IN_WINDOW = (
    f"SELECT {MOVER_COLUMNS} FROM mover_revocations WHERE requested_at >= ?"
    " AND requested_at < ? ORDER BY requested_at, id"
)
#: Revocations not verified yet, and open breaches.
MOVER_COUNTS = (
    "SELECT count(*) FILTER (WHERE verified_at IS NULL),"
    " count(*) FILTER (WHERE breached_at IS NOT NULL AND verified_at IS NULL)"
    " FROM mover_revocations"
)

#: Keep an open finding seen again: changes no row when the finding is new.
TOUCH_DRIFT = (
    "UPDATE drift SET last_seen = ? WHERE kind = ? AND target = ?"
    " AND user_name = ? AND role = ? AND resolved_at IS NULL"
)
INSERT_DRIFT = (
    "INSERT INTO drift (kind, target, user_name, role, first_seen, last_seen)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
OPEN_DRIFT = (
    "SELECT kind, target, user_name, role, first_seen, last_seen FROM drift"
    " WHERE resolved_at IS NULL ORDER BY kind, target, user_name, role"
)
UNRESOLVED_DRIFT = "SELECT id, kind, target, user_name, role FROM drift WHERE resolved_at IS NULL"
RESOLVE_DRIFT = "UPDATE drift SET resolved_at = ? WHERE id = ?"

INSERT_RUN = "INSERT INTO runs (job, started_at, runner) VALUES (?, ?, ?) RETURNING id"
FINISH_RUN = "UPDATE runs SET finished_at = ?, outcome = ?, counts = ?, detail = ? WHERE id = ?"
LAST_RUNS = (
    "SELECT job, started_at, finished_at, outcome, counts, detail FROM runs"
    " WHERE id IN (SELECT max(id) FROM runs GROUP BY job) ORDER BY job"
)

#: Housekeeping: (table, the statement deleting its rows older than the cutoff). Every ``?``
#: is the cutoff.
PRUNE_BY_AGE = (
    ("runs", "DELETE FROM runs WHERE started_at < ?"),
    ("drift", "DELETE FROM drift WHERE resolved_at IS NOT NULL AND resolved_at < ?"),
    ("mover_revocations", "DELETE FROM mover_revocations WHERE requested_at < ?"),
    ("leavers", "DELETE FROM leavers WHERE (verified_at < ? OR cancelled_at < ?)"),
)
#: The newest audit row older than the cutoff: the chain's anchor after the prune.
LAST_AUDIT_BEFORE = "SELECT seq, hash FROM audit WHERE at < ? ORDER BY seq DESC LIMIT 1"
DELETE_AUDIT_THROUGH = "DELETE FROM audit WHERE seq <= ?"
