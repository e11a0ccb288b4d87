-- The outstanding verification code of each identifier: its keyed hash
-- (never the code) and when it was sent, for the resend cooldown.
ALTER TABLE email_addresses ADD COLUMN verification_code_hash TEXT;
ALTER TABLE email_addresses ADD COLUMN verification_sent_at INTEGER;
ALTER TABLE phone_numbers ADD COLUMN verification_code_hash TEXT;
ALTER TABLE phone_numbers ADD COLUMN verification_sent_at INTEGER;
