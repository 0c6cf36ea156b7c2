-- Leaver verification and SLA breaches.
ALTER TABLE leavers ADD COLUMN breached_at TEXT;     -- the SLA passed without verification
ALTER TABLE leavers ADD COLUMN breach_alerted_at TEXT;

-- Revocations caused by movers, with the time of the change that caused them.
CREATE TABLE mover_revocations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name    TEXT NOT NULL,
    target       TEXT NOT NULL,
    role         TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    revoked_at   TEXT NOT NULL
);
CREATE INDEX mover_revocations_at ON mover_revocations (requested_at);

-- Drift found by full reconciliation: what the targets hold against what the rules want.
CREATE TABLE drift (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,                    -- missing | unmanaged
    target      TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    role        TEXT NOT NULL,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    resolved_at TEXT
);
CREATE UNIQUE INDEX drift_open ON drift (kind, target, user_name, role) WHERE resolved_at IS NULL;

-- Every scheduled run: full reconciliation, leaver verification, housekeeping.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job         TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT,                             -- ok | held | failed | skipped
    counts      TEXT,                             -- JSON
    detail      TEXT
);
CREATE INDEX runs_job ON runs (job, started_at);
