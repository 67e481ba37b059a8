-- The webhook and stored-event rules decided in Python, carried out in SQL (issue 18, item 2).
--
-- What a verified callback does to the open cancellation it reports (settle it, make its
-- next attempt a status check, or leave it to the attempt in flight), what an attempt's end
-- does with the callbacks that arrived during it, and what an enqueue does with the ones
-- stored before it were decided by IF chains in record_webhook_event,
-- apply_attempt_decision and enqueue_cancellation, out of reach of a unit test. They are
-- now pure functions in orchestrator/domain/webhook_rules.py over a few finite facts, and
-- each is held here as a table of every combination of its facts with the action the
-- function gives (the rows are printed by `python -m tests.rules_sql`;
-- tests/integration/test_rules_tables.py keeps the tables equal to the functions).
-- The three functions keep their signatures and results, and their one round trip: they
-- compute the facts under the same locks as before, look the action up (a probe of a table
-- of at most 64 rows) and carry it out.

-- webhook_action: target_status is the open cancellation's status ('none' when there is
-- none); age is the event's time against that cancellation's first cancel call minus the
-- skew ('unknown' no event time, 'not_sent' no call yet, 'older', 'fresh': at the edge
-- included); check_due is needs_check AND next_attempt_at <= now. The action: what to
-- return, whether the event is stored as used (else it waits: for an enqueue, or for the
-- attempt in flight), and the transition: 'applied' carries out the event's own decision;
-- a to_status is a status check, due now.
CREATE TABLE webhook_rules (
    target_status text NOT NULL,
    settle_mode boolean NOT NULL,
    age text NOT NULL,
    check_due boolean NOT NULL,
    outcome text NOT NULL,
    used boolean NOT NULL,
    to_status text,
    cause text,
    PRIMARY KEY (target_status, settle_mode, age, check_due)
);

-- attempt_end: after a write from from_status left the row in result_status, with events
-- linked to it still unused (any_arrived): use them, and maybe ask for a status check now.
CREATE TABLE attempt_end_rules (
    from_status text NOT NULL,
    any_arrived boolean NOT NULL,
    result_status text NOT NULL,
    use_arrived boolean NOT NULL,
    to_status text,
    cause text,
    PRIMARY KEY (from_status, any_arrived, result_status)
);

-- stored_event_action: at an enqueue, whether unused events with an effect were stored for
-- the resource before it.
CREATE TABLE stored_event_rules (
    any_stored boolean PRIMARY KEY,
    needs_check boolean NOT NULL,
    use_stored boolean NOT NULL
);

