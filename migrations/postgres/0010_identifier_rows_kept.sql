-- The store's own writes keep the arrays on the user row in step, so the
-- triggers of `0009` have nothing to do for them: the store's
-- connections say so with the setting `roster.identifier_rows = kept`
-- (in their start-up options), and the triggers return at once. Before,
-- each change the store made to a user's identifiers first set the
-- arrays to NULL, a write of the user row that the store's own update of
-- the row then undid. Connections without the setting (a replica of an
-- earlier version during a rolling upgrade, or SQL run by hand) are
-- treated as in `0009`.
CREATE OR REPLACE FUNCTION users_email_rows_stale() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('roster.identifier_rows', true) = 'kept' THEN
        RETURN NULL;
    END IF;
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
CREATE OR REPLACE FUNCTION users_phone_rows_stale() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('roster.identifier_rows', true) = 'kept' THEN
        RETURN NULL;
    END IF;
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
