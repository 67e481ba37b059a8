-- Postgres refuses a transition that lifecycle.TRANSITIONS does not list, and one place
-- writes the history (issue 18, items 1 and 2).
--
-- * cancellation_transitions holds every (from, to, cause) a cancellation may make, the
--   same set as orchestrator.domain.lifecycle.TRANSITIONS (a NULL from_status is the enqueue:
--   no status before it); tests/integration/test_transitions_table.py keeps the two equal.
-- * Every history row inserted into cancellation_events is checked against it (from, to,
--   cause), and so is every transition of a cancellation (a new row, a changed status, or a
--   cause given): a bare `UPDATE cancellations SET status = 'queued'` on a confirmed row
--   raises instead of rewriting the past.
-- * One writer of the history: the trigger record_transition. A writer of a transition puts
--   its cause and evidence on the row in the same INSERT or UPDATE (transition_cause,
--   transition_evidence); the trigger checks it, writes the history row (from OLD.status to
--   NEW.status, at NEW.updated_at) and, on an update, clears the two columns before the row
--   is stored, so they cost no space past the enqueue. In-server: no round trip added.
--   Every function and statement that inserted history rows by hand now only sets the two
--   columns (the functions below; queries.sql's requeues and release).
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

-- The transition's cause and evidence, set by its writer; moved into the history by
-- record_transition (NULL once the row has been updated; the enqueue's until then).
ALTER TABLE cancellations ADD COLUMN transition_cause text, ADD COLUMN transition_evidence jsonb;

-- The one writer of cancellation_events: a BEFORE UPDATE trigger (so it can clear the
-- columns) and an AFTER INSERT one (a BEFORE INSERT trigger would also fire for an insert
-- that ON CONFLICT DO NOTHING then skips, and write history for a row that never was).
CREATE FUNCTION record_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    was text := CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM cancellation_transitions t
                   WHERE t.from_status IS NOT DISTINCT FROM was
                     AND t.to_status = NEW.status AND t.cause = NEW.transition_cause) THEN
        RAISE EXCEPTION 'illegal transition of cancellation %: % -> % (cause %)',
                        NEW.id, coalesce(was, '(none)'), NEW.status,
                        coalesce(NEW.transition_cause, '(none given)')
            USING ERRCODE = 'TR001',
                  DETAIL = 'cancellation_transitions (lifecycle.TRANSITIONS) does not list it';
    END IF;
    INSERT INTO cancellation_events (cancellation_id, at, from_status, to_status, cause,
                                     evidence)
    VALUES (NEW.id, NEW.updated_at, was, NEW.status, NEW.transition_cause,
            coalesce(NEW.transition_evidence, '{}'));
    IF TG_OP = 'UPDATE' THEN
        NEW.transition_cause := NULL;
        NEW.transition_evidence := NULL;
    END IF;
    RETURN NEW;
END;
$$;

-- A transition is an update that changes the status or gives a cause (a self-transition,
-- queued -> queued, changes only the cause). The enqueue's cause stays on the row until its
-- first update, which is a transition only if it changes the status or names a new cause.
CREATE TRIGGER transition BEFORE UPDATE ON cancellations
FOR EACH ROW
WHEN (NEW.status IS DISTINCT FROM OLD.status
      OR NEW.transition_cause IS DISTINCT FROM OLD.transition_cause)
EXECUTE FUNCTION record_transition();

CREATE TRIGGER transition_on_insert AFTER INSERT ON cancellations
FOR EACH ROW EXECUTE FUNCTION record_transition();

-- Carry out one transition if the row's version is still p_version (p_from is the status
-- the caller read at that version: under the fence, the row's own).
CREATE OR REPLACE FUNCTION apply_decision(
    p_id uuid, p_version bigint, p_from text, p_now timestamptz, p_decision jsonb,
    p_submitted boolean
) RETURNS SETOF cancellations
LANGUAGE sql AS $$
    WITH updated AS (
        UPDATE cancellations
        SET status = p_decision ->> 'status',
            version = version + 1,
            updated_at = p_now,
            attempts = attempts
                - CASE WHEN (p_decision ->> 'refund_attempt')::boolean THEN 1 ELSE 0 END,
            next_attempt_at = (p_decision ->> 'next_attempt_at')::timestamptz,
            confirm_by = coalesce((p_decision ->> 'confirm_by')::timestamptz, confirm_by),
            outcome = coalesce(p_decision ->> 'outcome', outcome),
            confirmed_via = p_decision ->> 'confirmed_via',
            confirmed_at = CASE WHEN p_decision ->> 'status' = 'confirmed' THEN p_now END,
            last_error = coalesce(p_decision -> 'error', last_error),
            provider_state = coalesce(p_decision -> 'provider_state', provider_state),
            submitted_at = CASE WHEN p_submitted THEN p_now ELSE submitted_at END,
            needs_check = coalesce((p_decision ->> 'needs_check')::boolean, false),
            lease_owner = NULL,
            lease_expires_at = NULL,
            transition_cause = p_decision ->> 'cause',
            transition_evidence = coalesce(p_decision -> 'evidence', '{}')
        WHERE id = p_id AND version = p_version
        RETURNING *
    ), counted AS (
        INSERT INTO cancellation_counts AS c (status, shard, n)
        SELECT status, pg_backend_pid(), 1 FROM updated
        WHERE status IN ('confirmed', 'failed')
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + 1
    )
    SELECT * FROM updated;
$$;

CREATE OR REPLACE FUNCTION claim_rows(
    p_now timestamptz, p_limit integer, p_owner text, p_lease_s double precision,
    p_accounts text[]
) RETURNS SETOF cancellations
LANGUAGE sql AS $$
    WITH due AS (
        SELECT id FROM cancellations
        WHERE status = 'queued' AND next_attempt_at <= p_now
          AND provider || ':' || account = ANY (p_accounts)
        ORDER BY next_attempt_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE cancellations c
    SET status = 'sending', attempts = c.attempts + 1, version = c.version + 1,
        lease_owner = p_owner, lease_expires_at = p_now + make_interval(secs => p_lease_s),
        updated_at = p_now, first_sent_at = coalesce(c.first_sent_at, p_now),
        transition_cause = 'claimed',
        transition_evidence = jsonb_build_object('attempt', c.attempts + 1, 'worker', p_owner,
                                                 'status_check_first', c.needs_check)
    FROM due WHERE c.id = due.id
    RETURNING c.*;
$$;

-- Record a cancellation, or find the one that answers this request. The whole enqueue now
-- lives in the 12-argument form (who enqueued goes into the history row as it is written,
-- not patched in afterwards); the shorter forms, kept for callers of older versions, call it.
CREATE OR REPLACE FUNCTION enqueue_cancellation(
    p_id uuid, p_provider text, p_account text, p_resource_id text, p_reason text,
    p_metadata jsonb, p_params jsonb, p_idempotency_key text, p_request_hash text,
    p_now timestamptz, p_callback_url text, p_enqueued_by text,
    OUT result text, OUT cancellation cancellations
) RETURNS record
LANGUAGE plpgsql AS $$
DECLARE
    stored jsonb;
    evidence jsonb := '{}';
BEGIN
    PERFORM lock_request(p_provider, p_account, p_resource_id);

    IF p_idempotency_key IS NOT NULL THEN
        SELECT * INTO cancellation FROM cancellations WHERE idempotency_key = p_idempotency_key;
        IF FOUND THEN
            result := CASE WHEN cancellation.request_hash = p_request_hash
                           THEN 'existing' ELSE 'key_reused' END;
            RETURN;
        END IF;
    END IF;

    SELECT * INTO cancellation FROM cancellations
    WHERE provider = p_provider AND account = p_account AND resource_id = p_resource_id
      AND status IN ('queued', 'sending', 'awaiting_confirmation')
    FOR UPDATE;
    IF FOUND THEN
        result := 'existing';
        RETURN;
    END IF;

    SELECT jsonb_agg(jsonb_build_object('inbox_event_id', id, 'event_type', event_type,
                                        'event_time', event_time) ORDER BY id)
    INTO stored
    FROM webhook_inbox
    WHERE provider = p_provider AND account = p_account AND resource_id = p_resource_id
      AND processed_at IS NULL AND effect IS NOT NULL;

    IF coalesce(p_reason, '') <> '' THEN
        evidence := jsonb_build_object('reason', p_reason);
    END IF;
    IF stored IS NOT NULL THEN
        evidence := evidence || jsonb_build_object('stored_events', stored);
    END IF;
    IF p_enqueued_by IS NOT NULL THEN
        evidence := evidence || jsonb_build_object('by', p_enqueued_by);
    END IF;

    INSERT INTO cancellations (
        id, provider, account, resource_id, status, reason, metadata, params,
        idempotency_key, request_hash, next_attempt_at, needs_check, created_at, updated_at,
        callback_url, callback_receiver, transition_cause, transition_evidence
    )
    VALUES (p_id, p_provider, p_account, p_resource_id, 'queued', p_reason, p_metadata,
            p_params, p_idempotency_key, p_request_hash, p_now, stored IS NOT NULL, p_now,
            p_now, p_callback_url,
            CASE WHEN p_callback_url IS NOT NULL THEN p_enqueued_by END,
            'enqueued', evidence)
    ON CONFLICT DO NOTHING
    RETURNING * INTO cancellation;
    IF NOT FOUND THEN
        -- Lost a race on the idempotency key with a request for another resource.
        SELECT * INTO cancellation FROM cancellations WHERE idempotency_key = p_idempotency_key;
        result := CASE WHEN NOT FOUND THEN 'key_taken'
                       WHEN cancellation.request_hash = p_request_hash THEN 'existing'
                       ELSE 'key_reused' END;
        RETURN;
    END IF;
    IF stored IS NOT NULL THEN
        UPDATE webhook_inbox SET processed_at = p_now, cancellation_id = p_id
        WHERE provider = p_provider AND account = p_account AND resource_id = p_resource_id
          AND processed_at IS NULL AND effect IS NOT NULL;
    END IF;
    result := 'created';
END;
$$;

CREATE OR REPLACE FUNCTION enqueue_cancellation(
    p_id uuid, p_provider text, p_account text, p_resource_id text, p_reason text,
    p_metadata jsonb, p_params jsonb, p_idempotency_key text, p_request_hash text,
    p_now timestamptz, p_callback_url text,
    OUT result text, OUT cancellation cancellations
) RETURNS record
LANGUAGE sql AS $$
    SELECT * FROM enqueue_cancellation(p_id, p_provider, p_account, p_resource_id, p_reason,
                                       p_metadata, p_params, p_idempotency_key,
                                       p_request_hash, p_now, p_callback_url, NULL::text);
$$;

CREATE OR REPLACE FUNCTION enqueue_cancellation(
    p_id uuid, p_provider text, p_account text, p_resource_id text, p_reason text,
    p_metadata jsonb, p_params jsonb, p_idempotency_key text, p_request_hash text,
    p_now timestamptz, OUT result text, OUT cancellation cancellations
) RETURNS record
LANGUAGE sql AS $$
    SELECT * FROM enqueue_cancellation(p_id, p_provider, p_account, p_resource_id, p_reason,
                                       p_metadata, p_params, p_idempotency_key,
                                       p_request_hash, p_now, NULL::text, NULL::text);
$$;
