-- The README's one-minute demo's data, loaded after the schema fixture
-- (tests/fixtures/astegni.sql: production's shape, json roles, naive timestamps).

INSERT INTO users (id, email, first_name, roles, active_role, account_status, scheduled_deletion_at) VALUES
 (1, 'abebe@example.com',  'Abebe',  '["user","tutor","student"]', 'tutor',   'active', NULL),
 (2, 'almaz@example.com',  'Almaz',  '["user","parent"]',          'parent',  'pending_deletion', now() - interval '2 days'),
 (3, 'dawit@example.com',  'Dawit',  '["user","student"]',         'student', 'pending_deletion', now() + interval '40 days'),
 (4, 'hana@example.com',   'Hana',   '["user","tutor","parent"]',  'parent',  'active', NULL),
 (5, NULL,                 'Kebede', '["user","advertiser"]',      'advertiser', 'active', NULL);
SELECT setval('users_id_seq', 5);

-- Abebe removed his tutor role 91 days ago: due.
INSERT INTO tutor_profiles (user_id, is_active, scheduled_deletion_at) VALUES (1, FALSE, now() - interval '1 day');
INSERT INTO tutor_reviews (tutor_profile_id, rating) VALUES (1, 5), (1, 4);
INSERT INTO student_profiles (user_id) VALUES (1);
-- Almaz left Astegni; her grace period is over: the whole account is due.
INSERT INTO parent_profiles (user_id) VALUES (2);
INSERT INTO user_sessions (user_id, token) VALUES (2, 'a'), (2, 'b');
INSERT INTO account_deletion_requests (user_id, reasons, scheduled_deletion_at, delete_user)
    VALUES (2, '["not_useful"]', now() - interval '2 days', TRUE);
-- Dawit left too, but has 40 days to change his mind: kept.
INSERT INTO student_profiles (user_id) VALUES (3);
-- Hana asked to delete only her parent role; the request is due.
INSERT INTO tutor_profiles (user_id) VALUES (4);
INSERT INTO parent_profiles (user_id) VALUES (4);
INSERT INTO account_deletion_requests (user_id, reasons, scheduled_deletion_at, role, delete_user)
    VALUES (4, '["other"]', now() - interval '1 hour', 'parent', FALSE);
-- Kebede's advertiser role is scheduled but not yet due: kept.
INSERT INTO advertiser_profiles (user_id, is_active, scheduled_deletion_at) VALUES (5, FALSE, now() + interval '10 days');
