-- Per-target isolation: a job that failed on some targets retries only those (JSON array of
-- target names); NULL means every target. A new change for the principal sets it back to NULL.
ALTER TABLE queue ADD COLUMN pending_targets TEXT;

-- Each leaver event's outcome per target (see the SQLite migration of the same number).
CREATE TABLE leaver_targets (
    leaver_id    BIGINT NOT NULL REFERENCES leavers (id) ON DELETE CASCADE,
    target       TEXT NOT NULL,
    attempted_at TEXT NOT NULL,
    cleared_at   TEXT,
    last_error   TEXT,
    PRIMARY KEY (leaver_id, target)
);
