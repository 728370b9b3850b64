#!/usr/bin/env bash
# The README's one-minute demo: a throwaway PostgreSQL with sample data, then the job's
# check, dry run and real run, each step saying what to expect, and a last check that the
# database ended as expected (exit 1 if not: .ci/run runs the demo too). Leaves nothing
# behind. Works as a normal user or as root (the server then runs as the postgres or nobody
# user).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
job=${JOB:-$here/../../target/release/astegni-delete-expired}
[ -x "$job" ] || { echo "build first: cargo build --release" >&2; exit 1; }
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -x "$bindir/initdb" ] || { echo "demo: PostgreSQL is not installed: apt install postgresql (no server needs to run)" >&2; exit 1; }

dir=$(mktemp -d /tmp/astegni-demo.XXXXXX)
as_server=()
if [ "$(id -u)" = 0 ]; then
    server_user=$(id -u postgres >/dev/null 2>&1 && echo postgres || echo nobody)
    chown "$server_user" "$dir"
    as_server=(runuser -u "$server_user" --)
fi
cleanup() {
    "${as_server[@]}" "$bindir/pg_ctl" -D "$dir/data" stop -m immediate >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

"${as_server[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust -N >/dev/null
"${as_server[@]}" "$bindir/pg_ctl" -D "$dir/data" -w -l "$dir/server.log" start \
    -o "-c listen_addresses='' -k $dir -p 5432" >/dev/null
# The job and psql both read the database from the environment: the commands shown stay short.
export DATABASE_URL="host=$dir user=postgres dbname=postgres"
export PGHOST=$dir PGUSER=postgres PGDATABASE=postgres PAGER=cat
# The schema fixture without its audit table: `check` then shows that the first real run
# creates it.
sed '/^-- <audit_log>$/,/^-- <\/audit_log>$/d' "$here/../fixtures/astegni.sql" |
    "$bindir/psql" -q -X -v ON_ERROR_STOP=1 -o /dev/null -f - -f "$here/sample.sql"

PATH=$(dirname "$job"):$bindir:$PATH
expect() { printf '\n\033[36m# %s\033[0m\n' "$*"; }
# Shows the command as it could be typed (arguments with spaces quoted), then runs it.
step() {
    local shown= arg
    for arg in "$@"; do
        if [[ $arg == *' '* ]]; then shown+=" \"$arg\""; else shown+=" $arg"; fi
    done
    printf '\033[1m$%s\033[0m\n' "$shown"
    "$@" || printf '(exit code %s)\n' "$?"
}
sql() { step psql -X -P pager=off -c "$1"; }

expect "What the job sees. Due now: Abebe's tutor role, Almaz's account, Hana's parent role;" \
    "Dawit (leaving in 40 days) and Kebede's advertiser role (in 10 days) are not due yet."
step astegni-delete-expired check
expect "What is coming within 60 days: the three due now, then Kebede's role and Dawit's account."
step astegni-delete-expired pending --days 60
expect "A dry run: it would delete 2 roles (Abebe's tutor, Hana's parent) and 1 account" \
    "(Almaz), and changes nothing."
step astegni-delete-expired --dry-run
expect "The real run: the same 2 roles and 1 account go; Dawit and Kebede stay."
step astegni-delete-expired
expect "One audit row per deletion: 2 roles and 1 account."
sql "SELECT deletion_type, user_id, user_email, role_name, automated FROM deletion_audit_log ORDER BY id"
expect "Almaz (2) is gone; Abebe (1) keeps user and student, Hana (4) keeps user and tutor."
sql "SELECT id, email, roles, active_role FROM users ORDER BY id"
expect "A second run finds nothing left to delete."
step astegni-delete-expired

# What the database must look like now; every difference is printed.
audit=$(psql -X -At -c "SELECT to_regclass('deletion_audit_log') IS NOT NULL")
if [ "$audit" != t ]; then
    differences="there is no deletion_audit_log: no run deleted anything"
else
differences=$(psql -X -At -v ON_ERROR_STOP=1 <<'SQL'
SELECT what FROM (
  SELECT 'users left: ' || string_agg(id::text, ',' ORDER BY id) AS what
    FROM users HAVING string_agg(id::text, ',' ORDER BY id) <> '1,3,4,5'
  UNION ALL
  SELECT format('user %s roles %s, expected %s', u.id, u.roles, e.roles)
    FROM users u JOIN (VALUES (1, '["user", "student"]'), (3, '["user", "student"]'),
                              (4, '["user", "tutor"]'), (5, '["user", "advertiser"]')) e(id, roles)
      ON e.id = u.id
   WHERE u.roles::jsonb <> e.roles::jsonb
  UNION ALL
  SELECT format('%s audit rows for %s, expected 1', count(*), deletion_type || ' ' || user_id ||
                coalesce(' ' || role_name, ''))
    FROM deletion_audit_log GROUP BY deletion_type, user_id, role_name HAVING count(*) <> 1
  UNION ALL
  SELECT format('%s audit rows, expected 3', count(*)) FROM deletion_audit_log
  HAVING count(*) <> 3
  UNION ALL
  SELECT 'Kebede''s advertiser profile is gone' WHERE NOT EXISTS
    (SELECT 1 FROM advertiser_profiles WHERE user_id = 5)
) d
SQL
)
fi
if [ -z "$differences" ]; then
    printf '\n\033[32mThe database ended as expected.\033[0m\n'
else
    printf '\n\033[31mThe database did not end as expected:\033[0m\n%s\n' "$differences"
    exit 1
fi
