-- The history and the callback attempts keyed by their cancellation (issue 18, item 4).
--
-- Each table had two b-trees over the same rows: a primary key on `id` and an index on
-- (cancellation_id, id). Every read goes through the second (a cancellation's page of
-- history, `list_events`; retention's deletes, by cancellation_id), and nothing looks a row
-- up by `id` alone: the first only cost an index entry per row written, four per
-- cancellation in the history. The primary key is now (cancellation_id, id), the index the
-- reads use, so each row written costs one index entry instead of two, and the tables keep
-- a primary key (logical replication and CDC tools need one to publish retention's
-- deletes). `id` stays unique on its own (both tables draw it from one sequence): it orders
-- a cancellation's history and pages it (`after`).
--
-- On an existing deployment this builds one unique index per table while it holds the
-- table's lock (writers of history wait): about a second per million history rows on the
-- benchmark's machine. Retention bounds the table (90 days by default).

ALTER TABLE cancellation_events DROP CONSTRAINT cancellation_events_pkey;
ALTER TABLE cancellation_events ADD CONSTRAINT cancellation_events_pkey
    PRIMARY KEY (cancellation_id, id);
DROP INDEX cancellation_events_by_cancellation;

ALTER TABLE callback_attempts DROP CONSTRAINT callback_attempts_pkey;
ALTER TABLE callback_attempts ADD CONSTRAINT callback_attempts_pkey
    PRIMARY KEY (cancellation_id, id);
DROP INDEX callback_attempts_by_cancellation;
