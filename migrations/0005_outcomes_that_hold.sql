-- Outcomes that hold at the edges (issue 10) and one state machine (issue 11).
--
-- * A stored callback no longer settles a cancellation enqueued later: the new cancellation
--   checks the provider's status first (needs_check), and keeps the events as evidence.
-- * A settling callback confirms an open cancellation only if it is not older than the
--   cancellation's first cancel call (first_sent_at) minus the allowed clock skew; an older
--   one only prompts a status check. Dropbox Sign's event_hash does not cover the request id,
--   so a genuine event re-posted with another request's id must not settle that request.
-- * Decisions may ask for a status check first (a failure that may have reached the
--   provider) and may refund the attempt a claim counted (a row given back unsent).
-- * Every change of a row's version is announced on the channel cancellation_changed
--   (payload: the id), so long polls on any instance wake at once.
-- * Retention deletes terminal rows and unused inbox events; these indexes keep it cheap.
-- * The inbox kept both the provider's verdict (effect) and the decision made from it
--   (decision, 0003); the decision is now made when it is used, from effect alone.

ALTER TABLE cancellations ADD COLUMN first_sent_at timestamptz;
UPDATE cancellations SET first_sent_at = coalesce(submitted_at, updated_at)
WHERE attempts > 0;

ALTER TABLE webhook_inbox DROP COLUMN decision;

CREATE INDEX cancellations_terminal_at ON cancellations (updated_at)
    WHERE status IN ('confirmed', 'failed');
CREATE INDEX webhook_inbox_unused ON webhook_inbox (received_at) WHERE cancellation_id IS NULL;
CREATE INDEX webhook_inbox_by_cancellation ON webhook_inbox (cancellation_id)
    WHERE cancellation_id IS NOT NULL;

CREATE FUNCTION notify_cancellation_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cancellation_changed', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER cancellation_changed AFTER UPDATE OF version ON cancellations
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION notify_cancellation_changed();

-- As in 0004, plus needs_check and refund_attempt from the decision.
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
            lease_expires_at = NULL
        WHERE id = p_id AND version = p_version
        RETURNING *
    ), event AS (
        INSERT INTO cancellation_events (cancellation_id, at, from_status, to_status, cause,
                                         evidence)
        SELECT id, p_now, p_from, status, p_decision ->> 'cause',
               coalesce(p_decision -> 'evidence', '{}')
        FROM updated
    ), counted AS (
        INSERT INTO cancellation_counts AS c (status, shard, n)
        SELECT status, pg_backend_pid(), 1 FROM updated
        WHERE status IN ('confirmed', 'failed')
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + 1
    )
    SELECT * FROM updated;
$$;

DROP FUNCTION record_webhook_event(text, text, text, text, text, timestamptz, jsonb, jsonb,
                                   jsonb, timestamptz);
DROP FUNCTION settle_by_event(cancellations, bigint, jsonb, timestamptz);

-- Record a cancellation, or find the one that answers this request. result is:
--   created     a new cancellation; if stored events already report the request final, it
--               checks the provider's status before its first cancel, and lists them
--   existing    the open cancellation of this request, or the one this idempotency key made
--   key_reused  the idempotency key made a cancellation for another request body
--   key_taken   a concurrent request for another resource took the idempotency key
CREATE OR REPLACE FUNCTION enqueue_cancellation(
    p_id uuid, p_provider text, p_account text, p_resource_id text, p_reason text,
    p_metadata jsonb, p_params jsonb, p_idempotency_key text, p_request_hash text,
    p_now timestamptz, OUT result text, OUT cancellation cancellations
)
LANGUAGE plpgsql AS $$
DECLARE
    stored jsonb;
    evidence jsonb;
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

    INSERT INTO cancellations (
        id, provider, account, resource_id, status, reason, metadata, params,
        idempotency_key, request_hash, next_attempt_at, needs_check, created_at, updated_at
    )
    VALUES (p_id, p_provider, p_account, p_resource_id, 'queued', p_reason, p_metadata,
            p_params, p_idempotency_key, p_request_hash, p_now, stored IS NOT NULL, p_now,
            p_now)
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
    evidence := '{}';
    IF coalesce(p_reason, '') <> '' THEN
        evidence := jsonb_build_object('reason', p_reason);
    END IF;
    IF stored IS NOT NULL THEN
        evidence := evidence || jsonb_build_object('stored_events', stored);
        UPDATE webhook_inbox SET processed_at = p_now, cancellation_id = p_id
        WHERE provider = p_provider AND account = p_account AND resource_id = p_resource_id
          AND processed_at IS NULL AND effect IS NOT NULL;
    END IF;
    INSERT INTO cancellation_events (cancellation_id, at, from_status, to_status, cause, evidence)
    VALUES (p_id, p_now, NULL, 'queued', 'enqueued', evidence);
    result := 'created';
