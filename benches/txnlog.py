#!/usr/bin/env python3
"""How long the job's transactions were, from the server's own log.

benches/run makes the job log in as a role with `log_min_duration_statement = 0` (and
`log_parameter_max_length = 0`), and the server writes `log_line_prefix = '%n [%p] %u: '`:
every statement of that role is logged when it ends, with its duration, the epoch time in
milliseconds and the backend pid. A transaction runs from the start of its BEGIN (end time
minus duration) to the end of its COMMIT or ROLLBACK, as the server saw it: this includes
every network round trip inside the transaction, which is what another session waiting for
one of its locks would see. Accurate to about 1 ms (the log's time resolution).

A statement outside BEGIN ... COMMIT is a transaction of its own, as long as its execution
(the commit that follows is not logged; with `synchronous_commit = off` it is short).

Transactions are told apart by what they do: one that locks or changes rows (FOR UPDATE,
DELETE, UPDATE, INSERT) can make the application wait, and is what `longest_ms` and the
percentiles are about. A read-only one (such as the count of due accounts, or the job's
cursors, declared and materialized in one simple query) holds a snapshot but blocks nobody:
reported separately as `longest_readonly_ms`.

Usage: txnlog.py SERVER_LOG START_OFFSET USER
Prints: transactions=N longest_ms=X p50_ms=Y p95_ms=V p99_ms=Z longest_readonly_ms=W
"""

import re
import sys

LINE = re.compile(
    r"^(?P<ts>\d+\.\d+) \[(?P<pid>\d+)\] (?P<user>\S*): LOG:  duration: (?P<ms>[\d.]+) ms  "
    r"(?P<kind>statement|parse|bind|execute)(?: [^:]*)?: (?P<sql>.*)$"
)


WRITES = re.compile(r"\bFOR (NO KEY )?UPDATE\b|\bFOR SHARE\b|\bDELETE\b|\bUPDATE\b|\bINSERT\b")


def main():
    path, offset, user = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    open_since = {}  # pid -> start time (s)
    writes = {}  # pid -> whether the open transaction locked or changed rows
    lengths = []
    single = 0.0
    with open(path, "rb") as log:
        log.seek(offset)
        for raw in log:
            match = LINE.match(raw.decode("utf-8", "replace").rstrip("\n"))
            if not match or match["user"] != user:
                continue
            end = float(match["ts"])
            ms = float(match["ms"])
            pid = match["pid"]
            sql = match["sql"].strip().upper()
            whole = sql.rstrip("; ").endswith("COMMIT")
            if match["kind"] == "statement" and whole and not sql.startswith("COMMIT"):
                # A whole transaction in one simple query (the job's cursors since fbeb640:
                # START TRANSACTION READ ONLY; DECLARE ...; COMMIT).
                if WRITES.search(sql):
                    lengths.append(ms)
                else:
                    single = max(single, ms)
            elif match["kind"] == "statement" and (
                sql.startswith("BEGIN") or sql.startswith("START TRANSACTION")
            ):
                open_since[pid] = end - ms / 1000.0
                writes[pid] = False
            elif match["kind"] == "statement" and (
                sql.startswith("COMMIT") or sql.startswith("ROLLBACK")
            ):
                start = open_since.pop(pid, None)
                if start is not None:
                    length = (end - start) * 1000.0
                    if writes.pop(pid):
                        lengths.append(length)
                    else:
                        single = max(single, length)
            elif pid in open_since:
                if WRITES.search(sql):
                    writes[pid] = True
            elif match["kind"] in ("statement", "execute"):
                # Outside BEGIN ... COMMIT a statement is a transaction of its own: the job's
                # batches since the fifth session (one statement each, committed at the end
                # of its round trip), the candidate queries and counts before.
                if WRITES.search(sql):
                    lengths.append(ms)
                else:
                    single = max(single, ms)
    lengths.sort()

    def pct(p):
        return lengths[min(len(lengths) - 1, int(p * len(lengths)))] if lengths else 0.0

    print(
        f"transactions={len(lengths)} longest_ms={lengths[-1] if lengths else 0.0:.1f} "
        f"p50_ms={pct(0.5):.1f} p95_ms={pct(0.95):.1f} p99_ms={pct(0.99):.1f} "
        f"longest_readonly_ms={single:.1f}"
    )


if __name__ == "__main__":
    main()
