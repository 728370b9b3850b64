-- An Astegni-shaped database for the benchmark, at a chosen scale.
--
--   psql -v users=100000 -v due_roles=7000 -v due_accounts=3000 -f benches/generate.sql
--
-- Shape: the schema fixture (tests/fixtures/astegni.sql, as in /work/shared/astegni-schema.md
-- and the setup guide): `users` with a json `roles` column and naive timestamps; the five
-- profile tables; `account_deletion_requests` in its newer shape (role, profile_id,
-- delete_user); `deletion_audit_log` exactly as the guide creates it (here with some
-- history); plus a few more columns and five more child tables, eight child tables in all
-- hanging off users and profiles with ON DELETE CASCADE, every foreign key indexed, about 10
-- child rows per user on average.
--
-- Everything is deterministic: "random" choices are hashes of ids (pg_temp.r), so the same
-- parameters give the same database, row for row.
--
-- What is due (disjoint sets of users, exact counts):
--   * :due_accounts accounts: 80% have account_status = 'pending_deletion' with a past
--     scheduled_deletion_at AND a pending, due request (delete_user = TRUE); 10% only the
--     users row; 10% only the request (an app version that did not set account_status).
--   * :due_roles role profiles: 90% due by themselves (is_active = FALSE, past
--     scheduled_deletion_at), spread over the five tables (user_profiles rarely); 10% named by
--     a pending, due role-only request (delete_user = FALSE; half with profile_id, half
--     without), the profile itself still active.
-- What is not due but looks close (the job must leave it alone):
--   * :due_roles profiles scheduled in the future; :due_roles/10 role-only requests in the
--     future; :due_accounts accounts leaving in the future (with their request);
--     :due_accounts cancelled requests with a past date; :due_accounts completed requests.
\set ON_ERROR_STOP on
\if :{?users}
\else
  \set users 100000
\endif
\if :{?due_roles}
\else
  \set due_roles 7000
\endif
\if :{?due_accounts}
\else
  \set due_accounts 3000
\endif

SET client_min_messages = warning;
SET synchronous_commit = off;
SET maintenance_work_mem = '1GB';
SET work_mem = '256MB';

-- A deterministic pseudo-random integer in [0, 1000000) for (id, salt).
CREATE FUNCTION pg_temp.r(id bigint, salt integer) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (((hashint8extended(id, salt) % 1000000) + 1000000) % 1000000)::integer;

-- ---------------------------------------------------------------------------------------
-- Tables: the schema fixture every test database is made from (users, the five profile
-- tables, account_deletion_requests, deletion_audit_log and three child tables, with their
-- keys, indexes and foreign keys), then what the benchmark adds for realism: columns the
-- app has that the fixture leaves out, and five more child tables, whose keys and foreign
-- keys are added after the load.
-- ---------------------------------------------------------------------------------------
\ir ../tests/fixtures/astegni.sql
ALTER TABLE users ADD COLUMN phone varchar(20), ADD COLUMN created_at timestamp DEFAULT now();
ALTER TABLE student_profiles ADD COLUMN grade_level varchar(20);
ALTER TABLE tutor_profiles ADD COLUMN hourly_rate numeric(10,2);
ALTER TABLE parent_profiles ADD COLUMN relationship varchar(30);
ALTER TABLE advertiser_profiles ADD COLUMN company_name varchar(100);
ALTER TABLE user_profiles ADD COLUMN interests text;
ALTER TABLE user_sessions ADD COLUMN created_at timestamp, ADD COLUMN expires_at timestamp;
ALTER TABLE notifications ADD COLUMN title varchar(100), ADD COLUMN is_read boolean,
    ADD COLUMN created_at timestamp;
-- A review is also a child of the user who wrote it.
ALTER TABLE tutor_reviews ADD COLUMN reviewer_id integer, ADD COLUMN comment text;
CREATE TABLE playlists (id serial, user_id integer NOT NULL, name varchar(100),
    created_at timestamp);
CREATE TABLE student_courses (id serial, student_profile_id integer NOT NULL,
    course_name varchar(100), progress integer);
CREATE TABLE tutor_sessions (id serial, tutor_profile_id integer NOT NULL,
    student_profile_id integer, starts_at timestamp, minutes integer);
CREATE TABLE parent_children (id serial, parent_profile_id integer NOT NULL,
    child_name varchar(100));
CREATE TABLE advertiser_campaigns (id serial, advertiser_profile_id integer NOT NULL,
    name varchar(100), budget numeric(12,2));

