-- The production shape on top of benches/generate.sql (`benches/run --shape production`):
-- foreign keys that do not cascade, on users and one level down, and foreign keys without an
-- index on large tables, as the schema notes measured on the live database. The job runs
-- with --foreign-keys delete; the floor gets the same database with these keys altered to
-- ON DELETE CASCADE (benches/production_floor.sql) and deletes plainly.
--
-- Added (deterministic, like generate.sql):
--   * NO ACTION from users: tutor_profiles.user_id, student_profiles.user_id,
--     playlists.user_id; refresh_tokens.user_id (no index, every due account has one, ~20k
--     rows in all); otps.user_id (indexed, one user in four);
--   * NO ACTION one level down: playlist_videos.playlist_id (two per playlist),
--     video_chapters.reel_id under video_reels, which cascade from tutor_profiles;
--   * SET NULL on a nullable column without an index: message_read_receipts.user_id (~20k).
\set ON_ERROR_STOP on
SET client_min_messages = warning;
SET synchronous_commit = off;

CREATE FUNCTION pg_temp.r(id bigint, salt integer) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (((hashint8extended(id, salt) % 1000000) + 1000000) % 1000000)::integer;

-- Users whose account is due or scheduled, and a fixed share of the others (about 20k rows
-- whatever the scale: a large table, not one that grows with the backlog).
CREATE TEMP TABLE token_users AS
SELECT u.id FROM users u
WHERE u.account_status = 'pending_deletion'
   OR EXISTS (SELECT 1 FROM account_deletion_requests r
              WHERE r.user_id = u.id AND r.status = 'pending' AND r.delete_user)
   OR pg_temp.r(u.id, 40) < 1000000::bigint * 20000 / (SELECT count(*) FROM users);

ALTER TABLE tutor_profiles DROP CONSTRAINT tutor_profiles_user_id_fkey,
    ADD CONSTRAINT tutor_profiles_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id);
ALTER TABLE student_profiles DROP CONSTRAINT student_profiles_user_id_fkey,
    ADD CONSTRAINT student_profiles_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id);
ALTER TABLE playlists DROP CONSTRAINT playlists_user_id_fkey,
    ADD CONSTRAINT playlists_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id);

CREATE TABLE refresh_tokens (id serial PRIMARY KEY, user_id integer NOT NULL, token text);
INSERT INTO refresh_tokens (user_id, token) SELECT id, md5(id::text) FROM token_users ORDER BY id;
ALTER TABLE refresh_tokens ADD FOREIGN KEY (user_id) REFERENCES users (id);

CREATE TABLE message_read_receipts (id serial PRIMARY KEY, user_id integer, message_id bigint);
INSERT INTO message_read_receipts (user_id, message_id)
SELECT id, pg_temp.r(id, 41) FROM token_users ORDER BY id;
ALTER TABLE message_read_receipts ADD FOREIGN KEY (user_id) REFERENCES users (id)
    ON DELETE SET NULL;

CREATE TABLE otps (id serial PRIMARY KEY, user_id integer NOT NULL, code text);
INSERT INTO otps (user_id, code)
SELECT id, lpad((pg_temp.r(id, 42) % 1000000)::text, 6, '0') FROM users
WHERE pg_temp.r(id, 43) % 4 = 0 ORDER BY id;
CREATE INDEX ON otps (user_id);
ALTER TABLE otps ADD FOREIGN KEY (user_id) REFERENCES users (id);

CREATE TABLE playlist_videos (id serial PRIMARY KEY, playlist_id integer NOT NULL, url text);
INSERT INTO playlist_videos (playlist_id, url)
SELECT p.id, 'https://videos.example.com/' || p.id || '/' || n FROM playlists p,
    generate_series(1, 2) AS n ORDER BY p.id, n;
CREATE INDEX ON playlist_videos (playlist_id);
ALTER TABLE playlist_videos ADD FOREIGN KEY (playlist_id) REFERENCES playlists (id);

CREATE TABLE video_reels (id serial PRIMARY KEY, tutor_profile_id integer NOT NULL, title text);
INSERT INTO video_reels (tutor_profile_id, title)
SELECT id, 'reel ' || id FROM tutor_profiles WHERE pg_temp.r(id, 44) % 2 = 0 ORDER BY id;
CREATE INDEX ON video_reels (tutor_profile_id);
ALTER TABLE video_reels ADD FOREIGN KEY (tutor_profile_id) REFERENCES tutor_profiles (id)
    ON DELETE CASCADE;
CREATE TABLE video_chapters (id serial PRIMARY KEY, reel_id integer NOT NULL, title text);
INSERT INTO video_chapters (reel_id, title)
SELECT r.id, 'chapter ' || n FROM video_reels r, generate_series(1, 2) AS n ORDER BY r.id, n;
CREATE INDEX ON video_chapters (reel_id);
ALTER TABLE video_chapters ADD FOREIGN KEY (reel_id) REFERENCES video_reels (id);

SELECT (SELECT count(*) FROM refresh_tokens) AS refresh_tokens,
       (SELECT count(*) FROM message_read_receipts) AS receipts,
       (SELECT count(*) FROM otps) AS otps,
       (SELECT count(*) FROM playlist_videos) AS playlist_videos,
       (SELECT count(*) FROM video_chapters) AS video_chapters;
