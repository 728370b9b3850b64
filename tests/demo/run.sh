#!/usr/bin/env bash
# The README's one-minute demo: a throwaway PostgreSQL with sample data, then the job's
# check, dry run and real run. Leaves nothing behind. Works as a normal user or as root
# (the server then runs as the postgres or nobody user).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
job=${JOB:-$here/../../target/release/astegni-delete-expired}
[ -x "$job" ] || { echo "build first: cargo build --release" >&2; exit 1; }
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bindir/initdb" ] || { echo "install PostgreSQL first: apt install postgresql" >&2; exit 1; }

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
url="host=$dir user=postgres dbname=postgres"
# The schema fixture without its audit table: `check` then shows that the first real run
# creates it.
sed '/^-- <audit_log>$/,/^-- <\/audit_log>$/d' "$here/../fixtures/astegni.sql" |
    "$bindir/psql" -q -X -v ON_ERROR_STOP=1 -d "$url" -o /dev/null -f - -f "$here/sample.sql"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@" || printf '(exit code %s)\n' "$?"; }
step "$job" check --database-url "$url"
step "$job" pending --days 60 --database-url "$url"
step "$job" --dry-run --log-target stderr --database-url "$url"
step "$job" --log-target stderr --database-url "$url"
step "$bindir/psql" -X -d "$url" -c \
    "SELECT deletion_type, user_id, user_email, role_name, automated FROM deletion_audit_log ORDER BY id"
step "$bindir/psql" -X -d "$url" -c "SELECT id, email, roles, active_role FROM users ORDER BY id"
step "$job" --log-target stderr --database-url "$url"
