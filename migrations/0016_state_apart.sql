-- The state that changes apart from the request that does not (issue 18, item 4).
--
-- Every update of cancellations wrote a new version of the whole ~270-byte row and a new
-- entry in each of its six indexes that the new version matched (the primary key,
-- cancellations_newest, cancellations_resource, cancellations_idempotency_key, the one-open
-- rule while open, the status's partial index): 6 of the 24 index entries, about 1,700 of the
-- ~5,900 bytes of WAL, that a cancel wrote (docs/benchmarks.md). The table is now two:
--
-- * cancellation_requests: what a caller asked for and never changes (provider, account,
--   resource, reason, metadata, params, idempotency key, request hash, created_at, callback
--   URL and receiver), with the indexes that find a request (primary key, newest first, by
--   resource, by idempotency key). Written once, at enqueue; never updated.
-- * cancellation_state: what the lifecycle changes (status, version, attempts, times,
--   lease, outcome, provider state, last error), with copies of provider, account,
--   resource_id and callback_url that the claim, the one-open rule, the counters and the
--   callbacks outbox read without a second table. Its indexes: the primary key, the one-open
--   rule and one partial index per status. A state change writes a ~160-byte version and 2
--   index entries (3 while the cancellation stays open: the one-open rule's).
-- * cancellations is now a view that joins them, column for column the table it replaces,
--   so every read is unchanged. Writes to the view (an operator's UPDATE, a test's DELETE, a
--   bulk INSERT) are carried to the two tables by an INSTEAD OF trigger; the service itself
--   writes the tables directly. apply_decision returns the state row alone: the store merges
--   it into the request it holds (store/repository.py, with_state).
--
-- Every writer of the state was already SQL (0011: one writer of the history), so this
-- migration rewrites the writers here and in queries.sql; the triggers of 0005-0015
-- (transitions, history, counters, change notices, callbacks outbox) move to
-- cancellation_state unchanged.
--
-- On an existing deployment this copies the state of every row into the new table and
-- drops the columns from the old one under an ACCESS EXCLUSIVE lock (nothing reads or
-- writes meanwhile; one pass over the table and the building of the state's indexes). The
-- old table's space is reused as requests are added, not returned (VACUUM FULL would).

LOCK TABLE cancellations IN ACCESS EXCLUSIVE MODE;

-- Functions whose signatures name the table's row type; created again below.
DROP FUNCTION enqueue_cancellation(uuid, text, text, text, text, jsonb, jsonb, text, text,
                                   timestamptz);
DROP FUNCTION enqueue_cancellation(uuid, text, text, text, text, jsonb, jsonb, text, text,
                                   timestamptz, text);
DROP FUNCTION enqueue_cancellation(uuid, text, text, text, text, jsonb, jsonb, text, text,
                                   timestamptz, text, text);
DROP FUNCTION claim_due(timestamptz, integer, text, double precision, text[],
                        double precision[]);
DROP FUNCTION claim_rows(timestamptz, integer, text, double precision, text[]);
DROP FUNCTION apply_attempt_decision(uuid, bigint, text, timestamptz, jsonb, boolean);
DROP FUNCTION apply_decision(uuid, bigint, text, timestamptz, jsonb, boolean);

CREATE TABLE cancellation_state (
    id                  uuid PRIMARY KEY,
    provider            text NOT NULL,
    account             text NOT NULL,
    resource_id         text NOT NULL,
    callback_url        text,
    status              text NOT NULL CONSTRAINT cancellation_state_status_check
        CHECK (status IN ('queued', 'sending', 'awaiting_confirmation', 'confirmed', 'failed')),
    version             bigint NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL,
    attempts            integer NOT NULL DEFAULT 0,
    needs_check         boolean NOT NULL DEFAULT false,
    next_attempt_at     timestamptz,
    lease_owner         text,
    lease_expires_at    timestamptz,
    confirm_by          timestamptz,
    submitted_at        timestamptz,
    first_sent_at       timestamptz,
    confirmed_at        timestamptz,
    outcome             text,
    confirmed_via       text CONSTRAINT cancellation_state_confirmed_via_check
        CHECK (confirmed_via IN ('webhook', 'provider_response', 'reconciliation')),
    provider_state      jsonb,
    last_error          jsonb,
    transition_cause    text,
    transition_evidence jsonb
);

-- Updated three times in a cancel's life: room on each page for the new versions, and the
-- autovacuum of a queue (as cancellations had since 0010).
ALTER TABLE cancellation_state SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

INSERT INTO cancellation_state (
    id, provider, account, resource_id, callback_url, status, version, updated_at, attempts,
    needs_check, next_attempt_at, lease_owner, lease_expires_at, confirm_by, submitted_at,
    first_sent_at, confirmed_at, outcome, confirmed_via, provider_state, last_error,
    transition_cause, transition_evidence
)
SELECT
    id, provider, account, resource_id, callback_url, status, version, updated_at, attempts,
    needs_check, next_attempt_at, lease_owner, lease_expires_at, confirm_by, submitted_at,
    first_sent_at, confirmed_at, outcome, confirmed_via, provider_state, last_error,
    transition_cause, transition_evidence
FROM cancellations;

-- As 0015 had it on cancellations (rows written before are not checked).
ALTER TABLE cancellation_state ADD CONSTRAINT cancellation_state_confirmed_at_is_the_end
    CHECK (status <> 'confirmed' OR confirmed_at = updated_at) NOT VALID;

CREATE INDEX cancellation_state_due ON cancellation_state (next_attempt_at)
    WHERE status = 'queued';
CREATE INDEX cancellation_state_leased ON cancellation_state (lease_expires_at)
    WHERE status = 'sending';
CREATE INDEX cancellation_state_overdue ON cancellation_state (confirm_by)
    WHERE status = 'awaiting_confirmation';
CREATE INDEX cancellation_state_terminal_at ON cancellation_state (updated_at)
    WHERE status IN ('confirmed', 'failed');
CREATE UNIQUE INDEX cancellation_state_one_open ON cancellation_state
    (provider, account, resource_id) WHERE status IN ('queued', 'sending', 'awaiting_confirmation');

DROP TRIGGER transition ON cancellations;
DROP TRIGGER transition_on_insert ON cancellations;
DROP TRIGGER cancellation_changed ON cancellations;
DROP TRIGGER callback_on_terminal ON cancellations;
DROP TRIGGER uncount_on_delete ON cancellations;
DROP TRIGGER uncount_on_truncate ON cancellations;
DROP INDEX cancellations_due, cancellations_leased, cancellations_overdue,
           cancellations_terminal_at, cancellations_one_open;

ALTER TABLE cancellations
    DROP COLUMN status,
    DROP COLUMN outcome,
    DROP COLUMN confirmed_via,
    DROP COLUMN attempts,
    DROP COLUMN version,
    DROP COLUMN needs_check,
    DROP COLUMN provider_state,
    DROP COLUMN next_attempt_at,
    DROP COLUMN lease_owner,
    DROP COLUMN lease_expires_at,
    DROP COLUMN last_error,
    DROP COLUMN updated_at,
    DROP COLUMN submitted_at,
    DROP COLUMN confirm_by,
    DROP COLUMN confirmed_at,
    DROP COLUMN first_sent_at,
    DROP COLUMN transition_cause,
    DROP COLUMN transition_evidence;
ALTER TABLE cancellations RENAME TO cancellation_requests;
ALTER TABLE cancellation_requests RENAME CONSTRAINT cancellations_pkey
    TO cancellation_requests_pkey;
ALTER INDEX cancellations_newest RENAME TO cancellation_requests_newest;
ALTER INDEX cancellations_resource RENAME TO cancellation_requests_resource;
ALTER INDEX cancellations_idempotency_key RENAME TO cancellation_requests_idempotency_key;
-- Never updated: pages can be filled.
ALTER TABLE cancellation_requests SET (fillfactor = 100);

CREATE TRIGGER transition BEFORE UPDATE ON cancellation_state
FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status
                   OR NEW.transition_cause IS DISTINCT FROM OLD.transition_cause)
EXECUTE FUNCTION record_transition();
CREATE TRIGGER transition_on_insert AFTER INSERT ON cancellation_state
FOR EACH ROW EXECUTE FUNCTION record_transition();
CREATE TRIGGER cancellation_changed AFTER UPDATE OF version ON cancellation_state
FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
EXECUTE FUNCTION notify_cancellation_changed();
CREATE TRIGGER callback_on_terminal AFTER UPDATE OF status ON cancellation_state
FOR EACH ROW WHEN (NEW.callback_url IS NOT NULL AND NEW.status IN ('confirmed', 'failed')
                   AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION record_callback_delivery();
CREATE TRIGGER uncount_on_delete AFTER DELETE ON cancellation_state
REFERENCING OLD TABLE AS gone
FOR EACH STATEMENT EXECUTE FUNCTION uncount_deleted();
CREATE TRIGGER uncount_on_truncate AFTER TRUNCATE ON cancellation_state
FOR EACH STATEMENT EXECUTE FUNCTION uncount_truncated();

-- The table it replaces, column for column.
CREATE VIEW cancellations AS
SELECT
    r.id, r.provider, r.account, r.resource_id, s.status, s.outcome, s.confirmed_via,
    s.attempts, s.version, s.needs_check, r.reason, r.metadata, r.params, s.provider_state,
    r.idempotency_key, r.request_hash, s.next_attempt_at, s.lease_owner, s.lease_expires_at,
    s.last_error, r.created_at, s.updated_at, s.submitted_at, s.confirm_by, s.confirmed_at,
    s.first_sent_at, r.callback_url, r.callback_receiver, s.transition_cause,
    s.transition_evidence
FROM cancellation_requests r JOIN cancellation_state s ON s.id = r.id;

-- A row of the view from its two halves: what writers return without reading the view.
CREATE FUNCTION as_cancellation(r cancellation_requests, s cancellation_state)
RETURNS cancellations
LANGUAGE sql IMMUTABLE AS $$
    SELECT
        r.id, r.provider, r.account, r.resource_id, s.status, s.outcome, s.confirmed_via,
        s.attempts, s.version, s.needs_check, r.reason, r.metadata, r.params,
        s.provider_state, r.idempotency_key, r.request_hash, s.next_attempt_at,
        s.lease_owner, s.lease_expires_at, s.last_error, r.created_at, s.updated_at,
        s.submitted_at, s.confirm_by, s.confirmed_at, s.first_sent_at, r.callback_url,
        r.callback_receiver, s.transition_cause, s.transition_evidence;
$$;

-- Writes to the view go to the two tables: a bulk load, an operator's correction, a test.
CREATE FUNCTION write_cancellation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO cancellation_requests (
            id, provider, account, resource_id, reason, metadata, params, idempotency_key,
            request_hash, created_at, callback_url, callback_receiver
        )
        VALUES (NEW.id, NEW.provider, NEW.account, NEW.resource_id, NEW.reason,
                coalesce(NEW.metadata, '{}'), coalesce(NEW.params, '{}'), NEW.idempotency_key,
                NEW.request_hash, NEW.created_at, NEW.callback_url, NEW.callback_receiver);
        INSERT INTO cancellation_state (
            id, provider, account, resource_id, callback_url, status, version, updated_at,
            attempts, needs_check, next_attempt_at, lease_owner, lease_expires_at,
            confirm_by, submitted_at, first_sent_at, confirmed_at, outcome, confirmed_via,
            provider_state, last_error, transition_cause, transition_evidence
        )
        VALUES (NEW.id, NEW.provider, NEW.account, NEW.resource_id, NEW.callback_url,
                NEW.status, coalesce(NEW.version, 0), NEW.updated_at,
                coalesce(NEW.attempts, 0), coalesce(NEW.needs_check, false),
                NEW.next_attempt_at, NEW.lease_owner, NEW.lease_expires_at, NEW.confirm_by,
                NEW.submitted_at, NEW.first_sent_at, NEW.confirmed_at, NEW.outcome,
                NEW.confirmed_via, NEW.provider_state, NEW.last_error, NEW.transition_cause,
                NEW.transition_evidence);
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        IF (NEW.id, NEW.provider, NEW.account, NEW.resource_id, NEW.reason, NEW.metadata,
            NEW.params, NEW.idempotency_key, NEW.request_hash, NEW.created_at,
            NEW.callback_url, NEW.callback_receiver)
           IS DISTINCT FROM
           (OLD.id, OLD.provider, OLD.account, OLD.resource_id, OLD.reason, OLD.metadata,
            OLD.params, OLD.idempotency_key, OLD.request_hash, OLD.created_at,
            OLD.callback_url, OLD.callback_receiver) THEN
            UPDATE cancellation_requests
            SET id = NEW.id, provider = NEW.provider, account = NEW.account,
                resource_id = NEW.resource_id, reason = NEW.reason, metadata = NEW.metadata,
                params = NEW.params, idempotency_key = NEW.idempotency_key,
                request_hash = NEW.request_hash, created_at = NEW.created_at,
                callback_url = NEW.callback_url, callback_receiver = NEW.callback_receiver
            WHERE id = OLD.id;
        END IF;
        UPDATE cancellation_state
        SET id = NEW.id, provider = NEW.provider, account = NEW.account,
            resource_id = NEW.resource_id, callback_url = NEW.callback_url,
            status = NEW.status, version = NEW.version, updated_at = NEW.updated_at,
            attempts = NEW.attempts, needs_check = NEW.needs_check,
            next_attempt_at = NEW.next_attempt_at, lease_owner = NEW.lease_owner,
            lease_expires_at = NEW.lease_expires_at, confirm_by = NEW.confirm_by,
            submitted_at = NEW.submitted_at, first_sent_at = NEW.first_sent_at,
            confirmed_at = NEW.confirmed_at, outcome = NEW.outcome,
            confirmed_via = NEW.confirmed_via, provider_state = NEW.provider_state,
            last_error = NEW.last_error, transition_cause = NEW.transition_cause,
            transition_evidence = NEW.transition_evidence
        WHERE id = OLD.id;
        RETURN NEW;
    END IF;
    DELETE FROM cancellation_state WHERE id = OLD.id;
    DELETE FROM cancellation_requests WHERE id = OLD.id;
    RETURN OLD;
END;
$$;

CREATE TRIGGER write_through INSTEAD OF INSERT OR UPDATE OR DELETE ON cancellations
FOR EACH ROW EXECUTE FUNCTION write_cancellation();

-- As in 0013, on cancellation_state; returns the new state alone (the caller holds the
-- request, which never changes: store/repository.py merges the two).
CREATE FUNCTION apply_decision(
    p_id uuid, p_version bigint, p_from text, p_now timestamptz, p_decision jsonb,
    p_submitted boolean
) RETURNS SETOF cancellation_state
LANGUAGE sql AS $$
        UPDATE cancellation_state s
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
        RETURNING *;
$$;

-- As in 0013 (the claim from cancellation_state_due in next_attempt_at order, enable_sort off);
-- returns the view's rows.
CREATE FUNCTION claim_rows(
    p_now timestamptz, p_limit integer, p_owner text, p_lease_s double precision,
    p_accounts text[]
) RETURNS SETOF cancellations
LANGUAGE sql
SET enable_sort = off
AS $$
    WITH due AS (
        SELECT id FROM cancellation_state
        WHERE status = 'queued' AND next_attempt_at <= p_now
          AND provider || ':' || account = ANY (p_accounts)
        ORDER BY next_attempt_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE cancellation_state s
        SET status = 'sending', attempts = s.attempts + 1, version = s.version + 1,
            lease_owner = p_owner, lease_expires_at = p_now + make_interval(secs => p_lease_s),
            updated_at = p_now, first_sent_at = coalesce(s.first_sent_at, p_now),
            transition_cause = 'claimed',
            transition_evidence = jsonb_build_object('attempt', s.attempts + 1,
                                                     'worker', p_owner,
                                                     'status_check_first', s.needs_check)
        FROM due WHERE s.id = due.id
        RETURNING s
    )
    SELECT c.*
    FROM claimed JOIN cancellation_requests r ON r.id = (claimed.s).id,
         LATERAL as_cancellation(r, claimed.s) c;
$$;

-- As before, on the view's row type.
CREATE FUNCTION claim_due(p_now timestamp with time zone, p_limit integer, p_owner text, p_lease_s double precision, p_accounts text[], p_per_min double precision[]) RETURNS SETOF public.cancellations
    LANGUAGE plpgsql
    AS $$
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

-- As before, on cancellation_state's row type (as apply_decision).
CREATE FUNCTION apply_attempt_decision(p_id uuid, p_version bigint, p_from text, p_now timestamp with time zone, p_decision jsonb, p_submitted boolean) RETURNS SETOF cancellation_state
    LANGUAGE plpgsql
    AS $$
DECLARE
    applied cancellation_state;
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

-- As in 0012: the request and its state written to their tables, the open
-- cancellation found in cancellation_state_one_open.
CREATE FUNCTION enqueue_cancellation(p_id uuid, p_provider text, p_account text, p_resource_id text, p_reason text, p_metadata jsonb, p_params jsonb, p_idempotency_key text, p_request_hash text, p_now timestamp with time zone, p_callback_url text, p_enqueued_by text, OUT result text, OUT cancellation public.cancellations) RETURNS record
    LANGUAGE plpgsql
    AS $$
DECLARE
    request cancellation_requests;
    state cancellation_state;
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

    SELECT c.* INTO cancellation
    FROM cancellation_state s JOIN cancellation_requests r ON r.id = s.id,
         LATERAL as_cancellation(r, s) c
    WHERE s.provider = p_provider AND s.account = p_account AND s.resource_id = p_resource_id
      AND s.status IN ('queued', 'sending', 'awaiting_confirmation')
    FOR UPDATE OF s;
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

    INSERT INTO cancellation_requests (
        id, provider, account, resource_id, reason, metadata, params, idempotency_key,
        request_hash, created_at, callback_url, callback_receiver
    )
    VALUES (p_id, p_provider, p_account, p_resource_id, p_reason, p_metadata, p_params,
            p_idempotency_key, p_request_hash, p_now, p_callback_url,
            CASE WHEN p_callback_url IS NOT NULL THEN p_enqueued_by END)
    ON CONFLICT DO NOTHING
    RETURNING * INTO request;
    IF NOT FOUND THEN
        -- Lost a race on the idempotency key with a request for another resource.
        SELECT * INTO cancellation FROM cancellations WHERE idempotency_key = p_idempotency_key;
        result := CASE WHEN NOT FOUND THEN 'key_taken'
                       WHEN cancellation.request_hash = p_request_hash THEN 'existing'
                       ELSE 'key_reused' END;
        RETURN;
    END IF;
    INSERT INTO cancellation_state (
        id, provider, account, resource_id, callback_url, status, updated_at, next_attempt_at,
        needs_check, transition_cause, transition_evidence
    )
    VALUES (p_id, p_provider, p_account, p_resource_id, p_callback_url, 'queued', p_now, p_now,
            rule.needs_check, 'enqueued', evidence)
    RETURNING * INTO state;
    cancellation := as_cancellation(request, state);
    IF rule.use_stored THEN
        UPDATE webhook_inbox SET processed_at = p_now, cancellation_id = p_id
        WHERE provider = p_provider AND account = p_account AND resource_id = p_resource_id
          AND processed_at IS NULL AND effect IS NOT NULL;
    END IF;
    result := 'created';
END;
$$;

-- As before, on the view's row type (after the function they call).
CREATE FUNCTION enqueue_cancellation(p_id uuid, p_provider text, p_account text, p_resource_id text, p_reason text, p_metadata jsonb, p_params jsonb, p_idempotency_key text, p_request_hash text, p_now timestamp with time zone, OUT result text, OUT cancellation public.cancellations) RETURNS record
    LANGUAGE sql
    AS $$
    SELECT * FROM enqueue_cancellation(p_id, p_provider, p_account, p_resource_id, p_reason,
                                       p_metadata, p_params, p_idempotency_key,
                                       p_request_hash, p_now, NULL::text, NULL::text);
$$;

CREATE FUNCTION enqueue_cancellation(p_id uuid, p_provider text, p_account text, p_resource_id text, p_reason text, p_metadata jsonb, p_params jsonb, p_idempotency_key text, p_request_hash text, p_now timestamp with time zone, p_callback_url text, OUT result text, OUT cancellation public.cancellations) RETURNS record
    LANGUAGE sql
    AS $$
    SELECT * FROM enqueue_cancellation(p_id, p_provider, p_account, p_resource_id, p_reason,
                                       p_metadata, p_params, p_idempotency_key,
                                       p_request_hash, p_now, p_callback_url, NULL::text);
$$;

-- As in 0012; what it reads of the open cancellation is all in cancellation_state.
CREATE OR REPLACE FUNCTION record_webhook_event(p_provider text, p_account text, p_dedupe_key text, p_resource_id text, p_event_type text, p_event_time timestamp with time zone, p_effect jsonb, p_decision jsonb, p_payload jsonb, p_now timestamp with time zone, p_skew interval, p_settle boolean) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    event_id bigint;
    target cancellation_state;
    rule webhook_rules;
BEGIN
    IF p_resource_id IS NOT NULL THEN
        PERFORM lock_request(p_provider, p_account, p_resource_id);
        IF p_decision IS NOT NULL THEN
            SELECT * INTO target FROM cancellation_state
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
