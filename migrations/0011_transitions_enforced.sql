-- Postgres refuses a transition that lifecycle.TRANSITIONS does not list (issue 18, item 1).
--
-- * cancellation_transitions holds every (from, to, cause) a cancellation may make, the
--   same set as orchestrator.domain.lifecycle.TRANSITIONS (a NULL from_status is the enqueue:
--   no status before it); tests/integration/test_transitions_table.py keeps the two equal.
-- * Every history row inserted into cancellation_events is checked against it (from, to,
--   cause), and a change of cancellations.status (or a new row's status) whose pair appears
--   in no transition is refused: a bare `UPDATE cancellations SET status = 'queued'` on a
--   confirmed row raises instead of rewriting the past.
-- * Both raise SQLSTATE TR001 (a class of our own: I-Z are free for applications), which
--   the store maps to errors.IllegalTransition: a bug, never a client's error.

CREATE TABLE cancellation_transitions (
    from_status text,
    to_status text NOT NULL,
    cause text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_status, to_status, cause)
);

INSERT INTO cancellation_transitions (from_status, to_status, cause) VALUES
    (NULL, 'queued', 'enqueued'),
    ('awaiting_confirmation', 'confirmed', 'webhook'),
    ('awaiting_confirmation', 'failed', 'abandoned'),
    ('awaiting_confirmation', 'failed', 'webhook'),
    ('awaiting_confirmation', 'queued', 'confirmation_overdue'),
    ('awaiting_confirmation', 'queued', 'retry_requested'),
    ('awaiting_confirmation', 'queued', 'webhook_needs_check'),
    ('queued', 'confirmed', 'webhook'),
    ('queued', 'failed', 'abandoned'),
    ('queued', 'failed', 'webhook'),
    ('queued', 'queued', 'retry_requested'),
    ('queued', 'queued', 'webhook_needs_check'),
    ('queued', 'sending', 'claimed'),
    ('sending', 'awaiting_confirmation', 'provider_queued_cancel'),
    ('sending', 'confirmed', 'provider_answered'),
    ('sending', 'confirmed', 'status_check'),
    ('sending', 'confirmed', 'webhook'),
    ('sending', 'failed', 'abandoned'),
    ('sending', 'failed', 'gave_up'),
    ('sending', 'failed', 'provider_answered'),
    ('sending', 'failed', 'status_check'),
    ('sending', 'failed', 'webhook'),
    ('sending', 'queued', 'lease_expired'),
    ('sending', 'queued', 'owner_gone'),
    ('sending', 'queued', 'released_on_shutdown'),
    ('sending', 'queued', 'retry_scheduled'),
    ('sending', 'queued', 'throttled');

-- A history row whose (from, to, cause) is no transition is refused.
CREATE FUNCTION check_event_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM cancellation_transitions t
                   WHERE t.from_status IS NOT DISTINCT FROM NEW.from_status
                     AND t.to_status = NEW.to_status AND t.cause = NEW.cause) THEN
        RAISE EXCEPTION 'illegal transition of cancellation %: % -> % (cause %)',
                        NEW.cancellation_id, coalesce(NEW.from_status, '(none)'),
                        NEW.to_status, NEW.cause
            USING ERRCODE = 'TR001',
                  DETAIL = 'cancellation_transitions (lifecycle.TRANSITIONS) does not list it';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER event_is_a_transition BEFORE INSERT ON cancellation_events
FOR EACH ROW EXECUTE FUNCTION check_event_transition();

-- A status (new, or changed) that no transition reaches from the row's status is refused.
CREATE FUNCTION check_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    was text := CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END;
BEGIN
    IF was = NEW.status THEN  -- unchanged (a self-transition's pair is listed anyway)
        RETURN NEW;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM cancellation_transitions t
                   WHERE t.from_status IS NOT DISTINCT FROM was
                     AND t.to_status = NEW.status) THEN
        RAISE EXCEPTION 'illegal transition of cancellation %: % -> %',
                        NEW.id, coalesce(was, '(none)'), NEW.status
            USING ERRCODE = 'TR001',
                  DETAIL = 'cancellation_transitions (lifecycle.TRANSITIONS) lists no such move';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER status_change_is_a_transition BEFORE INSERT OR UPDATE OF status ON cancellations
FOR EACH ROW EXECUTE FUNCTION check_status_change();
