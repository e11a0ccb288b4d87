-- Reindex a user's search text only when it changed: every write of a user
-- row sets search_text, and most (metadata, verification, sign-in
-- bookkeeping) leave it as it was.
DROP TRIGGER users_search_update;
CREATE TRIGGER users_search_update AFTER UPDATE OF search_text ON users
WHEN old.search_text IS NOT new.search_text BEGIN
    INSERT INTO users_search (users_search, rowid, search_text) VALUES ('delete', old.rowid, old.search_text);
    INSERT INTO users_search (rowid, search_text) VALUES (new.rowid, new.search_text);
END;
