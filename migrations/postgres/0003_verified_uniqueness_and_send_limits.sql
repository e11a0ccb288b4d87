-- Only verified identifiers are unique across users: an unverified copy
-- neither blocks another user nor is claimed by one, and is removed when
-- another user verifies the identifier. The unique indexes keep their
-- constraint names, so conflicts still name the field.
ALTER TABLE email_addresses DROP CONSTRAINT email_addresses_unique;
CREATE UNIQUE INDEX email_addresses_unique ON email_addresses (email_normalized)
    WHERE verification_status = 'verified';
CREATE INDEX email_addresses_normalized ON email_addresses (email_normalized);

ALTER TABLE phone_numbers DROP CONSTRAINT phone_numbers_unique;
CREATE UNIQUE INDEX phone_numbers_unique ON phone_numbers (phone_number)
    WHERE verification_status = 'verified';
CREATE INDEX phone_numbers_number ON phone_numbers (phone_number);

-- Send limits: codes sent per identifier and per user in a fixed window.
ALTER TABLE email_addresses
    ADD COLUMN verification_window_start BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN verification_window_sends BIGINT NOT NULL DEFAULT 0;
ALTER TABLE phone_numbers
    ADD COLUMN verification_window_start BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN verification_window_sends BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users
    ADD COLUMN code_window_start BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN code_window_sends BIGINT NOT NULL DEFAULT 0;