-- ---------------------------------------------------------------------------------------
-- Users: everyone is a 'user'; 60% students, 25% tutors, 15% parents, 5% advertisers.
-- ---------------------------------------------------------------------------------------
CREATE TEMP TABLE flags AS
SELECT id,
       pg_temp.r(id, 1) < 600000 AS s,
       pg_temp.r(id, 2) < 250000 AS t,
       pg_temp.r(id, 3) < 150000 AS p,
       pg_temp.r(id, 4) < 50000 AS a
FROM generate_series(1, :users) AS id;

INSERT INTO users (id, email, phone, first_name, father_name, roles, active_role,
                   is_active, account_status)
SELECT f.id,
       CASE WHEN pg_temp.r(f.id, 5) < 50000 THEN NULL ELSE 'user' || f.id || '@example.com' END,
       '+2519' || lpad((pg_temp.r(f.id, 6) * 100 + f.id % 100)::text, 8, '0'),
       'First' || f.id % 997, 'Father' || f.id % 991,
       array_to_json(roles), roles[1 + pg_temp.r(f.id, 7) % cardinality(roles)],
       TRUE, 'active'
FROM flags f,
     LATERAL (SELECT array_remove(ARRAY['user',
                 CASE WHEN f.s THEN 'student' END, CASE WHEN f.t THEN 'tutor' END,
                 CASE WHEN f.p THEN 'parent' END, CASE WHEN f.a THEN 'advertiser' END],
                 NULL) AS roles) x
ORDER BY f.id;
SELECT setval('users_id_seq', :users);

INSERT INTO student_profiles (user_id, grade_level, bio)
SELECT id, 'Grade ' || (1 + id % 12), 'Student bio ' || id FROM flags WHERE s ORDER BY id;
INSERT INTO tutor_profiles (user_id, hourly_rate, bio)
SELECT id, 100 + id % 400, 'Tutor bio ' || id FROM flags WHERE t ORDER BY id;
INSERT INTO parent_profiles (user_id, relationship, bio)
SELECT id, 'guardian', 'Parent bio ' || id FROM flags WHERE p ORDER BY id;
INSERT INTO advertiser_profiles (user_id, company_name, bio)
SELECT id, 'Company ' || id, 'Advertiser bio ' || id FROM flags WHERE a ORDER BY id;
INSERT INTO user_profiles (user_id, interests, bio)
SELECT id, 'math,physics', 'User bio ' || id FROM flags ORDER BY id;

-- ---------------------------------------------------------------------------------------
-- Children: ~9.7 rows per user over eight tables.
-- ---------------------------------------------------------------------------------------
INSERT INTO user_sessions (user_id, token, created_at, expires_at)
SELECT f.id, md5(f.id || ':' || g), now() - interval '3 days', now() + interval '27 days'
FROM flags f, generate_series(1, 1 + pg_temp.r(f.id, 20) % 3) g;           -- avg 2
INSERT INTO notifications (user_id, title, body, is_read, created_at)
SELECT f.id, 'Notification ' || g, 'You have a new message from Astegni #' || g,
       g % 2 = 0, now() - g * interval '1 day'
FROM flags f, generate_series(1, pg_temp.r(f.id, 21) % 7) g;               -- avg 3
INSERT INTO playlists (user_id, name, created_at)
SELECT f.id, 'Playlist ' || g, now() - interval '10 days'
FROM flags f, generate_series(1, pg_temp.r(f.id, 22) % 3) g;               -- avg 1
INSERT INTO student_courses (student_profile_id, course_name, progress)
SELECT sp.id, 'Course ' || (sp.id + g) % 300, (sp.id * g) % 101
FROM student_profiles sp, generate_series(1, 1 + pg_temp.r(sp.id, 23) % 3) g;  -- 1.2/user
INSERT INTO tutor_reviews (tutor_profile_id, reviewer_id, rating, comment)
SELECT tp.id, 1 + pg_temp.r(tp.id * 16 + g, 24) % :users, 1 + (tp.id + g) % 5, 'Great tutor'
FROM tutor_profiles tp, generate_series(1, pg_temp.r(tp.id, 25) % 9) g;        -- 1/user
INSERT INTO tutor_sessions (tutor_profile_id, student_profile_id, starts_at, minutes)
SELECT tp.id, sp.id, now() - g * interval '1 week', 60
FROM tutor_profiles tp
CROSS JOIN LATERAL generate_series(1, pg_temp.r(tp.id, 26) % 9) g
LEFT JOIN LATERAL (SELECT id FROM student_profiles
                   WHERE id = 1 + pg_temp.r(tp.id * 16 + g, 27) % greatest(1, :users * 6 / 10)) sp
       ON TRUE