INSERT INTO webhook_rules (target_status, settle_mode, age, check_due, outcome, used, to_status, cause) VALUES
    ('none', false, 'unknown', false, 'stored', false, NULL, NULL),
    ('none', false, 'unknown', true, 'stored', false, NULL, NULL),
    ('none', false, 'not_sent', false, 'stored', false, NULL, NULL),
    ('none', false, 'not_sent', true, 'stored', false, NULL, NULL),
    ('none', false, 'older', false, 'stored', false, NULL, NULL),
    ('none', false, 'older', true, 'stored', false, NULL, NULL),
    ('none', false, 'fresh', false, 'stored', false, NULL, NULL),
    ('none', false, 'fresh', true, 'stored', false, NULL, NULL),
    ('none', true, 'unknown', false, 'stored', false, NULL, NULL),
    ('none', true, 'unknown', true, 'stored', false, NULL, NULL),
    ('none', true, 'not_sent', false, 'stored', false, NULL, NULL),
    ('none', true, 'not_sent', true, 'stored', false, NULL, NULL),
    ('none', true, 'older', false, 'stored', false, NULL, NULL),
    ('none', true, 'older', true, 'stored', false, NULL, NULL),
    ('none', true, 'fresh', false, 'stored', false, NULL, NULL),
    ('none', true, 'fresh', true, 'stored', false, NULL, NULL),
    ('queued', false, 'unknown', false, 'check', true, 'queued', 'webhook_needs_check'),
    ('queued', false, 'unknown', true, 'coalesced', true, NULL, NULL),
    ('queued', false, 'not_sent', false, 'check', true, 'queued', 'webhook_needs_check'),
    ('queued', false, 'not_sent', true, 'coalesced', true, NULL, NULL),
    ('queued', false, 'older', false, 'check', true, 'queued', 'webhook_needs_check'),
    ('queued', false, 'older', true, 'coalesced', true, NULL, NULL),
    ('queued', false, 'fresh', false, 'check', true, 'queued', 'webhook_needs_check'),
    ('queued', false, 'fresh', true, 'coalesced', true, NULL, NULL),
    ('queued', true, 'unknown', false, 'check', true, 'queued', 'webhook_needs_check'),
    ('queued', true, 'unknown', true, 'coalesced', true, NULL, NULL),
    ('queued', true, 'not_sent', false, 'check', true, 'queued', 'webhook_needs_check'),
    ('queued', true, 'not_sent', true, 'coalesced', true, NULL, NULL),
    ('queued', true, 'older', false, 'check', true, 'queued', 'webhook_needs_check'),
    ('queued', true, 'older', true, 'coalesced', true, NULL, NULL),
    ('queued', true, 'fresh', false, 'applied', true, NULL, 'webhook'),
    ('queued', true, 'fresh', true, 'applied', true, NULL, 'webhook'),
    ('sending', false, 'unknown', false, 'coalesced', false, NULL, NULL),
    ('sending', false, 'unknown', true, 'coalesced', false, NULL, NULL),
    ('sending', false, 'not_sent', false, 'coalesced', false, NULL, NULL),
    ('sending', false, 'not_sent', true, 'coalesced', false, NULL, NULL),
    ('sending', false, 'older', false, 'coalesced', false, NULL, NULL),
    ('sending', false, 'older', true, 'coalesced', false, NULL, NULL),
    ('sending', false, 'fresh', false, 'coalesced', false, NULL, NULL),
    ('sending', false, 'fresh', true, 'coalesced', false, NULL, NULL),
    ('sending', true, 'unknown', false, 'coalesced', false, NULL, NULL),
    ('sending', true, 'unknown', true, 'coalesced', false, NULL, NULL),
    ('sending', true, 'not_sent', false, 'coalesced', false, NULL, NULL),
    ('sending', true, 'not_sent', true, 'coalesced', false, NULL, NULL),
    ('sending', true, 'older', false, 'coalesced', false, NULL, NULL),
    ('sending', true, 'older', true, 'coalesced', false, NULL, NULL),
    ('sending', true, 'fresh', false, 'applied', true, NULL, 'webhook'),
    ('sending', true, 'fresh', true, 'applied', true, NULL, 'webhook'),
    ('awaiting_confirmation', false, 'unknown', false, 'check', true, 'queued', 'webhook_needs_check'),
    ('awaiting_confirmation', false, 'unknown', true, 'check', true, 'queued', 'webhook_needs_check'),
    ('awaiting_confirmation', false, 'not_sent', false, 'check', true, 'queued', 'webhook_needs_check'),
    ('awaiting_confirmation', false, 'not_sent', true, 'check', true, 'queued', 'webhook_needs_check'),
    ('awaiting_confirmation', false, 'older', false, 'check', true, 'queued', 'webhook_needs_check'),
    ('awaiting_confirmation', false, 'older', true, 'check', true, 'queued', 'webhook_needs_check'),
    ('awaiting_confirmation', false, 'fresh', false, 'check', true, 'queued', 'webhook_needs_check'),
    ('awaiting_confirmation', false, 'fresh', true, 'check', true, 'queued', 'webhook_needs_check'),
    ('awaiting_confirmation', true, 'unknown', false, 'check', true, 'queued', 'webhook_needs_check'),
    ('awaiting_confirmation', true, 'unknown', true, 'check', true, 'queued', 'webhook_needs_check'),
    ('awaiting_confirmation', true, 'not_sent', false, 'check', true, 'queued', 'webhook_needs_check'),
    ('awaiting_confirmation', true, 'not_sent', true, 'check', true, 'queued', 'webhook_needs_check'),
    ('awaiting_confirmation', true, 'older', false, 'check', true, 'queued', 'webhook_needs_check'),
    ('awaiting_confirmation', true, 'older', true, 'check', true, 'queued', 'webhook_needs_check'),
    ('awaiting_confirmation', true, 'fresh', false, 'applied', true, NULL, 'webhook'),
    ('awaiting_confirmation', true, 'fresh', true, 'applied', true, NULL, 'webhook');

