-- History without foreign keys; storage settings for a queue (issue 18, items 4 and 5).
--
-- * The history and the callbacks outbox no longer reference cancellations (nor attempts
--   their delivery). Retention (queries.sql, delete_expired_cancellations) deletes a
--   cancellation's events, deliveries and delivery attempts itself, in the statement that
--   deletes the cancellation: one index scan per table for a batch, where ON DELETE CASCADE
--   ran one DELETE per deleted row and per referencing table (56 of a batch's 78 ms at 1M
--   rows, docs/benchmarks.md). It also spares every history insert its foreign-key check.
--   No foreign key is kept, because none guards anything: every row of these tables is
--   written by a statement that has just updated (and so locked) its cancellation, or its
--   delivery (the outbox's rows by a trigger on the cancellation's terminal update, the
--   attempts in the statement that updates their delivery), and retention is the only
--   statement that deletes a cancellation. A writer of history racing retention waits on
--   the cancellation retention locked, then finds it gone and writes nothing; an attempt is
--   written only for a pending delivery, and retention keeps a cancellation whose delivery
--   is pending. A test checks that a retention round leaves no orphan rows
--   (tests/integration/test_callbacks.py).
-- * cancellations: fillfactor 80, room on each page for new versions of its rows. An update
--   puts the new version on the same page when it fits (fewer pages dirtied, fewer full-page
--   images in the WAL), and it is what an update that can be HOT needs. Today none is: every
--   update changes `status` (a predicate of five partial indexes) and `updated_at` (the key
--   of cancellations_terminal_at); docs/benchmarks.md says what would change that. Only
--   pages written from now on get the free space: existing pages fill up as before until a
--   rewrite (VACUUM FULL, pg_repack).
-- * Autovacuum per table, for a queue: the defaults wait for 20% of a table to be dead
--   (2 million row versions at 10 million rows) and throttle the vacuum (2 ms every 200 page
--   costs). Here a table is vacuumed and analysed once 1-2% of it (and at least 1,000 rows)
--   changed or was inserted, without throttling, so the claim's partial indexes and the
--   outbox's due index do not fill with dead entries and the visibility map keeps up with
--   the inserts (index-only scans, cheap freezing). The small, hot tables (account_budgets,
--   callback_deliveries) have lower thresholds still and a low fillfactor, so their updates
--   (account_budgets: tokens, refilled_at, no indexed column) are HOT and pruned on the page.

ALTER TABLE cancellation_events DROP CONSTRAINT cancellation_events_cancellation_id_fkey;
ALTER TABLE callback_attempts DROP CONSTRAINT callback_attempts_cancellation_id_fkey;
ALTER TABLE callback_attempts DROP CONSTRAINT callback_attempts_delivery_id_fkey;
ALTER TABLE callback_deliveries DROP CONSTRAINT callback_deliveries_cancellation_id_fkey;

ALTER TABLE cancellations SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

ALTER TABLE webhook_inbox SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

ALTER TABLE account_budgets SET (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 200,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 200,
    autovacuum_vacuum_cost_delay = 0
);

ALTER TABLE callback_deliveries SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 200,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_vacuum_insert_threshold = 200,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 200,
    autovacuum_vacuum_cost_delay = 0
);
