-- One round trip per state change. An enqueue was 6 statements (BEGIN, lock, find open,
-- insert, pending event, COMMIT) and a callback 7; each is now one call of a function below,
-- 14.1 -> 3.1 round trips per cancel (docs/benchmarks.md). The functions keep the transactions'
-- meaning: they are VOLATILE and run at READ COMMITTED, so every statement after
-- pg_advisory_xact_lock takes a fresh snapshot and sees what the lock's previous holder
-- committed (a single CTE could not: its snapshot predates the lock it takes).
--
-- A decision is the jsonb the service builds from lifecycle.Decision (store/repository.py,
-- decision_json): status, cause, evidence, and when they apply next_attempt_at, confirm_by,
-- outcome, confirmed_via, error, provider_state. Keys without a value are left out.

-- What a settling event means for a cancellation, decided by the service when the event
-- arrives, so an enqueue that finds the event already stored can settle in SQL.
ALTER TABLE webhook_inbox ADD COLUMN decision jsonb;

-- Events stored before this migration that still wait for a cancellation: the decision that
-- lifecycle.from_webhook made from their effect at the time of this migration.
UPDATE webhook_inbox
SET decision = jsonb_build_object('status', 'confirmed', 'cause', 'webhook',
                                  'evidence', coalesce(effect -> 'evidence', '{}'),
                                  'outcome', effect ->> 'outcome', 'confirmed_via', 'webhook')
WHERE processed_at IS NULL AND effect IS NOT NULL AND (effect ->> 'ok')::boolean;
UPDATE webhook_inbox
SET decision = jsonb_build_object(
        'status', 'failed', 'cause', 'webhook',
        'evidence', coalesce(effect -> 'evidence', '{}'),
        'outcome', effect ->> 'outcome',
        'error', jsonb_build_object(
            'code', coalesce(effect ->> 'error_code', effect ->> 'outcome'),
            'message', coalesce(effect ->> 'error_message',
                                'the request is ' || (effect ->> 'outcome')),
            'at', received_at))
WHERE processed_at IS NULL AND effect IS NOT NULL AND NOT (effect ->> 'ok')::boolean;

-- Carry out one transition, only if nobody changed the row since it was read
-- (version = p_version, the fencing token); no row if the fence held.
CREATE FUNCTION apply_decision(
    p_id uuid, p_version bigint, p_from text, p_now timestamptz, p_decision jsonb,
    p_submitted boolean
) RETURNS SETOF cancellations
LANGUAGE sql AS $$
    WITH updated AS (
        UPDATE cancellations
        SET status = p_decision ->> 'status',
            version = version + 1,
            updated_at = p_now,
            next_attempt_at = (p_decision ->> 'next_attempt_at')::timestamptz,
            confirm_by = coalesce((p_decision ->> 'confirm_by')::timestamptz, confirm_by),
            outcome = coalesce(p_decision ->> 'outcome', outcome),
            confirmed_via = p_decision ->> 'confirmed_via',
            confirmed_at = CASE WHEN p_decision ->> 'status' = 'confirmed' THEN p_now END,
            last_error = coalesce(p_decision -> 'error', last_error),
            provider_state = coalesce(p_decision -> 'provider_state', provider_state),
            submitted_at = CASE WHEN p_submitted THEN p_now ELSE submitted_at END,
            needs_check = false,
            lease_owner = NULL,
            lease_expires_at = NULL
        WHERE id = p_id AND version = p_version
        RETURNING *
    ), event AS (
        INSERT INTO cancellation_events (cancellation_id, at, from_status, to_status, cause,
                                         evidence)
        SELECT id, p_now, p_from, status, p_decision ->> 'cause',
               coalesce(p_decision -> 'evidence', '{}')
        FROM updated
    )
    SELECT * FROM updated;
$$;

-- Settle an open cancellation (read FOR UPDATE by the caller) by a stored event, and mark
-- the request's pending events as used by it. Shared by a callback that finds the
-- cancellation open and an enqueue that finds the event already stored.
CREATE FUNCTION settle_by_event(
    p_target cancellations, p_event_id bigint, p_decision jsonb, p_now timestamptz
) RETURNS SETOF cancellations
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT * FROM apply_decision(
        p_target.id, p_target.version, p_target.status, p_now,
        p_decision || jsonb_build_object(
            'evidence', coalesce(p_decision -> 'evidence', '{}')
                        || jsonb_build_object('inbox_event_id', p_event_id)),
        false);
    UPDATE webhook_inbox SET processed_at = p_now, cancellation_id = p_target.id
    WHERE provider = p_target.provider AND account = p_target.account
      AND resource_id = p_target.resource_id
      AND processed_at IS NULL AND effect IS NOT NULL;
