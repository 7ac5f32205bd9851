#!/usr/bin/env python3
"""The rows of docs/reliability.md, for scripts/chaos.sh.

  chaos_row.py FAULT EXPECTED OBSERVED SETTLED RUN_DIR   print one table row
  chaos_row.py --table ROWS_FILE DOC                      merge rows into DOC

A row is PASS only when `promoctl check --acks` passed after settling and
every outbox event the broker should hold is there.
"""
import json
import re
import sys
from pathlib import Path

BEGIN = "<!-- chaos:begin -->"
END = "<!-- chaos:end -->"
HEADER = (
    "| fault | expected | observed | requests | lost | duplicated | oversold | verdict |\n"
    "|---|---|---|---|---|---|---|---|\n"
)
OVERSOLD = {"coupon.issued_matches_coupons", "timesale.sold_matches_orders"}
DOUBLED = {
    "coupon.per_user_limit",
    "coupon.codes_redeemed_once",
    "timesale.per_user_limit",
    "point.cancelled_once",
    "events.unique_ids",
}


def row(fault, expected, observed, settled, run_dir):
    d = Path(run_dir)
    check = json.loads((d / "check.json").read_text() or "{}") if (d / "check.json").exists() else {}
    results = {r["check"]: r for r in check.get("results", [])}
    report = json.loads((d / "report.json").read_text()) if (d / "report.json").exists() else {}
    requests = report.get("summary", {}).get("attempted", 0)

    lost = unexpected = 0
    for name, r in results.items():
        if name.startswith("acks."):
            m = re.search(r"lost (\d+), unexpected (\d+) \(unknown outcomes (\d+)\)", r.get("note") or "")
            if m:
                lost += int(m.group(1))
                unexpected += max(0, int(m.group(2)) - int(m.group(3)))
    oversold = sum(results.get(n, {}).get("violations", 0) for n in OVERSOLD)
    doubled = sum(results.get(n, {}).get("violations", 0) for n in DOUBLED) + unexpected

    want = outbox(d)
    seen = broker(d, want, "broker.jsonl")
    # Redeliveries are counted in the full read only; the re-read of a topic
    # (see chaos.sh) only finds what that read skipped.
    redelivered = sum(n - 1 for n in seen.values())
    missing = len(want.keys() - seen.keys() - broker(d, want, "broker-reread.jsonl").keys())
    lost += missing

    ok = check.get("ok") is True and settled == "yes" and lost == 0 and oversold == 0 and doubled == 0
    failed = [n for n, r in results.items() if r.get("violations") or r.get("error")]
    notes = [observed]
    notes.append(f"{len(want)} events checked on the broker, {redelivered} redelivered")
    if settled != "yes":
        notes.append("did not settle within 60 s")
    if failed:
        notes.append("failed checks: " + ", ".join(sorted(failed)))
    cells = [fault, expected, "; ".join(notes), str(requests), str(lost), str(doubled), str(oversold),
             "PASS" if ok else "FAIL"]
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def outbox(d):
    """Event id -> topic, of the outbox rows the broker must hold."""
    out = {}
    for line in (d / "outbox.ids").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


def broker(d, want, name):
    """Event id -> times read in file `name`, for the wanted ids."""
    seen = {}
    path = d / name
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            eid = json.loads(line).get("id")
        except ValueError:
            continue
        if eid in want:
            seen[eid] = seen.get(eid, 0) + 1
    return seen


def missing_topics(d):
    """The topics of events the full read did not see."""
    want = outbox(d)
    seen = broker(d, want, "broker.jsonl")
    return sorted({t for eid, t in want.items() if eid not in seen})


def table(rows_file, doc):
    new = [l for l in Path(rows_file).read_text().splitlines() if l.startswith("| ")]
    doc = Path(doc)
    text = doc.read_text() if doc.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    old_table, tail = rest.split(END, 1)
    key = lambda l: l.split("|")[1].strip()
    rows = {key(l): l for l in old_table.splitlines() if l.startswith("| ") and not l.startswith("| fault") and not l.startswith("|---")}
    for l in new:
        rows[key(l)] = l
    body = HEADER + "\n".join(rows.values()) + "\n"
    doc.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")


if __name__ == "__main__":
    if sys.argv[1] == "--missing-topics":
        print(" ".join(missing_topics(Path(sys.argv[2]))))
    elif sys.argv[1] == "--table":
        table(sys.argv[2], sys.argv[3])
    else:
        print(row(*sys.argv[1:6]))
