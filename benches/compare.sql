-- A fingerprint of the whole database, to check that the three contenders left identical
-- databases: one line per table of the public schema, "table rows hash", where hash is the
-- sum of a 64-bit hash of every row's text (order-independent). Equal fingerprints mean the
-- same rows in every table, up to a 64-bit hash collision.
--
-- What legitimately differs between contenders is left out or reduced:
--   * deletion_audit_log: its id (a sequence) and deleted_at (a timestamp) are left out; the
--     rest (deletion_type, user_id, user_email, role_name, automated) must match;
--   * any column named completed_at or deleted_at counts only as set or
--     not set (the time a request was completed differs from run to run).
-- Sequences are not compared (ids the audit rows got).
\set ON_ERROR_STOP on
\pset tuples_only on
\pset format unaligned
SELECT format(
    'SELECT %L || '' '' || count(*) || '' '' || coalesce(sum(hashtextextended(x::text, 0)::numeric), 0) FROM (SELECT %s FROM public.%I) x',
    c.relname,
    (SELECT string_agg(
                CASE WHEN a.attname IN ('completed_at', 'deleted_at')
                     THEN format('%I IS NOT NULL', a.attname)
                     ELSE quote_ident(a.attname) END,
                ', ' ORDER BY a.attnum)
     FROM pg_attribute a
     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       AND NOT (c.relname = 'deletion_audit_log' AND a.attname = 'id')),
    c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r'
ORDER BY c.relname
\gexec
