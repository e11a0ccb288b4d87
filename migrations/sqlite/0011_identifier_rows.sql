-- A user's email addresses and phone numbers are kept on its row too, as
-- JSON arrays of rows (`roster_storage::rows::StoredUser`), so reading a
-- user reads one row instead of probing three tables. The identifier
-- tables stay: they settle uniqueness and answer lookups by address or
-- number. The store writes the arrays with every change to a user; here
-- they are gathered for the users stored before. A NULL array is read
-- from the identifier tables instead.
ALTER TABLE users ADD COLUMN email_rows TEXT;
ALTER TABLE users ADD COLUMN phone_rows TEXT;
UPDATE users SET
    email_rows = CAST(COALESCE((
        SELECT json_group_array(json_array(id, email_address,
            json_array(verification_status, verification_strategy, verification_attempts,
                verification_expire_at, verification_code_hash, verification_sent_at,
                verification_window_start, verification_window_sends),
            created_at, updated_at))
        FROM email_addresses WHERE user_id = users.id), '[]') AS TEXT),
    phone_rows = CAST(COALESCE((
        SELECT json_group_array(json_array(id, phone_number,
            json_array(verification_status, verification_strategy, verification_attempts,
                verification_expire_at, verification_code_hash, verification_sent_at,
                verification_window_start, verification_window_sends),
            reserved_for_second_factor, default_second_factor, created_at, updated_at))
        FROM phone_numbers WHERE user_id = users.id), '[]') AS TEXT);
