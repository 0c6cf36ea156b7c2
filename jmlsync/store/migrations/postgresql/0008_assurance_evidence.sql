-- Movers' revocations are read back like leavers: verified_at once the target no longer holds
-- the role, breached_at (and cause) when the read-back or the time says it missed the SLA;
-- actor is who revoked it (pipeline or reconcile).
ALTER TABLE mover_revocations ADD COLUMN actor TEXT;
ALTER TABLE mover_revocations ADD COLUMN verified_at TEXT;
ALTER TABLE mover_revocations ADD COLUMN breached_at TEXT;
ALTER TABLE mover_revocations ADD COLUMN cause TEXT;
CREATE INDEX mover_revocations_open ON mover_revocations (verified_at, breached_at);

-- Why a leaver breached (what the read-back found, the error keeping a target pending), and
-- when a verified leaver's revoked access was found again in a target (re-granted by hand).
ALTER TABLE leavers ADD COLUMN breach_cause TEXT;
ALTER TABLE leavers ADD COLUMN regranted_at TEXT;
