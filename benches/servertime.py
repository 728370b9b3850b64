#!/usr/bin/env python3
"""Where a contender's time went on the server, from the server's own log.

benches/run makes the job (bench_tool, bench_candidate) and the floor (bench_floor) log in
as roles with `log_min_duration_statement = 0`, and the server writes
`log_line_prefix = '%n [%p] %u: '`: every statement ends with a line giving its duration,
and with the extended protocol (the job) its parse and bind (where an unnamed statement is
planned) are logged separately from its execution. One session (backend pid) is one run.

Each run's server time is split by what the statements do, so the job and the floor can be
set side by side:
  delete:TABLE   statements that delete from TABLE (with their cascades, role removals,
                 request updates and audit rows); requests: the role-only request deletions.
                 Since the fifth session the job's row locks are CTEs of these statements.
  lock           the job's row locks in statements of their own (SELECT ... FOR UPDATE
                 SKIP LOCKED): the job before the fifth session
  plan           parse and bind of every statement (the floor's are inside its executions)
  cursor         the job's cursors, materialized at their COMMIT: COMMITs that took over
                 1 ms, or the one-statement START TRANSACTION; DECLARE; COMMIT
  other          BEGIN, the other COMMITs, FETCH, setup queries
and `wall` is the time from the start of the session's first statement to the end of its
last, as the server saw it: what lies between the statements (round trips, the client's own
work) is `wall` minus `server`.

Usage: servertime.py SERVER_LOG USER...
Prints one line per run of the given users, in log order.
"""

import collections
import re
import sys

from txnlog import LINE  # the server log's duration line, as benches/run configures it

DELETE_FROM = re.compile(r'DELETE FROM "?([A-Za-z_][A-Za-z0-9_]*)"?')
CATEGORIES = ["delete", "lock", "plan", "cursor", "other"]


def category(kind, ms, sql):
    if kind in ("parse", "bind"):
        return "plan"
    if "FOR UPDATE" in sql and "DELETE" not in sql:
        return "lock"
    table = DELETE_FROM.search(sql)
    if table:
        if "account_deletion_requests r SET status" in sql and (
            "WITH req" in sql or "WITH locked_requests" in sql
        ):
            return "delete:requests"
        return "delete:" + table.group(1)
    if "DECLARE" in sql and "COMMIT" in sql:
        return "cursor"
    if sql.strip().upper().startswith("COMMIT") and ms > 1.0:
        return "cursor"
    return "other"


def main():
    path, users = sys.argv[1], set(sys.argv[2:])
    runs = collections.OrderedDict()  # pid -> {"user", "start", "end", "ms": Counter}
    current = None
    with open(path, "rb") as log:
        for raw in log:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            match = LINE.match(line)
            if not match:
                # Continuation lines of a multi-line statement belong to the last one.
                if current is not None and line.startswith("\t"):
                    current[2] += " " + line.strip()
                continue
            if current is not None:
                account(runs, *current)
            current = None
            if match["user"] not in users:
                continue
            current = [match, float(match["ms"]), match["sql"]]
    if current is not None:
        account(runs, *current)
    for pid, run in runs.items():
        print(describe(pid, run))


def account(runs, match, ms, sql):
    end = float(match["ts"])
    run = runs.setdefault(
        match["pid"],
        {"user": match["user"], "start": end - ms / 1000, "end": end, "ms": collections.Counter()},
    )
    run["end"] = end
    run["ms"][category(match["kind"], ms, sql)] += ms


def describe(pid, run):
    spent = run["ms"]
    server = sum(spent.values())
    deletes = sorted(key for key in spent if key.startswith("delete:"))
    parts = [f"{key}={spent[key]:.0f}" for key in deletes]
    parts += [f"{key}={spent[key]:.0f}" for key in CATEGORIES[1:] if spent[key]]
    wall = (run["end"] - run["start"]) * 1000
    return (
        f"{run['user']} [{pid}] wall={wall:.0f} server={server:.0f} "
        f"delete={sum(spent[key] for key in deletes):.0f} " + " ".join(parts) + " (ms)"
    )


if __name__ == "__main__":
    main()
