-- The search index holds terms the store computes (`search::index_terms`):
-- each trigram and each six-character run of a user's searched values,
-- hashed to a token. A query of six characters or more is then looked up
-- by a few of its own six-runs, whose posting lists are short, instead of
-- by trigrams that thousands of users share. The index keeps no text
-- (`content = ''`) and no positions (`detail = none`): `LIKE` over
-- `users.search_text` decides every match. The store adds and replaces
-- users' terms; a deleted user's go with it, here.
DROP TRIGGER users_search_update;
DROP TRIGGER users_search_delete;
DROP TABLE users_search;
CREATE VIRTUAL TABLE users_search_terms USING fts5(
    terms,
    content = '',
    contentless_delete = 1,
    detail = 'none',
    tokenize = 'ascii'
);
CREATE TRIGGER users_search_terms_delete AFTER DELETE ON users BEGIN
    DELETE FROM users_search_terms WHERE rowid = old.rowid;
END;
-- Users already stored enter the new index when the store next opens
-- (`SqliteStore::migrate`), which then empties this table.
CREATE TABLE search_terms_backfill (pending INTEGER NOT NULL);
INSERT INTO search_terms_backfill (pending) SELECT 1 WHERE EXISTS (SELECT 1 FROM users);
