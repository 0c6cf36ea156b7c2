CREATE TABLE applied_grants (
    target     TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    role       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (target, user_name, role)
);
CREATE INDEX applied_grants_user ON applied_grants (user_name);
