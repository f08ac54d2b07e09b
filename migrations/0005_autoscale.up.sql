-- The autoscaler's per-queue figures (issue 4): how many jobs wait and since
-- when the oldest has waited. A small partial index (queued rows only), so
-- that the count reads no heap pages once vacuumed and the oldest is one
-- index probe, however long the backlog, every few seconds.
CREATE INDEX jobs_queued_since ON jobs (queue, queued_at) WHERE state = 'queued';
