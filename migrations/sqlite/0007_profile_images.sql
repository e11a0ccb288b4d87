-- The profile image's file name in the object store (`img_….png`); the
-- existing has_image column stays, written as `image IS NOT NULL`.
ALTER TABLE users ADD COLUMN image TEXT;