END;
$$;

-- Store a verified event once and act on the open cancellation it reports. Returns
--   duplicate  a redelivery: nothing changed
--   stored     kept; no open cancellation to act on (or one being sent right now)
--   applied    the event settled the open cancellation (p_decision)
--   check      the event may not settle it (older than the first cancel call minus p_skew,
--              or p_settle is false): the cancellation checks the provider's status next
-- An event that acts on a cancellation is stored already marked as used: updating it
-- afterwards would write its payload twice.
CREATE FUNCTION record_webhook_event(
    p_provider text, p_account text, p_dedupe_key text, p_resource_id text,
    p_event_type text, p_event_time timestamptz, p_effect jsonb, p_decision jsonb,
    p_payload jsonb, p_now timestamptz, p_skew interval, p_settle boolean
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
        provider, account, dedupe_key, resource_id, event_type, event_time, effect, payload,
        received_at, processed_at, cancellation_id
    )
    VALUES (p_provider, p_account, p_dedupe_key, p_resource_id, p_event_type, p_event_time,
            p_effect, p_payload, p_now,
            CASE WHEN target.id IS NOT NULL THEN p_now END, target.id)
    ON CONFLICT (provider, dedupe_key) DO NOTHING
    RETURNING id INTO event_id;
    IF event_id IS NULL THEN
        RETURN 'duplicate';
    END IF;
    IF target.id IS NULL THEN
        RETURN 'stored';
    END IF;
    IF p_settle AND p_event_time IS NOT NULL AND target.first_sent_at IS NOT NULL
       AND p_event_time >= target.first_sent_at - p_skew THEN
        PERFORM * FROM apply_decision(
            target.id, target.version, target.status, p_now,
            p_decision || jsonb_build_object(
                'evidence', coalesce(p_decision -> 'evidence', '{}')
                            || jsonb_build_object('inbox_event_id', event_id)),
            false);
        RETURN 'applied';
    END IF;
    IF target.status = 'sending' THEN
        RETURN 'stored';  -- the attempt in flight decides; the event stays as evidence
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

-- One rate budget per provider account, shared by every instance (issue 10): a token
-- bucket whose capacity is a tenth of the per-minute limit (at least one call) and whose
-- refill makes up the rest, so no 60-second window holds more calls than the limit. A 429's
-- wait pauses the account for every instance. Rows exist only for accounts that have a
-- limit or have been paused.
CREATE TABLE account_budgets (
    account      text PRIMARY KEY,        -- provider:account
    tokens       double precision NOT NULL,
    refilled_at  timestamptz NOT NULL,
    paused_until timestamptz
);

-- The account's budget row, locked and refilled up to p_now (created full if missing).
CREATE FUNCTION refill_budget(p_account text, p_per_min double precision, p_now timestamptz)
RETURNS account_budgets
LANGUAGE plpgsql AS $$
DECLARE
    capacity double precision := greatest(1, p_per_min / 10);
    per_s double precision := greatest(p_per_min - capacity, p_per_min / 2) / 60;
    budget account_budgets;
BEGIN
    INSERT INTO account_budgets (account, tokens, refilled_at)
    VALUES (p_account, capacity, p_now)
    ON CONFLICT (account) DO NOTHING;
    SELECT * INTO budget FROM account_budgets WHERE account = p_account FOR UPDATE;
    budget.tokens := least(capacity, budget.tokens
        + greatest(0, extract(epoch FROM p_now - budget.refilled_at)) * per_s);
    budget.refilled_at := greatest(budget.refilled_at, p_now);
    RETURN budget;
END;
$$;

