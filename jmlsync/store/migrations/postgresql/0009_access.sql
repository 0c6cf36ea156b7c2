-- Time-bound access: requests, their approvals and every change of state (never deleted:
-- the history is the evidence), and personal API tokens (only their SHA-256 is kept).
CREATE TABLE access_requests (
    id                BIGSERIAL PRIMARY KEY,
    user_name         TEXT NOT NULL,
    eligibility       TEXT NOT NULL,
    target            TEXT NOT NULL,
    role              TEXT NOT NULL,
    duration_seconds  INTEGER NOT NULL,
    reason            TEXT NOT NULL,
    ticket            TEXT,
    state             TEXT NOT NULL,
    privileged        INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    approved_at       TEXT,
    started_at        TEXT,
    expires_at        TEXT,
    ended_at          TEXT,
    ended_by          TEXT,
    end_reason        TEXT,
    revoked_at        TEXT,
    verified_at       TEXT,
    breached_at       TEXT,
    decided_by        TEXT,
    decision_reason   TEXT,
    extension_seconds INTEGER,
    extension_round   INTEGER NOT NULL DEFAULT 0,
    version           INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX access_requests_state ON access_requests (state, expires_at);
CREATE INDEX access_requests_user ON access_requests (user_name, state);
CREATE INDEX access_requests_ended ON access_requests (ended_at);

CREATE TABLE access_approvals (
    request_id BIGINT NOT NULL REFERENCES access_requests (id),
    round      INTEGER NOT NULL,
    approver   TEXT NOT NULL,
    at         TEXT NOT NULL,
    PRIMARY KEY (request_id, round, approver)
);

CREATE TABLE access_history (
    id         BIGSERIAL PRIMARY KEY,
    request_id BIGINT NOT NULL REFERENCES access_requests (id),
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    detail     TEXT
);
CREATE INDEX access_history_request ON access_history (request_id, id);

CREATE TABLE personal_tokens (
    id          BIGSERIAL PRIMARY KEY,
    user_name   TEXT NOT NULL,
    scope       TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT
);
