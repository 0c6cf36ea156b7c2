-- The provisioning queue: one pending row per principal (userName), coalesced, leased.
CREATE TABLE queue (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name       TEXT NOT NULL UNIQUE,
    leaver          INTEGER NOT NULL DEFAULT 0,  -- a deactivation or delete: taken first
    cause           TEXT NOT NULL,               -- the last change that enqueued it
    generation      INTEGER NOT NULL DEFAULT 1,  -- grows on every coalesced enqueue
    enqueued_at     TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    leased_until    TEXT,
    lease_owner     TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    failed_at       TEXT                         -- dead-lettered when set
);
CREATE INDEX queue_due ON queue (failed_at, leaver DESC, next_attempt_at, id);

-- One row per leaver event: deactivated or deleted, until cleared (and later verified).
CREATE TABLE leavers (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name    TEXT NOT NULL,
    user_id      TEXT,
    left_at      TEXT NOT NULL,
    cleared_at   TEXT,
    verified_at  TEXT,
    cancelled_at TEXT                            -- re-activated before being cleared
);
CREATE INDEX leavers_open ON leavers (user_name, cleared_at, cancelled_at);
CREATE INDEX leavers_left_at ON leavers (left_at);

-- Append-only, hash-chained audit log (see jmlsync/audit.py).
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
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

-- Small facts the service keeps between runs (e.g. the fingerprint of the rules).
CREATE TABLE service_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
