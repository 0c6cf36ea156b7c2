-- Web console sessions, server-side: the cookie holds a random token, the table only its
-- SHA-256, so a copy of the store signs nobody in. expires_at is the absolute end; the idle
-- end is last_seen_at plus [console].idle_timeout_seconds, checked on each request.
CREATE TABLE console_sessions (
    token_hash   TEXT PRIMARY KEY,
    user_name    TEXT NOT NULL,
    csrf_token   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    claims       TEXT NOT NULL                 -- JSON: what the ID token said, for display
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);

-- Sign-ins under way: the state sent to the issuer, with the nonce and PKCE verifier it must
-- come back to. Kept in the store so a sign-in survives a restart or lands on another replica.
CREATE TABLE console_logins (
    state_hash TEXT PRIMARY KEY,
    nonce      TEXT NOT NULL,
    verifier   TEXT NOT NULL,
    return_to  TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX console_logins_created ON console_logins (created_at);