INSERT INTO attempt_end_rules (from_status, any_arrived, result_status, use_arrived, to_status, cause) VALUES
    ('queued', false, 'queued', false, NULL, NULL),
    ('queued', false, 'sending', false, NULL, NULL),
    ('queued', false, 'awaiting_confirmation', false, NULL, NULL),
    ('queued', false, 'confirmed', false, NULL, NULL),
    ('queued', false, 'failed', false, NULL, NULL),
    ('queued', true, 'queued', false, NULL, NULL),
    ('queued', true, 'sending', false, NULL, NULL),
    ('queued', true, 'awaiting_confirmation', false, NULL, NULL),
    ('queued', true, 'confirmed', false, NULL, NULL),
    ('queued', true, 'failed', false, NULL, NULL),
    ('sending', false, 'queued', false, NULL, NULL),
    ('sending', false, 'sending', false, NULL, NULL),
    ('sending', false, 'awaiting_confirmation', false, NULL, NULL),
    ('sending', false, 'confirmed', false, NULL, NULL),
    ('sending', false, 'failed', false, NULL, NULL),
    ('sending', true, 'queued', true, NULL, NULL),
    ('sending', true, 'sending', true, NULL, NULL),
    ('sending', true, 'awaiting_confirmation', true, 'queued', 'webhook_needs_check'),
    ('sending', true, 'confirmed', true, NULL, NULL),
    ('sending', true, 'failed', true, NULL, NULL),
    ('awaiting_confirmation', false, 'queued', false, NULL, NULL),
    ('awaiting_confirmation', false, 'sending', false, NULL, NULL),
    ('awaiting_confirmation', false, 'awaiting_confirmation', false, NULL, NULL),
    ('awaiting_confirmation', false, 'confirmed', false, NULL, NULL),
    ('awaiting_confirmation', false, 'failed', false, NULL, NULL),
    ('awaiting_confirmation', true, 'queued', false, NULL, NULL),
    ('awaiting_confirmation', true, 'sending', false, NULL, NULL),
    ('awaiting_confirmation', true, 'awaiting_confirmation', false, NULL, NULL),
    ('awaiting_confirmation', true, 'confirmed', false, NULL, NULL),
    ('awaiting_confirmation', true, 'failed', false, NULL, NULL),
    ('confirmed', false, 'queued', false, NULL, NULL),
    ('confirmed', false, 'sending', false, NULL, NULL),
    ('confirmed', false, 'awaiting_confirmation', false, NULL, NULL),
    ('confirmed', false, 'confirmed', false, NULL, NULL),
    ('confirmed', false, 'failed', false, NULL, NULL),
    ('confirmed', true, 'queued', false, NULL, NULL),
    ('confirmed', true, 'sending', false, NULL, NULL),
    ('confirmed', true, 'awaiting_confirmation', false, NULL, NULL),
    ('confirmed', true, 'confirmed', false, NULL, NULL),
    ('confirmed', true, 'failed', false, NULL, NULL),
    ('failed', false, 'queued', false, NULL, NULL),
    ('failed', false, 'sending', false, NULL, NULL),
    ('failed', false, 'awaiting_confirmation', false, NULL, NULL),
    ('failed', false, 'confirmed', false, NULL, NULL),
    ('failed', false, 'failed', false, NULL, NULL),
    ('failed', true, 'queued', false, NULL, NULL),
    ('failed', true, 'sending', false, NULL, NULL),
    ('failed', true, 'awaiting_confirmation', false, NULL, NULL),
    ('failed', true, 'confirmed', false, NULL, NULL),
    ('failed', true, 'failed', false, NULL, NULL);

INSERT INTO stored_event_rules (any_stored, needs_check, use_stored) VALUES
    (false, false, false),
    (true, true, true);

