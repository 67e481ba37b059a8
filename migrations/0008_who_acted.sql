-- Who acted, and the dashboard's sessions (issue 16, items 4-6).
--
-- * The `enqueued` history entry names who enqueued (`token:<name>`, or `anonymous` without
--   tokens), as admin actions do: the 12-argument enqueue_cancellation below wraps the
--   ten-argument one (whatever a migration makes of it) and adds `by` to that entry.
-- * cancellations.callback_receiver: the token name whose per-receiver secret signs the
--   cancellation's completion callbacks (set only when a callback_url is given, so an
--   enqueue without one writes no more than before).
-- * Idempotency keys are scoped per token by the service (the stored key is prefixed with
--   the token's name and 0x1f); the unique index on the stored key is unchanged.
-- * ui_sessions: a dashboard login is a random id; only its SHA-256 is stored, so reading
--   this table gives no one a session. Logout deletes the row; `orchestrator sessions
--   revoke` deletes one token's or all; start-up deletes those of tokens no longer
--   configured.

ALTER TABLE cancellations ADD COLUMN callback_receiver text;

CREATE TABLE ui_sessions (
    id_hash     bytea       PRIMARY KEY,   -- sha256 of the cookie's random id
    token_name  text        NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX ui_sessions_by_token ON ui_sessions (token_name);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);

CREATE FUNCTION enqueue_cancellation(
    p_id uuid, p_provider text, p_account text, p_resource_id text, p_reason text,
    p_metadata jsonb, p_params jsonb, p_idempotency_key text, p_request_hash text,
    p_now timestamptz, p_callback_url text, p_enqueued_by text,
    OUT result text, OUT cancellation cancellations
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
    IF result <> 'created' THEN
        RETURN;
    END IF;
    IF p_callback_url IS NOT NULL THEN
        UPDATE cancellations
        SET callback_url = p_callback_url, callback_receiver = p_enqueued_by
        WHERE id = p_id
        RETURNING * INTO cancellation;
    END IF;
    IF p_enqueued_by IS NOT NULL THEN
        UPDATE cancellation_events
        SET evidence = evidence || jsonb_build_object('by', p_enqueued_by)
        WHERE cancellation_id = p_id AND cause = 'enqueued';
    END IF;
END;
$$;
