-- A captured callback cannot end a cancellation, and a flood of them costs one check
-- (issue 16, items 2 and 3).
--
-- * DROPBOX_SIGN_CONFIRM_BY=status is now the default: a settling callback only makes the
--   cancellation's next attempt a status check, due now. Checks prompted by callbacks are
--   coalesced, at most one per cancellation: a callback for a cancellation whose check is
--   already due changes nothing (the event is kept as evidence, linked to it, outcome
--   `coalesced`); one that arrives while an attempt is in flight is kept pending
--   (processed_at NULL) and, if that attempt leaves the request awaiting confirmation, the
--   attempt's own write makes one status check due now (apply_attempt_decision), however
--   many arrived. Before, it was dropped and the confirmation waited for the sweeper.
-- * The caller's dedupe key is built from the verified (lower-case) hash, so the
--   case variants of one captured event_hash are one inbox row (providers/dropbox_sign.py).

-- Store a verified event once and act on the open cancellation it reports. Returns
--   duplicate  a redelivery: nothing changed
--   stored     kept; no open cancellation to act on
--   applied    the event settled the open cancellation (p_decision)
--   check      the event may not settle it (p_settle is false, or it is older than the
--              first cancel call minus p_skew): the next attempt is a status check, due now
--   coalesced  as check, but a check is already due, or an attempt is in flight (then the
--              event waits, pending, for that attempt's result): nothing more is asked
-- An event that acts on a cancellation is stored already marked as used: updating it
-- afterwards would write its payload twice.
CREATE OR REPLACE FUNCTION record_webhook_event(
    p_provider text, p_account text, p_dedupe_key text, p_resource_id text,
    p_event_type text, p_event_time timestamptz, p_effect jsonb, p_decision jsonb,
    p_payload jsonb, p_now timestamptz, p_skew interval, p_settle boolean
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    event_id bigint;
    target cancellations;
    settles boolean;
    pending boolean;
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
    settles := target.id IS NOT NULL AND p_settle AND p_event_time IS NOT NULL
               AND target.first_sent_at IS NOT NULL
               AND p_event_time >= target.first_sent_at - p_skew;
    pending := target.id IS NOT NULL AND NOT settles AND target.status = 'sending';
    INSERT INTO webhook_inbox (
        provider, account, dedupe_key, resource_id, event_type, event_time, effect, payload,
        received_at, processed_at, cancellation_id
    )
    VALUES (p_provider, p_account, p_dedupe_key, p_resource_id, p_event_type, p_event_time,
            p_effect, p_payload, p_now,
            CASE WHEN target.id IS NOT NULL AND NOT pending THEN p_now END, target.id)
    ON CONFLICT (provider, dedupe_key) DO NOTHING
    RETURNING id INTO event_id;
    IF event_id IS NULL THEN
        RETURN 'duplicate';
    END IF;
    IF target.id IS NULL THEN
        RETURN 'stored';
    END IF;
    IF settles THEN
        PERFORM * FROM apply_decision(
            target.id, target.version, target.status, p_now,
            p_decision || jsonb_build_object(
                'evidence', coalesce(p_decision -> 'evidence', '{}')
                            || jsonb_build_object('inbox_event_id', event_id)),
            false);
        RETURN 'applied';
    END IF;
    IF pending OR (target.status = 'queued' AND target.needs_check
                   AND target.next_attempt_at <= p_now) THEN
        RETURN 'coalesced';
    END IF;
    PERFORM * FROM apply_decision(
        target.id, target.version, target.status, p_now,
        jsonb_build_object(
            'status', 'queued', 'cause', 'webhook_needs_check', 'needs_check', true,
            'next_attempt_at', p_now,
            'evidence', jsonb_build_object(
                'inbox_event_id', event_id, 'event_type', p_event_type,
                'event_time', p_event_time, 'first_sent_at', target.first_sent_at,
                'settles', p_settle)),
        false);
    RETURN 'check';
END;
$$;

-- apply_decision, for the write that ends an attempt (p_from 'sending'): the events that
-- arrived while it was in flight are used now, and if the attempt leaves the request
-- awaiting confirmation, they make one status check due at once (the trigger is named in
-- the history: webhook_needs_check, with the events). Other writes pass straight through.
CREATE FUNCTION apply_attempt_decision(
    p_id uuid, p_version bigint, p_from text, p_now timestamptz, p_decision jsonb,
    p_submitted boolean
) RETURNS SETOF cancellations
LANGUAGE plpgsql AS $$
DECLARE
    applied cancellations;
    arrived jsonb;
BEGIN
    SELECT * INTO applied
    FROM apply_decision(p_id, p_version, p_from, p_now, p_decision, p_submitted);
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF p_from = 'sending' THEN
        WITH used AS (
            UPDATE webhook_inbox SET processed_at = p_now
            WHERE cancellation_id = p_id AND processed_at IS NULL
            RETURNING id, event_type, event_time
        )
        SELECT jsonb_agg(jsonb_build_object('inbox_event_id', id, 'event_type', event_type,
                                            'event_time', event_time) ORDER BY id)
        INTO arrived FROM used;
        IF arrived IS NOT NULL AND applied.status = 'awaiting_confirmation' THEN
            SELECT * INTO applied
            FROM apply_decision(
                p_id, applied.version, applied.status, p_now,
                jsonb_build_object(
                    'status', 'queued', 'cause', 'webhook_needs_check', 'needs_check', true,
                    'next_attempt_at', p_now,
                    'evidence', jsonb_build_object(
                        'inbox_event_id', arrived -> 0 -> 'inbox_event_id',
                        'event_type', arrived -> 0 -> 'event_type',
                        'event_time', arrived -> 0 -> 'event_time',
                        'arrived_during_attempt', arrived)),
                false);
        END IF;
    END IF;
    RETURN NEXT applied;
END;
$$;
