#!/usr/bin/env python3
"""Turns benches/run's results.tsv into the BENCHMARKS.md table (medians over the rounds).

Usage: summarize.py RESULTS_TSV [MACHINE_TXT]
"""

import csv
import re
import statistics
import sys
from collections import defaultdict


def median(values):
    return statistics.median(values) if values else None


def seconds(values):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def paired(g, who):
    """Median (range) of who/floor within each round: the two ran a few seconds apart, so
    this ratio does not see the machine's slow and fast phases, which the medians of
    separate runs do."""
    floor_by_round = {r["round"]: float(r["wall_s"]) for r in g["floor"]}
    ratios = sorted(
        float(r["wall_s"]) / floor_by_round[r["round"]]
        for r in g[who]
        if r["round"] in floor_by_round
    )
    if not ratios:
        return "-"
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}x"
    return f"{median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def main():
    rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
    due = {}
    rows = [r for r in rows if r.get("contender")]
    if len(sys.argv) > 2:
        for line in open(sys.argv[2]):
            m = re.match(r"(\w+): users=(\d+) due_roles=(\d+) due_accounts=(\d+)", line)
            if m:
                due[m[1]] = (int(m[2]), int(m[3]) + int(m[4]))
    groups = defaultdict(lambda: defaultdict(list))
    order = []
    for row in rows:
        key = (row["scale"], row["net"])
        if key not in order:
            order.append(key)
        groups[key][row["contender"]].append(row)

    print(
        "| scale | network | users / due rows | job s | floor s | per-row s | job/floor "
        "| job/floor per round | per-row/job | per-row/floor | job peak RSS | job longest locking txn, worst round (p95) "
        "| job longest read-only stmt | dry run s | identical |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in order:
        g = groups[key]
        wall = {who: [float(r["wall_s"]) for r in g[who]] for who in g}
        tool, floor_, perrow = (median(wall.get(w, [])) for w in ("tool", "floor", "perrow"))
        rss = max((int(r["rss_kb"]) for r in g["tool"]), default=0)
        dry_rss = max((int(r["rss_kb"]) for r in g["dry-run"]), default=0)
        longest = max((float(r["longest_txn_ms"]) for r in g["tool"]), default=None)
        p95 = max((float(r["p95_txn_ms"]) for r in g["tool"]), default=None)
        readonly = max((float(r["longest_readonly_ms"]) for r in g["tool"]), default=None)
        identical = all(
            r["fingerprint"] == "same" for who in ("tool", "perrow", "floor") for r in g[who]
        )
        users, due_rows = due.get(key[0], ("?", "?"))
        rss_text = f"{rss / 1024:.1f} MB" if rss else "-"
        if dry_rss:
            rss_text += f" (dry run {dry_rss / 1024:.1f} MB)"
        print(
            f"| {key[0]} | {key[1]} | {users} / {due_rows} | {seconds(wall.get('tool', []))} "
            f"| {seconds(wall.get('floor', []))} | {seconds(wall.get('perrow', []))} "
            f"| {ratio(tool, floor_)} | {paired(g, 'tool')} | {ratio(perrow, tool)} "
            f"| {ratio(perrow, floor_)} | {rss_text} "
            f"| {f'{longest:.0f} ms ({p95:.0f} ms)' if longest is not None else '-'} "
            f"| {f'{readonly:.0f} ms' if readonly is not None else '-'} "
            f"| {seconds(wall.get('dry-run', []))} "
            f"| {'yes' if identical else 'NO'} ({sum(len(g[w]) for w in ('tool', 'perrow', 'floor'))} runs) |"
        )
    candidate_table(groups, order)


def candidate_table(groups, order):
    """The candidate (a proposed build of the job) next to the job, when one was run."""
    if not any(groups[key]["candidate"] for key in order):
        return
    print()
    print(
        "| scale | network | job s | candidate s | floor s | job/floor | candidate/floor "
        "| job/floor per round | candidate/floor per round | per-row/candidate | candidate peak RSS | candidate longest locking txn, worst round (p95) "
        "| candidate longest read-only stmt | candidate dry run s | identical |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in order:
        g = groups[key]
        if not g["candidate"]:
            continue
        wall = {who: [float(r["wall_s"]) for r in g[who]] for who in g}
        tool, cand, floor_, perrow = (
            median(wall.get(w, [])) for w in ("tool", "candidate", "floor", "perrow")
        )
        rss = max(int(r["rss_kb"]) for r in g["candidate"])
        longest = max(float(r["longest_txn_ms"]) for r in g["candidate"])
        p95 = max(float(r["p95_txn_ms"]) for r in g["candidate"])
        readonly = max(float(r["longest_readonly_ms"]) for r in g["candidate"])
        identical = all(r["fingerprint"] == "same" for r in g["candidate"])
        print(
            f"| {key[0]} | {key[1]} | {seconds(wall.get('tool', []))} "
            f"| {seconds(wall.get('candidate', []))} | {seconds(wall.get('floor', []))} "
            f"| {ratio(tool, floor_)} | {ratio(cand, floor_)} | {paired(g, 'tool')} "
            f"| {paired(g, 'candidate')} | {ratio(perrow, cand)} "
            f"| {rss / 1024:.1f} MB | {longest:.0f} ms ({p95:.0f} ms) | {readonly:.0f} ms "
            f"| {seconds(wall.get('candidate-dry-run', []))} "
            f"| {'yes' if identical else 'NO'} ({len(g['candidate'])} runs) |"
        )


if __name__ == "__main__":
    main()
