-- The cancellation lifecycle: one row per accepted cancel, its history, and the webhook inbox.

CREATE TABLE cancellations (
    id               uuid PRIMARY KEY,
    provider         text        NOT NULL,
    account          text        NOT NULL,
    resource_id      text        NOT NULL,
    status           text        NOT NULL
        CHECK (status IN ('queued', 'sending', 'awaiting_confirmation', 'confirmed', 'failed')),
    outcome          text,
    confirmed_via    text CHECK (confirmed_via IN ('webhook', 'provider_response', 'reconciliation')),
    attempts         integer     NOT NULL DEFAULT 0,
    -- Fencing token: bumped by every state change; every write is conditional on it.
    version          bigint      NOT NULL DEFAULT 0,
    -- Set by the sweeper: the next attempt checks the provider's status before re-sending.
    needs_check      boolean     NOT NULL DEFAULT false,
    reason           text,
    metadata         jsonb       NOT NULL DEFAULT '{}',
    params           jsonb       NOT NULL DEFAULT '{}',
    provider_state   jsonb,
    idempotency_key  text,
    request_hash     text        NOT NULL,
    next_attempt_at  timestamptz,
    lease_owner      text,
    lease_expires_at timestamptz,
    last_error       jsonb,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    submitted_at     timestamptz,
    confirm_by       timestamptz,
    confirmed_at     timestamptz
);

-- At most one open cancellation per request: enqueueing again returns the open one.
CREATE UNIQUE INDEX cancellations_one_open ON cancellations (provider, account, resource_id)
    WHERE status IN ('queued', 'sending', 'awaiting_confirmation');
CREATE UNIQUE INDEX cancellations_idempotency_key ON cancellations (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Partial indexes keep the dispatcher and the sweeper proportional to the rows they act on.
CREATE INDEX cancellations_due ON cancellations (next_attempt_at) WHERE status = 'queued';
CREATE INDEX cancellations_leased ON cancellations (lease_expires_at) WHERE status = 'sending';
CREATE INDEX cancellations_overdue ON cancellations (confirm_by)
    WHERE status = 'awaiting_confirmation';
CREATE INDEX cancellations_newest ON cancellations (created_at DESC, id DESC);
CREATE INDEX cancellations_resource ON cancellations (resource_id);
CREATE INDEX cancellations_confirmed_at ON cancellations (confirmed_at)
    WHERE confirmed_at IS NOT NULL;

CREATE TABLE cancellation_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cancellation_id uuid        NOT NULL REFERENCES cancellations (id) ON DELETE CASCADE,
    at              timestamptz NOT NULL,
    from_status     text,
    to_status       text        NOT NULL,
    cause           text        NOT NULL,
    evidence        jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX cancellation_events_by_cancellation ON cancellation_events (cancellation_id, id);

-- Every verified webhook event, stored once. Events that settle a request are kept until a
-- cancellation for that request consumes them (processed_at), even if none exists yet.
CREATE TABLE webhook_inbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider        text        NOT NULL,
    account         text        NOT NULL,
    dedupe_key      text        NOT NULL,
    resource_id     text,
    event_type      text        NOT NULL,
    event_time      timestamptz,
    effect          jsonb,
    payload         jsonb       NOT NULL,
    received_at     timestamptz NOT NULL,
    processed_at    timestamptz,
    cancellation_id uuid,
    UNIQUE (provider, dedupe_key)
);
CREATE INDEX webhook_inbox_pending ON webhook_inbox (provider, account, resource_id)
    WHERE processed_at IS NULL AND effect IS NOT NULL;

-- Per-status counts for /v1/stats without scanning the table. Each backend writes only its own
-- rows (shard = its pid), so concurrent transactions never wait on, or deadlock over, a counter;
-- the sweeper folds the shards into shard 0 now and then.
CREATE TABLE cancellation_counts (
    status text    NOT NULL,
    shard  integer NOT NULL,
    n      bigint  NOT NULL,
    PRIMARY KEY (status, shard)
);

CREATE FUNCTION cancellation_counts_track() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO cancellation_counts AS c (status, shard, n)
        VALUES (OLD.status, pg_backend_pid(), -1)
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n - 1;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO cancellation_counts AS c (status, shard, n)
        VALUES (NEW.status, pg_backend_pid(), 1)
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + 1;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER cancellation_counts_on_insert_delete
    AFTER INSERT OR DELETE ON cancellations
    FOR EACH ROW EXECUTE FUNCTION cancellation_counts_track();
CREATE TRIGGER cancellation_counts_on_status_change
    AFTER UPDATE OF status ON cancellations
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION cancellation_counts_track();
