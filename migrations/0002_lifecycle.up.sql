-- The full job lifecycle: idempotency keys, completion callbacks, heartbeats,
-- and the indexes that listing and queue statistics use.
ALTER TABLE jobs
    ADD COLUMN idempotency_key   text,
    -- SHA-256 of the canonical request, to tell a replay from a different body
    ADD COLUMN request_hash      bytea,
    ADD COLUMN callback_url      text,
    -- pending (to deliver), delivered, failed (gave up); NULL without a callback
    ADD COLUMN callback_state    text,
    ADD COLUMN callback_attempts jsonb,
    ADD COLUMN callback_next_at  timestamptz,
    ADD COLUMN heartbeat_at      timestamptz;

CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_callbacks_due ON jobs (callback_next_at) WHERE callback_state = 'pending';
CREATE INDEX jobs_tenant_state_id ON jobs (tenant, state, id DESC);
CREATE INDEX jobs_queue_state ON jobs (queue, state);
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
