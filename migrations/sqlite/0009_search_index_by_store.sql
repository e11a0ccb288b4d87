-- New users enter the full-text index through the store: one statement
-- adds all the users a transaction inserted, instead of a trigger adding
-- each row as it is inserted. FTS5 writes its pending entries out at
-- every savepoint, so entries added row by row, between the savepoints
-- of inserts sharing a transaction, each cost a write of their own.
-- Updates and deletes keep their triggers.
DROP TRIGGER users_search_insert;
