-- The floor: the same work as the job, as hand-written set-based SQL run by psql. One
-- statement per role table, one per role for role-only requests, one for accounts, each in its
-- own (autocommit) transaction: no batching, no locking beyond what the statements take, no
-- re-checks, no per-row reporting. It is the physical cost of these deletions, cascades,
-- role removals, request updates and audit rows on this database.
--
-- Same order and same outcome as the job (README "What it deletes"):
--   1. each role table (student, tutor, parent, advertiser, user): profiles due by
--      themselves; the role leaves users.roles (json, order kept), active_role moves to the
--      first other role (else 'user') if it named the deleted role; a 'role' audit row;
--   2. pending, due role-only requests (delete_user = FALSE): the profile they name (or the
--      user's profile of that role) is deleted as above and the request is completed;
--   3. accounts due by their own row or by a pending, due request that deletes the whole
--      account: an 'account' audit row with the email, the user deleted (ON DELETE CASCADE
--      does the rest), its pending requests marked completed (here they go with the cascade).
\set ON_ERROR_STOP on
SET client_min_messages = warning;

-- Role removal, for role :'role' over alias u (the same expressions the job uses for json).
\set remove_role 'roles = CASE WHEN json_typeof(u.roles) = ''array'' THEN (SELECT coalesce(json_agg(e.value ORDER BY e.n), ''[]''::json) FROM json_array_elements(u.roles) WITH ORDINALITY AS e(value, n) WHERE NOT (json_typeof(e.value) = ''string'' AND e.value #>> ''{}'' = d.role)) ELSE u.roles END, active_role = CASE WHEN u.active_role = d.role THEN coalesce(CASE WHEN json_typeof(u.roles) = ''array'' THEN (SELECT e.value #>> ''{}'' FROM json_array_elements(u.roles) WITH ORDINALITY AS e(value, n) WHERE json_typeof(e.value) = ''string'' AND e.value #>> ''{}'' NOT IN (d.role, ''user'') ORDER BY e.n LIMIT 1) END, ''user'') ELSE u.active_role END'

-- 1. Profiles due by themselves, table by table.
SELECT format($sql$
    WITH deleted AS (
        DELETE FROM %1$I p WHERE p.is_active = FALSE AND p.scheduled_deletion_at <= now()
        RETURNING p.id, p.user_id, %2$L::text AS role),
    updated AS (
        UPDATE users u SET %3$s FROM deleted d WHERE u.id = d.user_id
        RETURNING u.id, u.email)
    INSERT INTO deletion_audit_log (deletion_type, user_id, user_email, role_name)
    SELECT 'role', d.user_id, up.email, d.role
    FROM deleted d LEFT JOIN updated up ON up.id = d.user_id$sql$,
    role || '_profiles', role, :'remove_role')
FROM unnest(ARRAY['student', 'tutor', 'parent', 'advertiser', 'user']) WITH ORDINALITY AS r(role, n)
ORDER BY n
\gexec

-- 2. Role-only requests, role by role.
SELECT format($sql$
    WITH req AS (
        SELECT r.id, r.user_id, r.profile_id FROM account_deletion_requests r
        WHERE r.status = 'pending' AND r.scheduled_deletion_at <= now()
          AND r.delete_user = FALSE AND r.role = %2$L),
    completed AS (
        UPDATE account_deletion_requests r SET status = 'completed', completed_at = now()
        WHERE r.id IN (SELECT id FROM req)),
    deleted AS (
        DELETE FROM %1$I p USING req
        WHERE p.user_id = req.user_id AND (req.profile_id IS NULL OR p.id = req.profile_id)
        RETURNING p.id, p.user_id, %2$L::text AS role),
    updated AS (
        UPDATE users u SET %3$s FROM deleted d WHERE u.id = d.user_id
        RETURNING u.id, u.email)
    INSERT INTO deletion_audit_log (deletion_type, user_id, user_email, role_name)
    SELECT 'role', d.user_id, up.email, d.role
    FROM deleted d LEFT JOIN updated up ON up.id = d.user_id$sql$,
    role || '_profiles', role, :'remove_role')
FROM unnest(ARRAY['advertiser', 'parent', 'student', 'tutor', 'user']) WITH ORDINALITY AS r(role, n)
ORDER BY n
\gexec

-- 3. Accounts.
WITH due AS (
    SELECT u.id FROM users u
    WHERE u.account_status = 'pending_deletion' AND u.scheduled_deletion_at <= now()
    UNION
    SELECT r.user_id FROM account_deletion_requests r
    WHERE r.status = 'pending' AND r.scheduled_deletion_at <= now()
      AND r.delete_user IS NOT FALSE),
deleted AS (
    DELETE FROM users u USING due WHERE u.id = due.id
    RETURNING u.id, u.email),
completed AS (
    UPDATE account_deletion_requests r SET status = 'completed', completed_at = now()
    WHERE r.user_id IN (SELECT id FROM deleted) AND r.status = 'pending')
INSERT INTO deletion_audit_log (deletion_type, user_id, user_email, role_name)
SELECT 'account', id, email, NULL FROM deleted;
