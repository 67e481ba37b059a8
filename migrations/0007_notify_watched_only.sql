-- Announce a cancellation's changes only while somebody waits for them (issue 11's "figures
-- not worse"). 0005 notified on every version change: three NOTIFYs per cancel, and
-- PostgreSQL serialises the commits of notifying transactions and wakes every listening
-- backend for each (bench: Postgres CPU per cancel +26%, two more transactions per cancel
-- in the listeners). A long poll now registers a watch first; the trigger notifies only
-- for watched rows. The table is UNLOGGED: a watch lives for one request, and a crash
-- loses nothing but wake-ups that the waiters' own timeouts cover.
CREATE UNLOGGED TABLE cancellation_watches (
    cancellation_id uuid        NOT NULL,
    watcher         uuid        NOT NULL,
    until           timestamptz NOT NULL,
    PRIMARY KEY (cancellation_id, watcher)
);
CREATE INDEX cancellation_watches_until ON cancellation_watches (until);

CREATE OR REPLACE FUNCTION notify_cancellation_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM cancellation_watches WHERE cancellation_id = NEW.id) THEN
        PERFORM pg_notify('cancellation_changed', NEW.id::text);
    END IF;
    RETURN NULL;
END;
$$;
