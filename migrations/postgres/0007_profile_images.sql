-- The profile image's file name in the object store (`img_….png`). It
-- replaces has_image, which is derived from it.
ALTER TABLE users ADD COLUMN image TEXT;
ALTER TABLE users DROP COLUMN has_image;
