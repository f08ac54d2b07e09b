-- jobs is a queue table: every job is inserted, updated three times and
-- eventually deleted, so dead row versions pile up at the rate of the job
-- path. Postgres's defaults vacuum a table once a fifth of it is dead, which
-- for a table of a million jobs means a quarter of a million dead versions
-- that every index scan on state (the claim's backlog, GET /v1/queues, the
-- relay) wades through first. Vacuum and analyse after about 2 % instead,
-- and let the vacuum run without the default cost throttling, so that it
-- keeps up with the churn and the planner's figures stay current.
ALTER TABLE jobs SET (
	autovacuum_vacuum_scale_factor = 0.02,
	autovacuum_vacuum_threshold = 1000,
	autovacuum_vacuum_insert_scale_factor = 0.02,
	autovacuum_analyze_scale_factor = 0.02,
	autovacuum_analyze_threshold = 1000,
	autovacuum_vacuum_cost_delay = 0
);
