-- A user's email addresses and phone numbers are kept on its row too, as
-- JSON arrays of rows (`roster_storage::rows::StoredUser`), so reading a
-- user reads one row instead of probing three tables. The identifier
-- tables stay: they settle uniqueness and answer lookups by address or
-- number. The store writes the arrays with every change to a user.
--
-- NULL until the store has written them: for the users stored before
-- this migration, which `roster_storage::exec::fill_identifier_rows`
-- fills in at start-up, a few hundred per transaction, while the store
-- serves, and for users a replica of an earlier version writes during a
-- rolling upgrade. A NULL array is read from the identifier tables.
ALTER TABLE users ADD COLUMN email_rows TEXT, ADD COLUMN phone_rows TEXT;
-- The users whose rows do not hold them, for the store to find at start
-- without reading the whole table. Rows leave it when the store writes
-- their arrays; an update that keeps them as they were can stay HOT.
CREATE INDEX users_identifier_rows_pending ON users (id)
    WHERE email_rows IS NULL OR phone_rows IS NULL;

-- A replica of an earlier version changes identifiers without the arrays:
-- the arrays it leaves behind no longer hold, so they go. The store
-- itself changes a user's identifiers before its row, in the same
-- transaction, so what it writes stays; and it inserts a new user's
-- identifiers after the row, whose arrays already name them, which is how
-- an insert is told from one of an earlier version.
CREATE FUNCTION users_email_rows_stale() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE users u SET email_rows = NULL FROM changed c
        WHERE u.id = c.user_id AND strpos(u.email_rows, '"' || c.id || '"') = 0;
    ELSE
        UPDATE users u SET email_rows = NULL FROM changed c
        WHERE u.id = c.user_id AND u.email_rows IS NOT NULL;
    END IF;
    RETURN NULL;
END
$$;
CREATE FUNCTION users_phone_rows_stale() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE users u SET phone_rows = NULL FROM changed c
        WHERE u.id = c.user_id AND strpos(u.phone_rows, '"' || c.id || '"') = 0;
    ELSE
        UPDATE users u SET phone_rows = NULL FROM changed c
        WHERE u.id = c.user_id AND u.phone_rows IS NOT NULL;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER email_rows_inserted AFTER INSERT ON email_addresses
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION users_email_rows_stale();
CREATE TRIGGER email_rows_updated AFTER UPDATE ON email_addresses
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION users_email_rows_stale();
CREATE TRIGGER email_rows_deleted AFTER DELETE ON email_addresses
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION users_email_rows_stale();
CREATE TRIGGER phone_rows_inserted AFTER INSERT ON phone_numbers
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION users_phone_rows_stale();
CREATE TRIGGER phone_rows_updated AFTER UPDATE ON phone_numbers
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION users_phone_rows_stale();
CREATE TRIGGER phone_rows_deleted AFTER DELETE ON phone_numbers
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION users_phone_rows_stale();