-- In the order they took place, whatever plan the join gets (the row order is the ids).
ORDER BY g DESC, tp.id;                                                          -- 1/user
INSERT INTO parent_children (parent_profile_id, child_name)
SELECT pp.id, 'Child ' || g FROM parent_profiles pp,
       generate_series(1, 1 + pg_temp.r(pp.id, 28) % 3) g;                      -- 0.3/user
INSERT INTO advertiser_campaigns (advertiser_profile_id, name, budget)
SELECT ap.id, 'Campaign ' || g, 1000 * g FROM advertiser_profiles ap,
       generate_series(1, pg_temp.r(ap.id, 29) % 9) g;                          -- 0.2/user

-- ---------------------------------------------------------------------------------------
-- What is due, and what is close to due but is not.
-- ---------------------------------------------------------------------------------------
-- Users picked for account-level events, in a fixed pseudo-random order; the first
-- :due_accounts are due, the next :due_accounts leave in the future.
CREATE TEMP TABLE account_pick AS
SELECT id, row_number() OVER (ORDER BY pg_temp.r(id, 10), id) AS n
FROM flags ORDER BY pg_temp.r(id, 10), id LIMIT 2 * :due_accounts;
CREATE TEMP TABLE due_account AS
SELECT id, CASE WHEN pg_temp.r(id, 11) % 10 < 8 THEN 'both'
                WHEN pg_temp.r(id, 11) % 10 = 8 THEN 'user' ELSE 'request' END AS kind
FROM account_pick WHERE n <= :due_accounts;
CREATE TEMP TABLE later_account AS SELECT id FROM account_pick WHERE n > :due_accounts;

UPDATE users u SET account_status = 'pending_deletion', is_active = FALSE,
       deactivated_at = now() - interval '95 days',
       scheduled_deletion_at = now() - (1 + pg_temp.r(u.id, 12) % 30) * interval '1 hour'
FROM due_account d WHERE u.id = d.id AND d.kind IN ('both', 'user');
INSERT INTO account_deletion_requests (user_id, status, reasons, deletion_fee, requested_at,
       scheduled_deletion_at, ip_address, user_agent, role, profile_id, delete_user)
SELECT d.id, 'pending', '["not_useful"]', 200, now() - interval '95 days',
       now() - (1 + pg_temp.r(d.id, 12) % 30) * interval '1 hour', '196.188.0.1',
       'Mozilla/5.0', NULL, NULL, TRUE
FROM due_account d WHERE d.kind IN ('both', 'request') ORDER BY d.id;
UPDATE users u SET account_status = 'pending_deletion', is_active = FALSE,
       deactivated_at = now() - interval '40 days',
       scheduled_deletion_at = now() + (1 + pg_temp.r(u.id, 13) % 80) * interval '1 day'
FROM later_account l WHERE u.id = l.id;
INSERT INTO account_deletion_requests (user_id, status, reasons, deletion_fee, requested_at,
       scheduled_deletion_at, ip_address, user_agent, role, profile_id, delete_user)
SELECT u.id, 'pending', '["too_expensive"]', 200, now() - interval '40 days',
       u.scheduled_deletion_at, '196.188.0.2', 'Mozilla/5.0', NULL, NULL, TRUE
FROM users u JOIN later_account l ON l.id = u.id ORDER BY u.id;

-- Profiles picked for role-level events, among users not picked above; user_profiles only
-- one time in ten. The first :due_roles are due, the next :due_roles are scheduled later.
CREATE TEMP TABLE role_pick AS
WITH candidates AS (
    SELECT 'student' AS role, id, user_id FROM student_profiles
    UNION ALL SELECT 'tutor', id, user_id FROM tutor_profiles
    UNION ALL SELECT 'parent', id, user_id FROM parent_profiles
    UNION ALL SELECT 'advertiser', id, user_id FROM advertiser_profiles
    UNION ALL SELECT 'user', id, user_id FROM user_profiles WHERE pg_temp.r(id, 14) < 100000
)
SELECT c.role, c.id, c.user_id,
       row_number() OVER (ORDER BY pg_temp.r(c.id * 8 + length(c.role), 15), c.role, c.id) AS n
FROM candidates c
WHERE NOT EXISTS (SELECT 1 FROM account_pick a WHERE a.id = c.user_id)
ORDER BY pg_temp.r(c.id * 8 + length(c.role), 15), c.role, c.id
LIMIT 2 * :due_roles;
-- Due by themselves (90% of the due ones), scheduled later (the second half), or named by a
-- role-only request (10% of the due ones).
CREATE TEMP TABLE role_event AS
SELECT role, id, user_id,
       CASE WHEN n > :due_roles THEN 'later'
            WHEN pg_temp.r(id * 8 + length(role), 16) % 10 = 0 THEN 'request'
            ELSE 'self' END AS kind
