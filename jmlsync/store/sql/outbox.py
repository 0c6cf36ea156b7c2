"""SQL of the alert outbox: alerts as rows, the de-duplication windows, leased delivery."""

from __future__ import annotations

ALERT_COLUMNS = (
    "id, kind, key, text, fields, state, created_at, attempts, next_attempt_at,"
    " delivered_at, last_error"
)

#: Opens (or re-opens, once it is older than the window) the window of a kind and key;
#: returns a row only when it did.
OPEN_WINDOW = (
    "INSERT INTO alert_windows (kind, key, opened_at) VALUES (?, ?, ?)"
    " ON CONFLICT (kind, key) DO UPDATE SET opened_at = excluded.opened_at"
    " WHERE alert_windows.opened_at <= ? RETURNING opened_at"
)
INSERT_ALERT = (
    "INSERT INTO alert_outbox (kind, key, text, fields, state, created_at, next_attempt_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
PRUNE_ALERTS = (
    "DELETE FROM alert_outbox WHERE (state = ? AND delivered_at < ?)"
    " OR (state IN (?, ?) AND created_at < ?)"
)
PRUNE_WINDOWS = "DELETE FROM alert_windows WHERE opened_at < ?"

RENEW_LEASE = "UPDATE alert_outbox SET leased_until = ? WHERE id = ? AND leased_by = ?"
MARK_DELIVERED = (
    "UPDATE alert_outbox SET state = ?, delivered_at = ?, attempts = attempts + ?,"
    " next_attempt_at = NULL, leased_by = NULL, leased_until = NULL"
    " WHERE id = ? AND leased_by = ?"
)
MARK_FAILED = (
    "UPDATE alert_outbox SET attempts = attempts + ?, last_error = ?,"
    " next_attempt_at = ?, leased_by = NULL, leased_until = NULL"
    " WHERE id = ? AND leased_by = ?"
)
#: Pending rows leased by another deliverer or due; followed by ``(?, ...)`` for the ids.
IN_FLIGHT_AMONG = (
    "SELECT count(*) FROM alert_outbox WHERE state = ? AND ("
    " (leased_until > ? AND leased_by <> ?)"
    " OR (next_attempt_at <= ? AND (leased_until IS NULL OR leased_until <= ?)))"
    " AND id IN"
)
NEXT_DUE = (
    "SELECT min(CASE WHEN leased_until IS NOT NULL AND leased_until > next_attempt_at"
    " THEN leased_until ELSE next_attempt_at END) FROM alert_outbox WHERE state = ?"
)
STATS = "SELECT count(*), min(created_at) FROM alert_outbox WHERE state = ?"
