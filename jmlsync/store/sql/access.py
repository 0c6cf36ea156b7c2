"""SQL of time-bound access: requests, their approvals and history, personal tokens."""

from __future__ import annotations

REQUEST_COLUMNS = (
    "id, user_name, eligibility, target, role, duration_seconds, reason, ticket, state,"
    " privileged, created_at, approved_at, started_at, expires_at, ended_at, ended_by,"
    " end_reason, revoked_at, verified_at, breached_at, decided_by, decision_reason,"
    " extension_seconds, extension_round, version"
)
#: The columns a request's steps change (in the order of ``_values``).
REQUEST_MUTABLE = (
    "state, duration_seconds, approved_at, started_at, expires_at, ended_at, ended_by,"
    " end_reason, revoked_at, verified_at, breached_at, decided_by, decision_reason,"
    " extension_seconds, extension_round"
)

HISTORY = (
    "SELECT at, actor, action, from_state, to_state, detail FROM access_history"
    " WHERE request_id = ? ORDER BY id"
)
INSERT_HISTORY = (
    "INSERT INTO access_history (request_id, at, actor, action, from_state, to_state,"
    " detail) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_APPROVAL = (
    "INSERT INTO access_approvals (request_id, round, approver, at) VALUES (?, ?, ?, ?)"
)
#: Followed by ``(?, ...)`` for a chunk of request ids, then :data:`APPROVALS_ORDER`.
APPROVALS_OF = "SELECT request_id, approver, at, round FROM access_approvals WHERE request_id IN"
APPROVALS_ORDER = " ORDER BY at, approver"
INSERT_REQUEST = (
    "INSERT INTO access_requests (user_name, eligibility, target, role, reason, ticket,"
    f" privileged, created_at, {REQUEST_MUTABLE}) VALUES ({', '.join('?' * 23)}) RETURNING id"
)

INSERT_TOKEN = (
    "INSERT INTO personal_tokens (user_name, scope, token_hash, created_at,"
    " expires_at) VALUES (?, ?, ?, ?, ?) RETURNING id"
)
TOKENS = (
    "SELECT id, user_name, scope, created_at, expires_at, revoked_at"
    " FROM personal_tokens ORDER BY id DESC"
)
TOKEN_BY_HASH = (
    "SELECT id, user_name, scope, created_at, expires_at, revoked_at"
    " FROM personal_tokens WHERE token_hash = ?"
)
REVOKE_TOKEN = (
    "UPDATE personal_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
    " RETURNING user_name"
)
