-- Access reviews: campaigns, the snapshot's items, decisions, remediation and exceptions.
CREATE TABLE review_campaigns (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    deadline        TEXT NOT NULL,
    started_by      TEXT NOT NULL,
    snapshot_sha256 TEXT NOT NULL,
    audit_seq       INTEGER,                  -- the audit row that anchors the snapshot's hash
    items           INTEGER NOT NULL,
    reminded_at     TEXT,
    closed_at       TEXT,                     -- the deadline was acted on
    auto_revoked_at TEXT                      -- the deadline's revocations were all read back
);
CREATE INDEX review_campaigns_name ON review_campaigns (name, started_at);

-- One grant under review, as the target held it at the snapshot (the item as JSON).
CREATE TABLE review_items (
    campaign_id TEXT NOT NULL,
    item_id     INTEGER NOT NULL,
    user_name   TEXT NOT NULL,
    user_key    TEXT NOT NULL,                -- user_name casefolded (as users.user_name_key)
    reviewer    TEXT,
    item        TEXT NOT NULL,
    PRIMARY KEY (campaign_id, item_id)
);

CREATE TABLE review_decisions (
    campaign_id TEXT NOT NULL,
    item_id     INTEGER NOT NULL,
    decision    TEXT NOT NULL,                -- keep | revoke
    reviewer    TEXT NOT NULL,                -- who decided ("(no decision)" at the deadline)
    comment     TEXT NOT NULL,
    decided_at  TEXT NOT NULL,
    imported_by TEXT NOT NULL,
    late        INTEGER NOT NULL DEFAULT 0,   -- imported after the deadline by an admin
    audit_seq   INTEGER,
    PRIMARY KEY (campaign_id, item_id)
);

-- Each revoke decision carried out: queued as a job, revoked, read back as gone.
CREATE TABLE review_remediations (
    campaign_id     TEXT NOT NULL,
    item_id         INTEGER NOT NULL,
    job_id          INTEGER,
    requested_at    TEXT NOT NULL,
    revoked_at      TEXT,
    verified_at     TEXT,
    last_error      TEXT,
    PRIMARY KEY (campaign_id, item_id)
);

-- A rule-given grant a review revoked, held back until the membership that caused it changes.
CREATE TABLE review_exceptions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id   TEXT NOT NULL,
    item_id       INTEGER NOT NULL,
    target        TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    user_key      TEXT NOT NULL,
    user_id       TEXT,
    role          TEXT NOT NULL,
    causes        TEXT NOT NULL,              -- JSON [[rule, group id, group name], ...]
    created_at    TEXT NOT NULL,
    lifted_at     TEXT,
    lifted_reason TEXT
);
CREATE INDEX review_exceptions_user ON review_exceptions (user_key);
CREATE INDEX review_items_user ON review_items (user_key);
