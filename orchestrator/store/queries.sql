-- Every statement the service sends, named. Loaded by orchestrator/store/queries.py.
-- Times are always parameters ($now), never now(), so tests can move the clock. The
-- functions called here are created by the migrations; migrations/schema.sql shows them all.
-- A transition sets transition_cause and transition_evidence in the same UPDATE; the
-- trigger record_transition (0011) checks it and writes the history row: no statement here
-- writes cancellation_events.

-- name: enqueue
-- Record a cancellation, or find the one that answers this request; one round trip.
SELECT (e.cancellation).*, e.result
FROM enqueue_cancellation($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) e;

-- name: enqueue_batch
-- Many enqueues in one statement (one transaction): enqueue_cancellation for each row, so
-- each keeps its per-request advisory lock and idempotency rules. The caller sends the rows
-- sorted by request, so concurrent batches take their locks in one order; $10 is their
-- position in the caller's list.
SELECT b.position, (e.cancellation).*, e.result
FROM (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
                $7::jsonb[], $8::text[], $9::text[], $10::int[], $11::text[], $13::text[])
         WITH ORDINALITY AS u(id, provider, account, resource_id, reason, metadata, params,
                              idempotency_key, request_hash, position, callback_url,
                              enqueued_by, n)
    ORDER BY n
) b,
LATERAL enqueue_cancellation(b.id, b.provider, b.account, b.resource_id, b.reason,
                             b.metadata, b.params, b.idempotency_key, b.request_hash, $12,
                             b.callback_url, b.enqueued_by) e;

-- name: record_webhook_event
-- Store a verified event once and act on the open cancellation it reports; one round trip.
-- When the event settled it, also that cancellation's created_at (for the time-to-terminal
-- histogram): the statement's snapshot predates the function's update, so the row still
-- reads open here, and the lookup is one probe of cancellation_state_one_open (0016) and
-- one of cancellation_requests' primary key, through the view.
SELECT r.outcome, settled.created_at
FROM record_webhook_event($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) AS r(outcome)
LEFT JOIN LATERAL (
    SELECT created_at FROM cancellations
    WHERE r.outcome = 'applied'
      AND provider = $1 AND account = $2 AND resource_id = $4
      AND status IN ('queued', 'sending', 'awaiting_confirmation')
) settled ON true;

-- name: apply_decision
-- Carry out one transition if the row's version is still $2; no row if the fence held.
-- The end of an attempt also uses the callbacks that arrived during it (0009; the rule is
-- domain/webhook_rules.attempt_end, looked up in attempt_end_rules since 0012).
SELECT * FROM apply_attempt_decision($1, $2, $3, $4, $5, $6);

-- name: apply_decisions
-- Many apply_decision, one statement (one transaction; store/shared.py): each fenced by its
-- version as alone. The caller sends the items sorted by id, so concurrent groups lock rows
-- in one order; $7 is their position in the caller's list. A fenced item has a row of nulls
-- but its position (LEFT JOIN: a set-returning function that returns nothing would drop it).
SELECT b.position, a.*
FROM (
    SELECT *
    FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::timestamptz[], $5::jsonb[],
                $6::boolean[], $7::int[])
         WITH ORDINALITY AS u(id, version, from_status, now, decision, submitted, position, n)
    ORDER BY n
) b
LEFT JOIN LATERAL apply_attempt_decision(b.id, b.version, b.from_status, b.now, b.decision,
                                         b.submitted) a ON true;

-- name: record_webhook_events
-- Many record_webhook_event, one statement (one transaction; store/shared.py). The caller
-- sends the events sorted by (provider, account, resource_id), the order enqueues use, so
-- concurrent groups take their per-request advisory locks in one order; $13 is their
-- position in the caller's list. settled.created_at as in record_webhook_event above: the
-- statement's snapshot predates every function call in it.
SELECT b.position, r.outcome, settled.created_at
FROM (
    SELECT *
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                $6::timestamptz[], $7::jsonb[], $8::jsonb[], $9::jsonb[], $10::timestamptz[],
                $11::interval[], $12::boolean[], $13::int[])
         WITH ORDINALITY AS u(provider, account, dedupe_key, resource_id, event_type,
                              event_time, effect, decision, payload, now, skew, settle,
                              position, n)
    ORDER BY n
) b
CROSS JOIN LATERAL record_webhook_event(b.provider, b.account, b.dedupe_key, b.resource_id,
                                        b.event_type, b.event_time, b.effect, b.decision,
                                        b.payload, b.now, b.skew, b.settle) AS r(outcome)
