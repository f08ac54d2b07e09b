-- A job with a callback_url gets its callback queued for delivery the moment
-- it reaches a terminal state, whichever process moved it there, and a retried
-- job gets a fresh callback. Keeping the rule here means no code path can
-- forget it.
CREATE FUNCTION jobs_queue_callback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.callback_url IS NOT NULL THEN
        IF NEW.state IN ('succeeded', 'dead', 'cancelled')
           AND OLD.state NOT IN ('succeeded', 'dead', 'cancelled') THEN
            NEW.callback_state := 'pending';
            NEW.callback_next_at := now();
        ELSIF NEW.state NOT IN ('succeeded', 'dead', 'cancelled')
           AND OLD.state IN ('succeeded', 'dead', 'cancelled') THEN
            NEW.callback_state := NULL;
            NEW.callback_next_at := NULL;
            NEW.callback_attempts := NULL;
        END IF;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER jobs_queue_callback BEFORE UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION jobs_queue_callback();