-- Take one call from a rate-limited account's budget. Returns 0 if taken, else how many
-- seconds until one is free (or the pause ends); nothing is taken then.
CREATE FUNCTION take_call(p_account text, p_per_min double precision, p_now timestamptz)
RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    budget account_budgets := refill_budget(p_account, p_per_min, p_now);
    per_s double precision := greatest(p_per_min - greatest(1, p_per_min / 10),
                                       p_per_min / 2) / 60;
BEGIN
    IF budget.paused_until > p_now THEN
        RETURN extract(epoch FROM budget.paused_until - p_now);
    END IF;
    IF budget.tokens < 1 THEN
        UPDATE account_budgets SET tokens = budget.tokens, refilled_at = budget.refilled_at
        WHERE account = p_account;
        RETURN (1 - budget.tokens) / per_s;
    END IF;
    UPDATE account_budgets SET tokens = budget.tokens - 1, refilled_at = budget.refilled_at
    WHERE account = p_account;
    RETURN 0;
END;
$$;

-- A provider asked every caller of this account to wait until p_until.
CREATE FUNCTION pause_account(p_account text, p_until timestamptz, p_now timestamptz)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO account_budgets AS b (account, tokens, refilled_at, paused_until)
    VALUES (p_account, 0, p_now, p_until)
    ON CONFLICT (account) DO UPDATE
    SET paused_until = greatest(b.paused_until, excluded.paused_until);
$$;

-- Lease up to p_limit due rows of the accounts this instance serves (p_accounts, with
-- p_per_min their limits, NULL for none), each limited account no more than its budget
-- allows now, no paused account at all; attempts and the fencing token move with the claim.
-- Limited accounts are taken in name order (a fixed lock order), the others in one query.
CREATE FUNCTION claim_due(
    p_now timestamptz, p_limit integer, p_owner text, p_lease_s double precision,
    p_accounts text[], p_per_min double precision[]
) RETURNS SETOF cancellations
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    budget account_budgets;
    room integer;
    took integer;
    remaining integer := p_limit;
    unlimited text[];
BEGIN
    FOR i IN SELECT s FROM generate_subscripts(p_accounts, 1) s ORDER BY p_accounts[s] LOOP
        CONTINUE WHEN p_per_min[i] IS NULL;
        EXIT WHEN remaining <= 0;
        budget := refill_budget(p_accounts[i], p_per_min[i], p_now);
        room := CASE WHEN budget.paused_until > p_now THEN 0
                     ELSE least(remaining, floor(budget.tokens)::integer) END;
        took := 0;
        IF room > 0 THEN
            RETURN QUERY SELECT * FROM claim_rows(p_now, room, p_owner, p_lease_s,
                                                  ARRAY[p_accounts[i]]);
            GET DIAGNOSTICS took = ROW_COUNT;
        END IF;
        UPDATE account_budgets SET tokens = budget.tokens - took,
                                   refilled_at = budget.refilled_at
        WHERE account = p_accounts[i];
        remaining := remaining - took;
    END LOOP;
    IF remaining > 0 THEN
        SELECT array_agg(a) INTO unlimited
        FROM unnest(p_accounts, p_per_min) AS u(a, per_min)
        WHERE per_min IS NULL AND NOT EXISTS (
            SELECT 1 FROM account_budgets b WHERE b.account = a AND b.paused_until > p_now);
        IF unlimited IS NOT NULL THEN
            RETURN QUERY SELECT * FROM claim_rows(p_now, remaining, p_owner, p_lease_s,
                                                  unlimited);
        END IF;
    END IF;
END;
$$;

-- The claim itself: queued -> sending (cause claimed), oldest due first, SKIP LOCKED.
CREATE FUNCTION claim_rows(
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
    ), claimed AS (
        UPDATE cancellations c
        SET status = 'sending', attempts = c.attempts + 1, version = c.version + 1,
            lease_owner = p_owner, lease_expires_at = p_now + make_interval(secs => p_lease_s),
            updated_at = p_now, first_sent_at = coalesce(c.first_sent_at, p_now)
        FROM due WHERE c.id = due.id
        RETURNING c.*
    ), event AS (
        INSERT INTO cancellation_events (cancellation_id, at, from_status, to_status, cause,
                                         evidence)
        SELECT id, p_now, 'queued', 'sending', 'claimed',
               jsonb_build_object('attempt', attempts, 'worker', p_owner,
                                  'status_check_first', needs_check)
        FROM claimed
    )
    SELECT * FROM claimed;
$$;
