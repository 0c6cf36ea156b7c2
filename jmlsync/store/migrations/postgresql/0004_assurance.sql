ALTER TABLE leavers ADD COLUMN breached_at TEXT;
ALTER TABLE leavers ADD COLUMN breach_alerted_at TEXT;

CREATE TABLE mover_revocations (
    id           BIGSERIAL PRIMARY KEY,
    user_name    TEXT NOT NULL,
    target       TEXT NOT NULL,
    role         TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    revoked_at   TEXT NOT NULL
);
CREATE INDEX mover_revocations_at ON mover_revocations (requested_at);

CREATE TABLE drift (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL,
    target      TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    role        TEXT NOT NULL,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    resolved_at TEXT
);
CREATE UNIQUE INDEX drift_open ON drift (kind, target, user_name, role) WHERE resolved_at IS NULL;

CREATE TABLE runs (
    id          BIGSERIAL PRIMARY KEY,
    job         TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT,
    counts      TEXT,
    detail      TEXT
);
CREATE INDEX runs_job ON runs (job, started_at);
