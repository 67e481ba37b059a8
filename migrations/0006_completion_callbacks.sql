-- Completion callbacks (issue 12): a caller may ask to be told when its cancellation ends.
--
-- * cancellations.callback_url: where to POST the cancellation once it is confirmed or failed.
-- * callback_deliveries: the outbox. A trigger writes a delivery in the same transaction as
--   the terminal transition, whatever made it (dispatcher, webhook, admin abandon, gave up),
--   so no delivery is lost on a restart. A trigger rather than a restated apply_decision:
--   it holds for every statement that ends a cancellation, now and in later migrations,
--   without copying a function body other migrations also replace; its WHEN clause is
--   evaluated in C for each row whose status is set, and its body runs only for rows that
--   end with a callback_url.
-- * callback_attempts: one row per delivery attempt. Not in cancellation_events: an attempt
--   changes nothing about the cancellation (no status, no version, no NOTIFY), and that table
--   is the transition log lifecycle.TRANSITIONS is checked against. Attempts take their ids
--   from the history's sequence, so the two read as one history ordered by id.

ALTER TABLE cancellations ADD COLUMN callback_url text;

CREATE TABLE callback_deliveries (
    id              uuid        PRIMARY KEY,   -- the webhook-id: the same on every attempt
    cancellation_id uuid        NOT NULL REFERENCES cancellations (id) ON DELETE CASCADE,
    url             text        NOT NULL,
    ended_at        timestamptz NOT NULL,      -- the terminal transition: the retry window's start
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'delivered', 'gave_up')),
    attempts        integer     NOT NULL DEFAULT 0,  -- also the fencing token of a claim
    -- pending: when the next attempt is due; a claim moves it to the end of its lease, so a
    -- worker that dies mid-attempt leaves the delivery due again then.
    next_attempt_at timestamptz NOT NULL,
    lease_owner     text,
    finished_at     timestamptz
);
CREATE INDEX callback_deliveries_due ON callback_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX callback_deliveries_by_cancellation ON callback_deliveries (cancellation_id);

CREATE TABLE callback_attempts (
    id              bigint      PRIMARY KEY DEFAULT nextval('cancellation_events_id_seq'),
    delivery_id     uuid        NOT NULL REFERENCES callback_deliveries (id) ON DELETE CASCADE,
    cancellation_id uuid        NOT NULL REFERENCES cancellations (id) ON DELETE CASCADE,
    at              timestamptz NOT NULL,
    cause           text        NOT NULL
                                CHECK (cause IN ('callback_delivered', 'callback_failed',
                                                 'callback_gave_up')),
    evidence        jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX callback_attempts_by_cancellation ON callback_attempts (cancellation_id, id);

CREATE FUNCTION record_callback_delivery() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO callback_deliveries (id, cancellation_id, url, ended_at, next_attempt_at)
    VALUES (gen_random_uuid(), NEW.id, NEW.callback_url, NEW.updated_at, NEW.updated_at);
    RETURN NULL;
END;
$$;

CREATE TRIGGER callback_on_terminal AFTER UPDATE OF status ON cancellations
    FOR EACH ROW
    WHEN (NEW.callback_url IS NOT NULL AND NEW.status IN ('confirmed', 'failed')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION record_callback_delivery();

-- enqueue_cancellation with a callback_url: wraps the ten-argument function (whatever a
-- migration makes of it) and stores the URL on a cancellation it created. An answer that
-- finds an existing cancellation keeps that one's callback_url.
CREATE FUNCTION enqueue_cancellation(
    p_id uuid, p_provider text, p_account text, p_resource_id text, p_reason text,
    p_metadata jsonb, p_params jsonb, p_idempotency_key text, p_request_hash text,
    p_now timestamptz, p_callback_url text, OUT result text, OUT cancellation cancellations
)
LANGUAGE plpgsql AS $$
DECLARE
    answer record;
BEGIN
    SELECT * INTO answer
    FROM enqueue_cancellation(p_id, p_provider, p_account, p_resource_id, p_reason, p_metadata,
                              p_params, p_idempotency_key, p_request_hash, p_now);
    result := answer.result;
    cancellation := answer.cancellation;
    IF result = 'created' AND p_callback_url IS NOT NULL THEN
        UPDATE cancellations SET callback_url = p_callback_url WHERE id = p_id
        RETURNING * INTO cancellation;
    END IF;
END;
$$;
