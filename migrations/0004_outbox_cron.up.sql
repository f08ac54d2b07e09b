-- The outbox and cron state of the scheduler (issue 4).
--
-- A queued job needs a message in RabbitMQ. queued_at is when the job last
-- became queued (kept by the trigger below; for a job inserted in another
-- state it is its insert time until then); published_at is when a message
-- for it was last confirmed by RabbitMQ. A queued job whose published_at is
-- missing or older than its queued_at has no confirmed message for this
-- spell in the queue: the scheduler's relay publishes it. Whoever publishes
-- in the transaction that makes the job queued (dispatch, reaper) sets
-- published_at = now() there, equal to queued_at; the api marks its jobs
-- published after the confirm, in batches.
--
-- Rows present before this migration get queued_at = the migration's time
-- and no published_at: the relay publishes every queued one once, since
-- nothing recorded whether they were. Duplicates are harmless (a worker's
-- claim succeeds once).
ALTER TABLE jobs
    ADD COLUMN queued_at    timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN published_at timestamptz;

-- The relay's query: queued jobs without a confirmed message, oldest first.
-- Small by construction: a job leaves it when published or claimed.
CREATE INDEX jobs_unpublished ON jobs (queued_at)
    WHERE state = 'queued' AND (published_at IS NULL OR published_at < queued_at);

-- Every transition into queued (insert aside, which takes the default)
-- stamps queued_at, whichever code path makes it: dispatch, reaper, a
-- worker handing a job back, a retry by hand. A path that does not publish
-- in the same transaction thereby leaves the job to the relay.
CREATE FUNCTION jobs_stamp_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.queued_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER jobs_stamp_queued BEFORE UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.state = 'queued' AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION jobs_stamp_queued();

-- Cron: the last tick enqueued per cron entry, so that a new leader knows
-- which tick it missed. Only shard 0's table is used (the shard that holds
-- the leader lock); the migration creates it on every shard like the rest.
CREATE TABLE cron_ticks (
    name       text        PRIMARY KEY,
    -- the schedule the tick was computed from: a changed schedule starts
    -- afresh instead of catching up a "missed" tick of the new one
    schedule   text        NOT NULL,
    last_tick  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
