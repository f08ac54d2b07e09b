DROP TABLE cron_ticks;
DROP TRIGGER jobs_stamp_queued ON jobs;
DROP FUNCTION jobs_stamp_queued();
DROP INDEX jobs_unpublished;
ALTER TABLE jobs
    DROP COLUMN published_at,
    DROP COLUMN queued_at;
