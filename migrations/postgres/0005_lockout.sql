-- Failed sign-in attempts since the last success or lockout, and when the
-- lockout they led to ends.
ALTER TABLE users
    ADD COLUMN failed_sign_ins BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN locked_until BIGINT;