FROM role_pick;

UPDATE student_profiles p SET is_active = FALSE, scheduled_deletion_at = CASE e.kind
         WHEN 'self' THEN now() - (1 + pg_temp.r(p.id, 17) % 60) * interval '1 hour'
         ELSE now() + (1 + pg_temp.r(p.id, 17) % 80) * interval '1 day' END
FROM role_event e WHERE e.role = 'student' AND e.id = p.id AND e.kind IN ('self', 'later');
UPDATE tutor_profiles p SET is_active = FALSE, scheduled_deletion_at = CASE e.kind
         WHEN 'self' THEN now() - (1 + pg_temp.r(p.id, 17) % 60) * interval '1 hour'
         ELSE now() + (1 + pg_temp.r(p.id, 17) % 80) * interval '1 day' END
FROM role_event e WHERE e.role = 'tutor' AND e.id = p.id AND e.kind IN ('self', 'later');
UPDATE parent_profiles p SET is_active = FALSE, scheduled_deletion_at = CASE e.kind
         WHEN 'self' THEN now() - (1 + pg_temp.r(p.id, 17) % 60) * interval '1 hour'
         ELSE now() + (1 + pg_temp.r(p.id, 17) % 80) * interval '1 day' END
FROM role_event e WHERE e.role = 'parent' AND e.id = p.id AND e.kind IN ('self', 'later');
UPDATE advertiser_profiles p SET is_active = FALSE, scheduled_deletion_at = CASE e.kind
         WHEN 'self' THEN now() - (1 + pg_temp.r(p.id, 17) % 60) * interval '1 hour'
         ELSE now() + (1 + pg_temp.r(p.id, 17) % 80) * interval '1 day' END
FROM role_event e WHERE e.role = 'advertiser' AND e.id = p.id AND e.kind IN ('self', 'later');
UPDATE user_profiles p SET is_active = FALSE, scheduled_deletion_at = CASE e.kind
         WHEN 'self' THEN now() - (1 + pg_temp.r(p.id, 17) % 60) * interval '1 hour'
         ELSE now() + (1 + pg_temp.r(p.id, 17) % 80) * interval '1 day' END
FROM role_event e WHERE e.role = 'user' AND e.id = p.id AND e.kind IN ('self', 'later');

-- Role-only requests: due ones for the 'request' kind (half name the profile), and one in
-- ten of the 'later' ones gets a role-only request in the future instead of a schedule.
INSERT INTO account_deletion_requests (user_id, status, reasons, deletion_fee, requested_at,
       scheduled_deletion_at, ip_address, user_agent, role, profile_id, delete_user)
SELECT e.user_id, 'pending', '["switching_role"]', 0,
       now() - interval '91 days', now() - (1 + pg_temp.r(e.id, 18) % 48) * interval '1 hour',
       '196.188.0.3', 'Mozilla/5.0', e.role,
       CASE WHEN e.id % 2 = 0 THEN e.id END, FALSE
FROM role_event e WHERE e.kind = 'request' ORDER BY e.user_id, e.role;
INSERT INTO account_deletion_requests (user_id, status, reasons, deletion_fee, requested_at,
       scheduled_deletion_at, ip_address, user_agent, role, profile_id, delete_user)
SELECT e.user_id, 'pending', '["switching_role"]', 0,
       now() - interval '10 days', now() + interval '80 days', '196.188.0.4', 'Mozilla/5.0',
       e.role, e.id, FALSE
FROM role_event e
WHERE e.kind = 'later' AND pg_temp.r(e.id * 8 + length(e.role), 19) % 10 = 0
ORDER BY e.user_id, e.role;

-- History: cancelled requests whose date has passed (not due: cancelled), completed role-only
-- requests, and audit rows of earlier runs; all on users that are not due.
INSERT INTO account_deletion_requests (user_id, status, reasons, deletion_fee, requested_at,
       scheduled_deletion_at, ip_address, user_agent, cancelled_at, cancelled_by_login,
       cancellation_reason, role, profile_id, delete_user)
SELECT f.id, 'cancelled', '["other"]', 200, now() - interval '200 days',
       now() - interval '110 days', '196.188.0.5', 'Mozilla/5.0', now() - interval '150 days',
       TRUE, 'logged in', NULL, NULL, TRUE
