-- One index entry fewer per cancel (issue 18, item 4).
--
-- cancellations_confirmed_at (0001) had one reader, /v1/stats's last_confirmed_at, and cost
-- an index entry at every confirmation. A confirmed row's confirmed_at is the updated_at of
-- the transition that confirmed it (apply_decision sets both to the same time, and nothing
-- moves a row out of a terminal status), so the newest one is the first confirmed row of a
-- backward walk of cancellations_terminal_at, the index retention reads: queries.sql's stats
-- now reads it there.
--
-- Dropping an index takes the table's lock for a moment; nothing is rewritten.

DROP INDEX cancellations_confirmed_at;

-- What stats now relies on, enforced for every row written from now on (NOT VALID: rows
-- written before are not scanned, so this takes no time on a large table; every path that
-- confirmed a row has always set both columns from the same time).
ALTER TABLE cancellations ADD CONSTRAINT cancellations_confirmed_at_is_the_end
    CHECK (status <> 'confirmed' OR confirmed_at = updated_at) NOT VALID;
