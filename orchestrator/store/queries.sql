-- Every statement the service sends, named. Loaded by orchestrator/store/queries.py.
-- Times are always parameters ($now), never now(), so tests can move the clock. The
-- functions called here are created by the migrations (0003_one_round_trip.sql).

-- name: enqueue
-- Record a cancellation, or find the one that answers this request; one round trip.
SELECT (e.cancellation).*, e.result
FROM enqueue_cancellation($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) e;

-- name: record_webhook_event
-- Store a verified event once and settle the open cancellation it reports; one round trip.
SELECT record_webhook_event($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);

-- name: apply_decision
-- Carry out one transition if the row's version is still $2; no row if the fence held.
SELECT * FROM apply_decision($1, $2, $3, $4, $5, $6);

-- name: get_cancellation
SELECT * FROM cancellations WHERE id = $1;

-- name: list_cancellations
-- Newest first; keyset pagination on (created_at, id). Null filters match everything.
SELECT * FROM cancellations
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR provider = $2)
  AND ($3::text IS NULL OR resource_id = $3)
  AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $6;

-- name: list_events
-- A cancellation's history, oldest first; no row at all if the cancellation does not exist.
SELECT e.id, e.at, e.from_status, e.to_status, e.cause, e.evidence
FROM cancellations c LEFT JOIN cancellation_events e ON e.cancellation_id = c.id
WHERE c.id = $1
ORDER BY e.id;

-- name: claim_due
-- Take up to $2 due rows under a lease; attempts and the fencing token move with the claim.
-- $4 lists provider:account pairs to leave alone (throttled); $6, if not null, the only ones
-- to take.
WITH due AS (
    SELECT id FROM cancellations
    WHERE status = 'queued' AND next_attempt_at <= $1
      AND NOT (provider || ':' || account = ANY ($4::text[]))
      AND ($6::text[] IS NULL OR provider || ':' || account = ANY ($6::text[]))
    ORDER BY next_attempt_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE cancellations c
    SET status = 'sending', attempts = c.attempts + 1, version = c.version + 1,
        lease_owner = $3, lease_expires_at = $1 + make_interval(secs => $5), updated_at = $1
    FROM due WHERE c.id = due.id
    RETURNING c.*
), event AS (
    INSERT INTO cancellation_events (cancellation_id, at, from_status, to_status, cause, evidence)
    SELECT id, $1, 'queued', 'sending', 'claimed',
           jsonb_build_object('attempt', attempts, 'worker', $3, 'status_check_first', needs_check)
    FROM claimed
)
SELECT * FROM claimed;

-- name: requeue_expired_leases
-- A lease that ran out means its worker died or stalled: put the row back in the queue.
WITH expired AS (
    SELECT id FROM cancellations
    WHERE status = 'sending' AND lease_expires_at <= $1
    ORDER BY lease_expires_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), requeued AS (
    UPDATE cancellations c
    SET status = 'queued', version = c.version + 1, next_attempt_at = $1, updated_at = $1,
        lease_owner = NULL, lease_expires_at = NULL
    FROM expired WHERE c.id = expired.id
    RETURNING c.id, c.attempts
), event AS (
    INSERT INTO cancellation_events (cancellation_id, at, from_status, to_status, cause, evidence)
    SELECT id, $1, 'sending', 'queued', 'lease_expired', jsonb_build_object('attempt', attempts)
    FROM requeued
)
SELECT count(*) FROM requeued;

-- name: requeue_overdue
-- No confirmation by confirm_by: hand the row to the dispatcher to check status, then re-send.
WITH overdue AS (
    SELECT id FROM cancellations
    WHERE status = 'awaiting_confirmation' AND confirm_by <= $1
    ORDER BY confirm_by
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), requeued AS (
    UPDATE cancellations c
    SET status = 'queued', version = c.version + 1, needs_check = true,
        next_attempt_at = $1, updated_at = $1
    FROM overdue WHERE c.id = overdue.id
    RETURNING c.id, c.confirm_by
), event AS (
    INSERT INTO cancellation_events (cancellation_id, at, from_status, to_status, cause, evidence)
    SELECT id, $1, 'awaiting_confirmation', 'queued', 'confirmation_overdue',
           jsonb_build_object('confirm_by', confirm_by)
    FROM requeued
)
SELECT count(*) FROM requeued;

-- name: release_leases
-- Graceful stop: give back what this worker holds so another can take it at once.
WITH released AS (
    UPDATE cancellations
    SET status = 'queued', version = version + 1, next_attempt_at = $2, updated_at = $2,
        lease_owner = NULL, lease_expires_at = NULL
    WHERE status = 'sending' AND lease_owner = $1
    RETURNING id
), event AS (
    INSERT INTO cancellation_events (cancellation_id, at, from_status, to_status, cause, evidence)
    SELECT id, $2, 'sending', 'queued', 'released_on_shutdown', jsonb_build_object('worker', $1)
    FROM released
)
SELECT count(*) FROM released;

-- name: stats
-- Terminal statuses from their counters (apply_decision keeps them); open ones counted live,
-- each from its partial index; overdue and last_confirmed_at use indexes too.
SELECT
    (SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb) FROM (
        SELECT status, sum(n)::bigint AS n FROM cancellation_counts GROUP BY status
        UNION ALL
        SELECT 'queued', count(*) FROM cancellations WHERE status = 'queued'
        UNION ALL
        SELECT 'sending', count(*) FROM cancellations WHERE status = 'sending'
        UNION ALL
        SELECT 'awaiting_confirmation', count(*) FROM cancellations
        WHERE status = 'awaiting_confirmation'
    ) s) AS counts,
    (SELECT count(*) FROM cancellations
     WHERE status = 'awaiting_confirmation' AND confirm_by <= $1) AS overdue,
    (SELECT max(confirmed_at) FROM cancellations WHERE confirmed_at IS NOT NULL)
        AS last_confirmed_at;

-- name: fold_counts
-- Fold per-backend counter shards into shard 0; rows a live transaction holds are skipped.
WITH folded AS (
    DELETE FROM cancellation_counts
    WHERE (status, shard) IN (
        SELECT status, shard FROM cancellation_counts WHERE shard <> 0
        FOR UPDATE SKIP LOCKED
    )
    RETURNING status, n
)
INSERT INTO cancellation_counts AS c (status, shard, n)
SELECT status, 0, sum(n) FROM folded GROUP BY status
ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;

-- name: try_lock_fold
SELECT pg_try_advisory_xact_lock(7305318221);

-- name: demo_summary
-- Every cancellation's final state and time to confirmation, for the demo's summary.
SELECT provider, resource_id, status, outcome, confirmed_via, attempts,
       extract(epoch FROM confirmed_at - created_at) AS seconds
FROM cancellations;

-- name: ping
SELECT 1;

-- name: database_clock
-- The server's wall clock, to compare with the instance's at start (the one statement that
-- reads the database's time: it is what is being checked).
SELECT clock_timestamp();