LEFT JOIN LATERAL (
    SELECT created_at FROM cancellations
    WHERE r.outcome = 'applied'
      AND provider = b.provider AND account = b.account AND resource_id = b.resource_id
      AND status IN ('queued', 'sending', 'awaiting_confirmation')
) settled ON true;

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
-- A page of a cancellation's history, oldest first, after event id $2, at most $3 rows; no
-- row at all if the cancellation does not exist (one row with a NULL id if it exists but
-- has no event after $2). Its callback attempts (0006) are part of it, at the status they
-- were made in: both tables number their rows from one sequence, so the id orders them.
SELECT e.id, e.at, e.from_status, e.to_status, e.cause, e.evidence
FROM cancellations c
LEFT JOIN cancellation_events e ON e.cancellation_id = c.id AND e.id > $2
WHERE c.id = $1
UNION ALL
SELECT a.id, a.at, c.status, c.status, a.cause, a.evidence
FROM callback_attempts a JOIN cancellations c ON c.id = a.cancellation_id
WHERE a.cancellation_id = $1 AND a.id > $2
ORDER BY id
LIMIT $3;

-- name: counts_by_provider
-- The dashboard's table: how many cancellations each provider has in each status. Terminal
-- ones from their counters (0013: provider_counts, kept by the table's triggers), open ones
-- counted live in one scan of cancellation_state_one_open (0016), whose predicate is exactly the open
-- statuses: the cost follows the backlog and the number of providers, never the table's
-- size. A status without a row is absent.
SELECT provider, status, n FROM (
    SELECT provider, status, sum(n)::bigint AS n FROM provider_counts
    GROUP BY provider, status HAVING sum(n) <> 0
    UNION ALL
    SELECT provider, status, count(*) FROM cancellation_state
    WHERE status IN ('queued', 'sending', 'awaiting_confirmation')
    GROUP BY provider, status
) counts
ORDER BY provider, status;

-- name: overdue_cancellations
-- Awaiting a confirmation past confirm_by, longest overdue first (the overdue index).
SELECT * FROM cancellations
WHERE status = 'awaiting_confirmation' AND confirm_by <= $1
ORDER BY confirm_by
LIMIT $2;

-- name: recent_failures
-- The cancellations that ended failed most recently (the terminal-rows index).
SELECT * FROM cancellations
WHERE status = 'failed'
ORDER BY updated_at DESC, id DESC
LIMIT $1;

-- name: claim_due
-- Lease up to $2 due rows of the accounts $5 (limits per minute $6, NULL for none) within
-- each account's shared budget; one round trip.
SELECT * FROM claim_due($1, $2, $3, $4, $5, $6);

-- name: take_call
-- One more call from a limited account's budget: 0, or the seconds until one is free.
SELECT take_call($1, $2, $3);

-- name: pause_account
-- A provider said wait: no instance calls this account before $2.
SELECT pause_account($1, $2, $3);

-- name: requeue_expired_leases
-- A lease that ran out means its worker died or stalled; a lease whose owner is one of $3
-- (owners_without_lock saw them without their lock, twice) and still holds no lock means
-- its instance is gone: either way the row goes back to the queue, its attempt counted.
-- Each try takes the owner's lock for this transaction only, so a live holder makes it fail,
-- and an owner re-taking its lock meanwhile waits for this short transaction, then keeps
-- whatever this one did not release.
WITH gone AS (
    SELECT owner FROM unnest($3::text[]) AS owner
    WHERE pg_try_advisory_xact_lock(hashtextextended(owner, 0))
), expired AS (
    SELECT id, lease_owner, lease_expires_at <= $1 AS ran_out FROM cancellation_state
    WHERE status = 'sending'
      AND (lease_expires_at <= $1 OR lease_owner IN (SELECT owner FROM gone))
    ORDER BY lease_expires_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), requeued AS (
    UPDATE cancellation_state c
    SET status = 'queued', version = c.version + 1, next_attempt_at = $1, updated_at = $1,
        lease_owner = NULL, lease_expires_at = NULL,
        transition_cause = CASE WHEN expired.ran_out THEN 'lease_expired' ELSE 'owner_gone' END,
        transition_evidence = CASE
            WHEN expired.ran_out THEN jsonb_build_object('attempt', c.attempts)
            ELSE jsonb_build_object('attempt', c.attempts, 'worker', expired.lease_owner) END
    FROM expired WHERE c.id = expired.id
    RETURNING expired.ran_out
)
SELECT count(*) FILTER (WHERE ran_out) AS lease_expired,
       count(*) FILTER (WHERE NOT ran_out) AS owner_gone
FROM requeued;

-- name: owners_without_lock
-- Owners of leased rows whose session holds no owner lock (take_owner_lock): a dead
-- instance, or one whose lock connection is down for now. The try is transaction-scoped, so
-- it passes through a transaction pooler and ends with this statement.
SELECT lease_owner FROM (
    SELECT DISTINCT lease_owner FROM cancellation_state
    WHERE status = 'sending' AND lease_owner IS NOT NULL
) owners
WHERE pg_try_advisory_xact_lock(hashtextextended(lease_owner, 0));

-- name: take_owner_lock
-- An instance is alive while a session of its own holds this lock, keyed by its owner id
-- (the lease_owner of its claims). Session-scoped, so on a direct connection only; false
-- while another session holds it (a sweeper deciding about this owner, for a moment).
SELECT pg_try_advisory_lock(hashtextextended($1, 0));

-- name: requeue_overdue
-- No confirmation by confirm_by: hand the row to the dispatcher to check status, then re-send.
WITH overdue AS (
    SELECT id FROM cancellation_state
    WHERE status = 'awaiting_confirmation' AND confirm_by <= $1
    ORDER BY confirm_by
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), requeued AS (
    UPDATE cancellation_state c
    SET status = 'queued', version = c.version + 1, needs_check = true,
        next_attempt_at = $1, updated_at = $1, transition_cause = 'confirmation_overdue',
        transition_evidence = jsonb_build_object('confirm_by', c.confirm_by)
    FROM overdue WHERE c.id = overdue.id
    RETURNING c.id
)
SELECT count(*) FROM requeued;

-- name: release_leases
-- Graceful stop: give back what this worker holds so another can take it at once.
WITH released AS (
    UPDATE cancellation_state
    SET status = 'queued', version = version + 1, next_attempt_at = $2, updated_at = $2,
        lease_owner = NULL, lease_expires_at = NULL, transition_cause = 'released_on_shutdown',
        transition_evidence = jsonb_build_object('worker', $1::text)
    WHERE status = 'sending' AND lease_owner = $1
    RETURNING id
)
SELECT count(*) FROM released;

-- name: stats
-- Terminal statuses from their counters (0013: provider_counts, kept by the table's
-- triggers); open ones counted live, each from its partial index; overdue and
-- last_confirmed_at use indexes too (the latter the newest confirmed row of
-- cancellation_state_terminal_at: a confirmed row's confirmed_at is its updated_at, 0015).
-- Flat in the table's size.
SELECT
    (SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb) FROM (
        SELECT status, sum(n)::bigint AS n FROM provider_counts GROUP BY status
        UNION ALL
        SELECT 'queued', count(*) FROM cancellation_state WHERE status = 'queued'
        UNION ALL
        SELECT 'sending', count(*) FROM cancellation_state WHERE status = 'sending'
        UNION ALL
        SELECT 'awaiting_confirmation', count(*) FROM cancellation_state
        WHERE status = 'awaiting_confirmation'
    ) s) AS counts,
    (SELECT count(*) FROM cancellation_state
     WHERE status = 'awaiting_confirmation' AND confirm_by <= $1) AS overdue,
    (SELECT max(updated_at) FROM cancellation_state WHERE status = 'confirmed')
        AS last_confirmed_at;

-- name: open_counts
-- The metrics' gauges, read on an interval (workers/gauges.py): open rows by provider and
-- status, and how many of them are due ($1): queued rows whose attempt is due, leases that
-- ran out, confirmations overdue. Each branch reads one status's partial index.
SELECT provider, 'queued' AS status, count(*) AS n,
       count(*) FILTER (WHERE next_attempt_at <= $1) AS due
FROM cancellation_state WHERE status = 'queued' GROUP BY provider
UNION ALL
SELECT provider, 'sending', count(*), count(*) FILTER (WHERE lease_expires_at <= $1)
FROM cancellation_state WHERE status = 'sending' GROUP BY provider
UNION ALL
SELECT provider, 'awaiting_confirmation', count(*), count(*) FILTER (WHERE confirm_by <= $1)
FROM cancellation_state WHERE status = 'awaiting_confirmation' GROUP BY provider;

-- name: fold_counts
-- Fold per-backend counter shards into shard 0; rows a live transaction holds are skipped.
WITH folded AS (
    DELETE FROM provider_counts
    WHERE (provider, status, shard) IN (
        SELECT provider, status, shard FROM provider_counts WHERE shard <> 0
        FOR UPDATE SKIP LOCKED
    )
    RETURNING provider, status, n
)
INSERT INTO provider_counts AS c (provider, status, shard, n)
SELECT provider, status, 0, sum(n) FROM folded GROUP BY provider, status
ON CONFLICT (provider, status, shard) DO UPDATE SET n = c.n + excluded.n;

-- name: try_lock_fold
SELECT pg_try_advisory_xact_lock(7305318221);

-- name: unserved_accounts
-- Queued rows of accounts this instance cannot send through ($1: the ones it can), by
-- account. The accounts with open rows are found by a loose index scan of
-- cancellation_state_one_open (0016; one probe per account, however long the queue); rows are counted
-- only for the unserved ones.
WITH RECURSIVE open_accounts AS (
    (SELECT provider, account FROM cancellation_state
     WHERE status IN ('queued', 'sending', 'awaiting_confirmation')
     ORDER BY provider, account LIMIT 1)
    UNION ALL
    SELECT next.provider, next.account
    FROM open_accounts o, LATERAL (
        SELECT provider, account FROM cancellation_state
        WHERE status IN ('queued', 'sending', 'awaiting_confirmation')
          AND (provider, account) > (o.provider, o.account)
        ORDER BY provider, account LIMIT 1
    ) next
)
SELECT o.provider || ':' || o.account AS account, q.queued
FROM open_accounts o, LATERAL (
    SELECT count(*) AS queued FROM cancellation_state c
    WHERE c.provider = o.provider AND c.account = o.account AND c.status = 'queued'
) q
WHERE NOT (o.provider || ':' || o.account = ANY ($1::text[])) AND q.queued > 0
ORDER BY 1;

-- name: ping
-- Whether the connection that listens for changes still answers (no pool checks it).
SELECT 1;

-- name: database_clock
-- The server's wall clock, to compare with the instance's at start (the one statement that
-- reads the database's time: it is what is being checked).
SELECT clock_timestamp();

-- name: delete_expired_cancellations
-- Retention: up to $2 terminal cancellations that ended before $1, with their history,
-- their callback deliveries and attempts, and the inbox events they used (their counters go
-- down by the table's own delete trigger, 0013). No foreign key cascades (0010): each table is deleted from here, by
-- its cancellation_id index, for the whole batch at once.
-- One whose completion callback is still pending (neither delivered nor given up) is kept
-- until it is, however long ago it ended: deleting it would delete the delivery with it.
WITH doomed AS (
    SELECT id FROM cancellation_state c
    WHERE status IN ('confirmed', 'failed') AND updated_at < $1
      AND NOT EXISTS (SELECT 1 FROM callback_deliveries d
                      WHERE d.cancellation_id = c.id AND d.state = 'pending')
    ORDER BY updated_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM cancellation_state c USING doomed WHERE c.id = doomed.id
    RETURNING c.id
), ids AS (
    SELECT array_agg(id) AS ids FROM deleted
), requests AS (
    DELETE FROM cancellation_requests r USING ids WHERE r.id = ANY (ids.ids)
), history AS (
    DELETE FROM cancellation_events e USING ids WHERE e.cancellation_id = ANY (ids.ids)
), attempts AS (
    DELETE FROM callback_attempts a USING ids WHERE a.cancellation_id = ANY (ids.ids)
), deliveries AS (
    DELETE FROM callback_deliveries d USING ids WHERE d.cancellation_id = ANY (ids.ids)
), inbox AS (
    DELETE FROM webhook_inbox w USING ids WHERE w.cancellation_id = ANY (ids.ids)
)
SELECT count(*) FROM deleted;

-- name: delete_unused_inbox_events
-- Retention: up to $2 verified events received before $1 that no cancellation used.
WITH doomed AS (
    SELECT id FROM webhook_inbox
    WHERE cancellation_id IS NULL AND received_at < $1
    ORDER BY received_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM webhook_inbox w USING doomed WHERE w.id = doomed.id RETURNING w.id
)
SELECT count(*) FROM deleted;

-- name: claim_callbacks
-- Completion callbacks (0006): lease up to $2 due deliveries, oldest first, SKIP LOCKED,
-- until $4 (a worker that dies leaves them due again then); attempts is the fencing token.
-- Each comes with its cancellation's row, the body to send.
WITH due AS (
    SELECT id FROM callback_deliveries
    WHERE state = 'pending' AND next_attempt_at <= $1
    ORDER BY next_attempt_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE callback_deliveries d
    SET attempts = d.attempts + 1, lease_owner = $3, next_attempt_at = $4
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.cancellation_id, d.url, d.ended_at, d.attempts
)
SELECT claimed.id AS delivery_id, claimed.url AS delivery_url, claimed.ended_at AS ended_at,
       claimed.attempts AS delivery_attempt, c.*
FROM claimed JOIN cancellations c ON c.id = claimed.cancellation_id
ORDER BY claimed.ended_at;

-- name: finish_callback_attempt
-- Record attempt $2 of delivery $1 (cause $4, evidence $5) and what follows: state $6, and
-- when pending the next attempt at $7. Nothing if a later claim took the delivery over.
WITH finished AS (
    UPDATE callback_deliveries
    SET state = $6, next_attempt_at = coalesce($7, next_attempt_at), lease_owner = NULL,
        finished_at = CASE WHEN $6 = 'pending' THEN NULL ELSE $3::timestamptz END
    WHERE id = $1 AND attempts = $2 AND state = 'pending'
    RETURNING id, cancellation_id
), attempt AS (
    INSERT INTO callback_attempts (delivery_id, cancellation_id, at, cause, evidence)
    SELECT id, cancellation_id, $3, $4, $5 FROM finished
)
SELECT count(*) FROM finished;

-- name: watch_cancellation
-- A long poll waits for this cancellation until $3: its changes are announced meanwhile.
-- FOR SHARE waits out a change in flight, whose trigger may have looked for watches before
-- this one was committed (and so announced nothing): the read that follows then sees it.
WITH locked AS (SELECT id FROM cancellation_state WHERE id = $1 FOR SHARE)
INSERT INTO cancellation_watches (cancellation_id, watcher, until)
SELECT id, $2, $3 FROM locked
ON CONFLICT DO NOTHING;

-- name: unwatch_cancellation
DELETE FROM cancellation_watches WHERE cancellation_id = $1 AND watcher = $2;

-- name: delete_stale_watches
-- Watches whose poll ended without removing them (a process that died): up to $2.
WITH stale AS (
    SELECT cancellation_id, watcher FROM cancellation_watches WHERE until < $1 LIMIT $2
)
DELETE FROM cancellation_watches w USING stale
WHERE w.cancellation_id = stale.cancellation_id AND w.watcher = stale.watcher;

-- name: open_ui_session
-- A dashboard login (0008): $1 the SHA-256 of the cookie's random id, for token $2, from
-- $3 until $4; sessions already expired are deleted on the way.
WITH expired AS (
    DELETE FROM ui_sessions WHERE expires_at <= $3
)
INSERT INTO ui_sessions (id_hash, token_name, created_at, expires_at) VALUES ($1, $2, $3, $4);

-- name: find_ui_session
-- The token name of a live session, by the SHA-256 of its id.
SELECT token_name FROM ui_sessions WHERE id_hash = $1 AND expires_at > $2;

-- name: close_ui_session
-- Logout: the session ends on the server, whatever the browser keeps.
DELETE FROM ui_sessions WHERE id_hash = $1;

-- name: revoke_ui_sessions
-- Every session of token $1, or of every token when $1 is NULL; returns how many.
WITH gone AS (
    DELETE FROM ui_sessions WHERE $1::text IS NULL OR token_name = $1 RETURNING 1
)
SELECT count(*) FROM gone;

-- name: revoke_ui_sessions_except
-- Sessions of tokens no longer configured (names not in $1); returns how many.
WITH gone AS (
    DELETE FROM ui_sessions WHERE token_name <> ALL($1::text[]) RETURNING 1
)
SELECT count(*) FROM gone;
