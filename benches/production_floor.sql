-- The floor's copy of the production shape (benches/production.sql): the keys that do not
-- cascade, altered to ON DELETE CASCADE before the floor's timed run, so that its plain
-- set-based statements delete what the job's deletion plan deletes under --foreign-keys
-- delete.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
SELECT format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s ON DELETE CASCADE',
              c.conrelid::regclass, c.conname, c.conname, pg_get_constraintdef(c.oid))
FROM pg_constraint c
WHERE c.contype = 'f' AND c.confdeltype IN ('a', 'r')
  AND c.connamespace = 'public'::regnamespace
ORDER BY c.conname
\gexec