-- Store a verified event once and act on the open cancellation it reports, as
-- webhook_rules says. Returns duplicate (a redelivery: nothing changed) or the rule's
-- outcome: stored, applied, check or coalesced. An event that acts on a cancellation is
-- stored already marked as used: updating it afterwards would write its payload twice.
CREATE OR REPLACE FUNCTION record_webhook_event(
    p_provider text, p_account text, p_dedupe_key text, p_resource_id text,
    p_event_type text, p_event_time timestamptz, p_effect jsonb, p_decision jsonb,
    p_payload jsonb, p_now timestamptz, p_skew interval, p_settle boolean
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    event_id bigint;
    target cancellations;
    rule webhook_rules;
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
    SELECT * INTO rule FROM webhook_rules r
    WHERE r.target_status = coalesce(target.status, 'none')
      AND r.settle_mode = coalesce(p_settle, false)
      AND r.age = CASE WHEN p_event_time IS NULL THEN 'unknown'
                       WHEN target.first_sent_at IS NULL THEN 'not_sent'
                       WHEN p_event_time >= target.first_sent_at - p_skew THEN 'fresh'
                       ELSE 'older' END
      AND r.check_due = coalesce(target.needs_check AND target.next_attempt_at <= p_now,
                                 false);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook_rules has no row for cancellation % (status %)',
                        target.id, target.status;
    END IF;
    INSERT INTO webhook_inbox (
        provider, account, dedupe_key, resource_id, event_type, event_time, effect, payload,
        received_at, processed_at, cancellation_id
    )
    VALUES (p_provider, p_account, p_dedupe_key, p_resource_id, p_event_type, p_event_time,
            p_effect, p_payload, p_now, CASE WHEN rule.used THEN p_now END, target.id)
    ON CONFLICT (provider, dedupe_key) DO NOTHING
    RETURNING id INTO event_id;
    IF event_id IS NULL THEN
        RETURN 'duplicate';
    END IF;
    IF rule.outcome = 'applied' THEN
        PERFORM * FROM apply_decision(
            target.id, target.version, target.status, p_now,
            p_decision || jsonb_build_object(
                'evidence', coalesce(p_decision -> 'evidence', '{}')
                            || jsonb_build_object('inbox_event_id', event_id)),
            false);
    ELSIF rule.to_status IS NOT NULL THEN
        -- A status check, due now (the rule's cause: webhook_needs_check).
        PERFORM * FROM apply_decision(
            target.id, target.version, target.status, p_now,
            jsonb_build_object(
                'status', rule.to_status, 'cause', rule.cause, 'needs_check', true,
                'next_attempt_at', p_now,
                'evidence', jsonb_build_object(
                    'inbox_event_id', event_id, 'event_type', p_event_type,
                    'event_time', p_event_time, 'first_sent_at', target.first_sent_at,
                    'settles', p_settle)),
            false);
    END IF;
    RETURN rule.outcome;
END;
$$;

-- apply_decision, then what attempt_end_rules says about the events linked to the row and
-- still unused (they arrived while an attempt was in flight): the end of an attempt uses
-- them, and if it left the request awaiting confirmation they make one status check due at
-- once (named in the history: webhook_needs_check, with the events).
CREATE OR REPLACE FUNCTION apply_attempt_decision(
    p_id uuid, p_version bigint, p_from text, p_now timestamptz, p_decision jsonb,
    p_submitted boolean
) RETURNS SETOF cancellations
LANGUAGE plpgsql AS $$
DECLARE
    applied cancellations;
    rule attempt_end_rules;
    arrived_events jsonb;
BEGIN
    SELECT * INTO applied
    FROM apply_decision(p_id, p_version, p_from, p_now, p_decision, p_submitted);
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO rule FROM attempt_end_rules r
    WHERE r.from_status = p_from AND r.result_status = applied.status
      AND r.any_arrived = EXISTS (SELECT 1 FROM webhook_inbox
                                  WHERE cancellation_id = p_id AND processed_at IS NULL);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'attempt_end_rules has no row for % -> %', p_from, applied.status;
    END IF;
    IF rule.use_arrived THEN
        WITH used AS (
            UPDATE webhook_inbox SET processed_at = p_now
            WHERE cancellation_id = p_id AND processed_at IS NULL
            RETURNING id, event_type, event_time
        )
        SELECT jsonb_agg(jsonb_build_object('inbox_event_id', id, 'event_type', event_type,
                                            'event_time', event_time) ORDER BY id)
        INTO arrived_events FROM used;
    END IF;
    IF rule.to_status IS NOT NULL THEN
        SELECT * INTO applied
        FROM apply_decision(
            p_id, applied.version, applied.status, p_now,
            jsonb_build_object(
                'status', rule.to_status, 'cause', rule.cause, 'needs_check', true,
                'next_attempt_at', p_now,
                'evidence', jsonb_build_object(
                    'inbox_event_id', arrived_events -> 0 -> 'inbox_event_id',
                    'event_type', arrived_events -> 0 -> 'event_type',
                    'event_time', arrived_events -> 0 -> 'event_time',
                    'arrived_during_attempt', arrived_events)),
            false);
    END IF;
    RETURN NEXT applied;
END;
$$;

-- Record a cancellation, or find the one that answers this request; the events stored for
-- the resource before it do what stored_event_rules says.
CREATE OR REPLACE FUNCTION enqueue_cancellation(
    p_id uuid, p_provider text, p_account text, p_resource_id text, p_reason text,
    p_metadata jsonb, p_params jsonb, p_idempotency_key text, p_request_hash text,
    p_now timestamptz, p_callback_url text, p_enqueued_by text,
    OUT result text, OUT cancellation cancellations
) RETURNS record
LANGUAGE plpgsql AS $$
DECLARE
    stored jsonb;
    rule stored_event_rules;
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
    SELECT * INTO STRICT rule FROM stored_event_rules r WHERE r.any_stored = (stored IS NOT NULL);

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
            p_params, p_idempotency_key, p_request_hash, p_now, rule.needs_check, p_now,
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
    IF rule.use_stored THEN
        UPDATE webhook_inbox SET processed_at = p_now, cancellation_id = p_id
        WHERE provider = p_provider AND account = p_account AND resource_id = p_resource_id
          AND processed_at IS NULL AND effect IS NOT NULL;
    END IF;
    result := 'created';
END;
$$;