END;
$$;

-- Serialise enqueue and callback for one request, so an event racing an enqueue is never
-- missed.
CREATE FUNCTION lock_request(p_provider text, p_account text, p_resource_id text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtextextended(p_provider || '/' || p_account || '/'
                                                  || p_resource_id, 0));
$$;

-- Record a cancellation, or find the one that answers this request. result is:
--   created     a new cancellation (settled at once if a stored event already settles it)
--   existing    the open cancellation of this request, or the one this idempotency key made
--   key_reused  the idempotency key made a cancellation for another request body
--   key_taken   a concurrent request for another resource took the idempotency key
CREATE FUNCTION enqueue_cancellation(
    p_id uuid, p_provider text, p_account text, p_resource_id text, p_reason text,
    p_metadata jsonb, p_params jsonb, p_idempotency_key text, p_request_hash text,
    p_now timestamptz, OUT result text, OUT cancellation cancellations
)
LANGUAGE plpgsql AS $$
DECLARE
    pending record;
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

    INSERT INTO cancellations (
        id, provider, account, resource_id, status, reason, metadata, params,
        idempotency_key, request_hash, next_attempt_at, created_at, updated_at
    )
    VALUES (p_id, p_provider, p_account, p_resource_id, 'queued', p_reason, p_metadata,
            p_params, p_idempotency_key, p_request_hash, p_now, p_now, p_now)
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
    INSERT INTO cancellation_events (cancellation_id, at, from_status, to_status, cause, evidence)
    VALUES (p_id, p_now, NULL, 'queued', 'enqueued',
            CASE WHEN coalesce(p_reason, '') = '' THEN '{}'::jsonb
                 ELSE jsonb_build_object('reason', p_reason) END);
    result := 'created';

    -- The newest stored event that settles this request and has not settled one yet.
    SELECT id, decision INTO pending FROM webhook_inbox
    WHERE provider = p_provider AND account = p_account AND resource_id = p_resource_id
      AND processed_at IS NULL AND effect IS NOT NULL
    ORDER BY event_time DESC NULLS LAST, id DESC
    LIMIT 1;
    IF FOUND THEN
        SELECT * INTO cancellation
        FROM settle_by_event(cancellation, pending.id, pending.decision, p_now);
    END IF;
END;
$$;

-- Store a verified event once and settle the open cancellation it reports, if any. Returns
-- duplicate (a redelivery: nothing changed), stored, or applied. An event that settles is
-- stored already marked as used: updating it afterwards would write its payload twice.
CREATE FUNCTION record_webhook_event(
    p_provider text, p_account text, p_dedupe_key text, p_resource_id text,
    p_event_type text, p_event_time timestamptz, p_effect jsonb, p_decision jsonb,
    p_payload jsonb, p_now timestamptz
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    event_id bigint;
    target cancellations;
BEGIN
    IF p_resource_id IS NOT NULL THEN
        PERFORM lock_request(p_provider, p_account, p_resource_id);
        IF p_decision IS NOT NULL THEN
            SELECT * INTO target FROM cancellations
            WHERE provider = p_provider AND account = p_account AND resource_id = p_resource_id
              AND status IN ('queued', 'sending', 'awaiting_confirmation')
            FOR UPDATE;
        END IF;
    END IF;
    INSERT INTO webhook_inbox (
        provider, account, dedupe_key, resource_id, event_type, event_time, effect, decision,
        payload, received_at, processed_at, cancellation_id
    )
    VALUES (p_provider, p_account, p_dedupe_key, p_resource_id, p_event_type, p_event_time,
            p_effect, p_decision, p_payload, p_now,
            CASE WHEN target.id IS NOT NULL THEN p_now END, target.id)
    ON CONFLICT (provider, dedupe_key) DO NOTHING
    RETURNING id INTO event_id;
    IF event_id IS NULL THEN
        RETURN 'duplicate';
    END IF;
    IF target.id IS NULL THEN
        RETURN 'stored';
    END IF;
    PERFORM * FROM settle_by_event(target, event_id, p_decision, p_now);
    RETURN 'applied';
END;
$$;
