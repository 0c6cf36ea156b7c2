"""SQL of console sessions and of the sign-ins under way (rows keyed by hashes only)."""

from __future__ import annotations

DELETE_STALE_LOGINS = "DELETE FROM console_logins WHERE created_at < ?"
INSERT_LOGIN = (
    "INSERT INTO console_logins (state_hash, nonce, verifier, return_to, created_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
TAKE_LOGIN = (
    "DELETE FROM console_logins WHERE state_hash = ?"
    " RETURNING nonce, verifier, return_to, created_at"
)

DELETE_EXPIRED_SESSIONS = "DELETE FROM console_sessions WHERE expires_at < ? OR last_seen_at < ?"
INSERT_SESSION = (
    "INSERT INTO console_sessions (token_hash, user_name, csrf_token, created_at,"
    " last_seen_at, expires_at, claims) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
SESSION = (
    "SELECT user_name, csrf_token, created_at, last_seen_at, expires_at, claims"
    " FROM console_sessions WHERE token_hash = ?"
)
TOUCH_SESSION = "UPDATE console_sessions SET last_seen_at = ? WHERE token_hash = ?"
DELETE_SESSION = "DELETE FROM console_sessions WHERE token_hash = ?"
