-- Keep counters for the terminal statuses only, written by the one function that ends a
-- cancellation, instead of a trigger on every statement that touches the table. Open
-- statuses are counted live from their partial indexes (queries.sql, stats): their rows are
-- the backlog, not the history, so the count stays small.
--
-- The statement-level trigger ran a plpgsql function, built transition tables and upserted
-- two counter rows for every state change: 0.13-0.19 ms of Postgres CPU and 260 bytes of
-- WAL per callback (bench, two paired runs each; docs/benchmarks.md), on each of the
-- three state changes of a cancel. Rows are never deleted by the service; whatever deletes
-- terminal rows (a retention job) must take them off cancellation_counts in the same
-- transaction.

DROP TRIGGER cancellation_counts_on_insert ON cancellations;
DROP TRIGGER cancellation_counts_on_update ON cancellations;
DROP TRIGGER cancellation_counts_on_delete ON cancellations;
DROP FUNCTION cancellation_counts_by_statement();

DELETE FROM cancellation_counts WHERE status NOT IN ('confirmed', 'failed');

-- As in 0003, plus the count of a cancellation that ends here (shard: this backend, as
-- before, so concurrent transactions never wait on a counter row).
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
    ), counted AS (
        INSERT INTO cancellation_counts AS c (status, shard, n)
        SELECT status, pg_backend_pid(), 1 FROM updated
        WHERE status IN ('confirmed', 'failed')
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + 1
    )
    SELECT * FROM updated;
$$;
