DROP TRIGGER jobs_queue_callback ON jobs;
DROP FUNCTION jobs_queue_callback();
