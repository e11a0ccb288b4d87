-- Substring search reads an index of search keys the store computes
-- (`search::index_keys`) instead of pg_trgm's trigram index: each trigram
-- and each six-character run of the searched text, hashed to an integer.
-- A query of six characters or more is looked up by a run or two, whose
-- posting lists hold a few users where a trigram's can hold one user in
-- a hundred.
DROP INDEX users_search;

-- NULL until the store has computed the keys: for the users stored before
-- this migration, which `roster_storage::exec::backfill_search_keys`
-- gives keys at start-up, and for users a replica of an earlier version
-- writes during a rolling upgrade. A search reads those too, by
-- `users_search_pending`, until they have keys.
ALTER TABLE users ADD COLUMN search_terms INTEGER[];
CREATE INDEX users_search_terms ON users USING gin (search_terms);
CREATE INDEX users_search_pending ON users (id) WHERE search_terms IS NULL;

-- A replica of an earlier version changes `search_text` without knowing
-- the keys: the keys it leaves behind no longer hold, so they go, and the
-- user is searched as one without keys until the store computes them.
-- This store's keys of two different texts differ (they hold a key of
-- the whole text), so a change it makes matches the WHEN only by a
-- one-in-16-million chance, which costs that user a slower search until
-- the keys are computed again.
CREATE FUNCTION users_search_terms_stale() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_terms := NULL;
    RETURN NEW;
END
$$;

CREATE TRIGGER users_search_terms_stale
    BEFORE UPDATE OF search_text ON users
    FOR EACH ROW
    WHEN (NEW.search_text IS DISTINCT FROM OLD.search_text
          AND NEW.search_terms IS NOT DISTINCT FROM OLD.search_terms)
    EXECUTE FUNCTION users_search_terms_stale();