FROM flags f
WHERE NOT EXISTS (SELECT 1 FROM account_pick a WHERE a.id = f.id)
ORDER BY pg_temp.r(f.id, 30), f.id LIMIT :due_accounts;
INSERT INTO account_deletion_requests (user_id, status, reasons, deletion_fee, requested_at,
       scheduled_deletion_at, ip_address, user_agent, completed_at, role, profile_id,
       delete_user)
SELECT f.id, 'completed', '["switching_role"]', 0, now() - interval '300 days',
       now() - interval '210 days', '196.188.0.6', 'Mozilla/5.0', now() - interval '209 days',
       'tutor', NULL, FALSE
FROM flags f
WHERE NOT EXISTS (SELECT 1 FROM account_pick a WHERE a.id = f.id)
ORDER BY pg_temp.r(f.id, 31), f.id LIMIT :due_accounts;
INSERT INTO deletion_audit_log (deletion_type, user_id, user_email, role_name, deleted_at)
SELECT CASE WHEN g % 3 = 0 THEN 'account' ELSE 'role' END, :users + g,
       'gone' || g || '@example.com', CASE WHEN g % 3 = 0 THEN NULL ELSE 'tutor' END,
       now() - g * interval '1 hour'
FROM generate_series(1, 1000) g;

-- ---------------------------------------------------------------------------------------
-- The added tables' keys, indexes on their foreign keys, and the foreign keys (all ON DELETE
-- CASCADE). The fixture's tables had theirs during the load: their indexes are rebuilt, so
-- that they are as compact as indexes built after a load.
-- ---------------------------------------------------------------------------------------
ALTER TABLE playlists ADD PRIMARY KEY (id);
ALTER TABLE student_courses ADD PRIMARY KEY (id);
ALTER TABLE tutor_sessions ADD PRIMARY KEY (id);
ALTER TABLE parent_children ADD PRIMARY KEY (id);
ALTER TABLE advertiser_campaigns ADD PRIMARY KEY (id);

CREATE INDEX ON playlists (user_id);
CREATE INDEX ON student_courses (student_profile_id);
CREATE INDEX ON tutor_reviews (reviewer_id);
CREATE INDEX ON tutor_sessions (tutor_profile_id);
CREATE INDEX ON tutor_sessions (student_profile_id);
CREATE INDEX ON parent_children (parent_profile_id);
CREATE INDEX ON advertiser_campaigns (advertiser_profile_id);

ALTER TABLE playlists ADD FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE student_courses ADD FOREIGN KEY (student_profile_id)
    REFERENCES student_profiles (id) ON DELETE CASCADE;
ALTER TABLE tutor_reviews ADD FOREIGN KEY (reviewer_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE tutor_sessions ADD FOREIGN KEY (tutor_profile_id)
    REFERENCES tutor_profiles (id) ON DELETE CASCADE;
ALTER TABLE tutor_sessions ADD FOREIGN KEY (student_profile_id)
    REFERENCES student_profiles (id) ON DELETE CASCADE;
ALTER TABLE parent_children ADD FOREIGN KEY (parent_profile_id)
    REFERENCES parent_profiles (id) ON DELETE CASCADE;
ALTER TABLE advertiser_campaigns ADD FOREIGN KEY (advertiser_profile_id)
    REFERENCES advertiser_profiles (id) ON DELETE CASCADE;

REINDEX TABLE users;
REINDEX TABLE student_profiles;
REINDEX TABLE tutor_profiles;
REINDEX TABLE parent_profiles;
REINDEX TABLE advertiser_profiles;
REINDEX TABLE user_profiles;
REINDEX TABLE account_deletion_requests;
REINDEX TABLE deletion_audit_log;
REINDEX TABLE user_sessions;
REINDEX TABLE notifications;
REINDEX TABLE tutor_reviews;

-- What was generated, for the log (and checked by benches/run against the job's counts).
SELECT (SELECT count(*) FROM users) AS users,
       (SELECT count(*) FROM student_profiles) + (SELECT count(*) FROM tutor_profiles)
       + (SELECT count(*) FROM parent_profiles) + (SELECT count(*) FROM advertiser_profiles)
       + (SELECT count(*) FROM user_profiles) AS profiles,
       (SELECT count(*) FROM user_sessions) + (SELECT count(*) FROM notifications)
       + (SELECT count(*) FROM playlists) + (SELECT count(*) FROM student_courses)
       + (SELECT count(*) FROM tutor_reviews) + (SELECT count(*) FROM tutor_sessions)
       + (SELECT count(*) FROM parent_children) + (SELECT count(*) FROM advertiser_campaigns)
       AS child_rows,
       (SELECT count(*) FROM role_event WHERE kind IN ('self', 'request')) AS due_roles,
       (SELECT count(*) FROM due_account) AS due_accounts;
