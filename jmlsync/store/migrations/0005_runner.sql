-- Which process ran each scheduled run (several replicas may share one database).
ALTER TABLE runs ADD COLUMN runner TEXT;
