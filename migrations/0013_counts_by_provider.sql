-- Counters by provider and status, kept by the table itself (issue 18, item 5): /v1/stats and
-- the dashboard's counts read them, so polling costs the same at 10 million rows as at 10
-- (the dashboard's count was a scan of the whole table: 286 ms at 1M rows, 4.2 s at 10M).
--
-- * provider_counts holds the terminal statuses (confirmed, failed) by provider, sharded by
--   backend as cancellation_counts was (0001): each backend upserts only its own rows, so
--   concurrent transactions never wait on, or deadlock over, a counter; the sweeper folds the
--   shards into shard 0 (queries.sql, fold_counts).
-- * Open statuses are not counted here: they stay live counts, each from its partial index
--   (queries.sql, stats and counts_by_provider), bounded by the backlog, not the history.
--   Counting them too would cost two upserts on every transition (about seven per cancel
--   instead of one); 0004 measured that as 0.13-0.19 ms of Postgres CPU and 260 bytes of WAL
--   per state change, and issue 18 wants the WAL per cancel down, not up.
-- * One place counts an arrival, whichever path made it: record_transition (0011), which
--   every INSERT and status change of cancellations passes. apply_decision no longer counts.
--   A departure is counted by a statement trigger on DELETE (one upsert per provider and
--   status a statement deletes, from its transition table), so retention, or any other
--   delete, takes its rows off; TRUNCATE empties the counters.
-- * cancellation_counts is no longer written or read by this release. It stays (frozen) for
--   a rolled-back release, whose fold and retention statements still write it and whose
--   stats read it; a later release drops it.
-- * The counters are filled from the rows already there, under a SHARE lock: no transition
--   commits between the count and the triggers that keep it (writers wait for this
--   migration; it reads the table once).

LOCK TABLE cancellations IN SHARE MODE;

CREATE TABLE provider_counts (
    provider text   NOT NULL,
    status   text   NOT NULL,
    shard    integer NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (provider, status, shard)
);

-- A few dozen rows, each updated at every terminal transition of its backend: the updates
-- are HOT (n is no key), and a low fillfactor plus an eager autovacuum keep pages few.
ALTER TABLE provider_counts SET (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

INSERT INTO provider_counts (provider, status, shard, n)
SELECT provider, status, 0, count(*) FROM cancellations
WHERE status IN ('confirmed', 'failed')
GROUP BY provider, status;

-- As in 0011, plus the count of a row that arrives at a terminal status.
CREATE OR REPLACE FUNCTION record_transition() RETURNS trigger
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
    IF NEW.status IN ('confirmed', 'failed') AND was IS DISTINCT FROM NEW.status THEN
        INSERT INTO provider_counts AS c (provider, status, shard, n)
        VALUES (NEW.provider, NEW.status, pg_backend_pid(), 1)
        ON CONFLICT (provider, status, shard) DO UPDATE SET n = c.n + 1;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.transition_cause := NULL;
        NEW.transition_evidence := NULL;
    END IF;
    RETURN NEW;
END;
$$;

-- Deleted terminal rows come off their counters, one upsert per provider and status.
CREATE FUNCTION uncount_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO provider_counts AS c (provider, status, shard, n)
    SELECT provider, status, pg_backend_pid(), -count(*) FROM gone
    WHERE status IN ('confirmed', 'failed')
    GROUP BY provider, status
    ON CONFLICT (provider, status, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END;
$$;

CREATE TRIGGER uncount_on_delete AFTER DELETE ON cancellations
REFERENCING OLD TABLE AS gone
FOR EACH STATEMENT EXECUTE FUNCTION uncount_deleted();

CREATE FUNCTION uncount_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM provider_counts;
    RETURN NULL;
END;
$$;

CREATE TRIGGER uncount_on_truncate AFTER TRUNCATE ON cancellations
FOR EACH STATEMENT EXECUTE FUNCTION uncount_truncated();

-- As in 0011, without the count (record_transition keeps it now).
CREATE OR REPLACE FUNCTION apply_decision(
    p_id uuid, p_version bigint, p_from text, p_now timestamptz, p_decision jsonb,
    p_submitted boolean
) RETURNS SETOF cancellations
LANGUAGE sql AS $$
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
    RETURNING *;
$$;

-- The claim reads the due index in its order and stops at p_limit rows. Its estimate of the
-- due rows multiplies status = 'queued' by next_attempt_at <= now as if independent (only
-- queued rows have a next_attempt_at), so it often expects one row and plans a bitmap scan
-- of every due entry plus a sort: at 1M rows, after the bench's sweep rounds, each claim of
-- 32 fetched 8,416 tuples (every due row and every dead entry, which a bitmap scan never
-- marks dead). In index order the scan stops after p_limit live rows, and the entries of
-- rows claimed before are marked dead (LP_DEAD) by the first scan that finds their heap
-- tuple dead to all, so later claims skip them inside the leaf page without a heap visit
-- (docs/benchmarks.md, "Counters and the claim at scale"). No sort can answer the ORDER BY
-- with sorts off; the setting holds for this function's statements only.
ALTER FUNCTION claim_rows(timestamptz, integer, text, double precision, text[])
    SET enable_sort = off;
