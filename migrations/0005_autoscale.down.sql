DROP INDEX IF EXISTS jobs_queued_since;
