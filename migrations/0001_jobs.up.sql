-- One row per job. The id is a ULID stored as uuid: creation time first, then
-- the shard number, then randomness, so the primary key is in creation order.
CREATE TABLE jobs (
    id              uuid        PRIMARY KEY,
    tenant          text        NOT NULL,
    type            text        NOT NULL,
    queue           text        NOT NULL,
    priority        smallint    NOT NULL DEFAULT 0,
    state           text        NOT NULL,
    attempt         integer     NOT NULL DEFAULT 0,
    max_attempts    integer     NOT NULL,
    timeout_ms      bigint      NOT NULL,
    payload         jsonb       NOT NULL,
    result          jsonb,
    error           text,
    progress        jsonb,
    created_at      timestamptz NOT NULL,
    scheduled_at    timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    -- the worker holding the running attempt, and until when its lease holds
    worker_id       text,
    lease_until     timestamptz,
    CONSTRAINT jobs_state_check CHECK (state IN
        ('scheduled', 'queued', 'running', 'retrying', 'succeeded', 'dead', 'cancelled'))
);

-- Listing a tenant's jobs newest first, optionally by state.
CREATE INDEX jobs_tenant_id ON jobs (tenant, id DESC);

-- Jobs that wait for a time (delayed, retrying): the scheduler's due query.
CREATE INDEX jobs_due ON jobs (scheduled_at) WHERE state IN ('scheduled', 'retrying');

-- Running jobs by lease: the reaper's query.
CREATE INDEX jobs_lease ON jobs (lease_until) WHERE state = 'running';
