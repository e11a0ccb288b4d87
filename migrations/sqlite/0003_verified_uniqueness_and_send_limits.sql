-- Only verified identifiers are unique across users: an unverified copy
-- neither blocks another user nor is claimed by one, and is removed when
-- another user verifies the identifier.
DROP INDEX email_addresses_unique;
CREATE UNIQUE INDEX email_addresses_unique ON email_addresses (email_normalized)
    WHERE verification_status = 'verified';
CREATE INDEX email_addresses_normalized ON email_addresses (email_normalized);

DROP INDEX phone_numbers_unique;
CREATE UNIQUE INDEX phone_numbers_unique ON phone_numbers (phone_number)
    WHERE verification_status = 'verified';
CREATE INDEX phone_numbers_number ON phone_numbers (phone_number);

-- Send limits: codes sent per identifier and per user in a fixed window.
ALTER TABLE email_addresses ADD COLUMN verification_window_start INTEGER NOT NULL DEFAULT 0;
ALTER TABLE email_addresses ADD COLUMN verification_window_sends INTEGER NOT NULL DEFAULT 0;
ALTER TABLE phone_numbers ADD COLUMN verification_window_start INTEGER NOT NULL DEFAULT 0;
ALTER TABLE phone_numbers ADD COLUMN verification_window_sends INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN code_window_start INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN code_window_sends INTEGER NOT NULL DEFAULT 0;
