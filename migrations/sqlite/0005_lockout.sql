-- Failed sign-in attempts since the last success or lockout, and when the
-- lockout they led to ends.
ALTER TABLE users ADD COLUMN failed_sign_ins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked_until INTEGER;
