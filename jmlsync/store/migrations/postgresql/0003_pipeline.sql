CREATE TABLE queue (
    id              BIGSERIAL PRIMARY KEY,
    user_name       TEXT NOT NULL UNIQUE,
    leaver          BOOLEAN NOT NULL DEFAULT FALSE,
    cause           TEXT NOT NULL,
    generation      INTEGER NOT NULL DEFAULT 1,
    enqueued_at     TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    leased_until    TEXT,
    lease_owner     TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    failed_at       TEXT
);
CREATE INDEX queue_due ON queue (failed_at, leaver DESC, next_attempt_at, id);

CREATE TABLE leavers (
    id           BIGSERIAL PRIMARY KEY,
    user_name    TEXT NOT NULL,
    user_id      TEXT,
    left_at      TEXT NOT NULL,
    cleared_at   TEXT,
    verified_at  TEXT,
    cancelled_at TEXT
);
CREATE INDEX leavers_open ON leavers (user_name, cleared_at, cancelled_at);
CREATE INDEX leavers_left_at ON leavers (left_at);

CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    target    TEXT,
    role      TEXT,
    outcome   TEXT NOT NULL,
    detail    TEXT,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

CREATE TABLE service_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- The chain's head exists from the start, so the first appends of two replicas lock one row.
INSERT INTO service_state VALUES ('audit_head', repeat('0', 64));
