-- Alerts as rows (the outbox): written when raised, posted to the webhook from here, so an
-- alert survives exit and crash. state: pending (to deliver), delivered, suppressed (a
-- duplicate inside the de-duplication window), unrouted (no webhook was configured).
CREATE TABLE alert_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,
    key             TEXT NOT NULL,
    text            TEXT NOT NULL,
    fields          TEXT NOT NULL,                -- JSON
    state           TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    leased_by       TEXT,
    leased_until    TEXT,
    delivered_at    TEXT,
    last_error      TEXT
);
CREATE INDEX alert_outbox_due ON alert_outbox (state, next_attempt_at);
CREATE INDEX alert_outbox_created ON alert_outbox (created_at);

-- The de-duplication window of each alert kind and key: when it was last opened.
CREATE TABLE alert_windows (
    kind      TEXT NOT NULL,
    key       TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
