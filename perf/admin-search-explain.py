#!/usr/bin/env python3
"""EXPLAIN ANALYZE of the admin search's statements, every filter combination.

Usage: perf/admin-search-explain.py coupons|orders DATABASE_URL [auto|force_generic_plan]

The database holds perf/admin-search-coupons.sql's (or -orders.sql's) million
rows. Each combination of user, parent (policy or sale; one with 30 % of the
rows and one with 0.35 %) and status is prepared as store.rs spells it
(`db::Filter`: bound ids, the status as a literal, `LIMIT $n OFFSET $m`),
run twice, then explained: the first page's and the count's top scan and
execution time, as a Markdown table. `force_generic_plan` shows the plan a
prepared statement may fall back to after five executions.
"""
import subprocess
import sys

HOT = "00000000-0000-0000-0000-000000000001"
COLD = "00000000-0000-0000-0000-0000000000c8"
USER = "00000000-0000-0000-0001-000000000007"

KINDS = {
    # table, parent column, order, statuses: (name, stored status, extra conditions)
    "coupons": ("coupons", "policy_id", "id DESC", [
        ("USED", "USED", []),
        ("AVAILABLE", "AVAILABLE", ["expires_at > $"]),
        ("EXPIRED", "AVAILABLE", ["expires_at <= $"]),
    ]),
    "orders": ("time_sale_orders", "time_sale_id", "id DESC", [
        ("CONFIRMED", "CONFIRMED", []),
        ("PENDING", "PENDING", []),
        ("CANCELLED", "CANCELLED", []),
    ]),
}


def psql(url, sql):
    return subprocess.run(["psql", url, "-X", "-q", "-At"], input=sql,
                          capture_output=True, text=True, check=True).stdout


def combos(parent, statuses):
    for user in [None, USER]:
        for par in [None, HOT, COLD]:
            for st in [None] + statuses:
                conds, args, types = [], [], []
                if user:
                    conds.append("user_id = $"), args.append(f"'{user}'"), types.append("uuid")
                if par:
                    conds.append(f"{parent} = $"), args.append(f"'{par}'"), types.append("uuid")
                if st:
                    conds.append(f"status = '{st[1]}'")
                    for extra in st[2]:
                        conds.append(extra), args.append("now()"), types.append("timestamptz")
                numbered = []
                for c in conds:
                    if c.endswith("$"):
                        c += str(len([x for x in numbered if "$" in x]) + 1)
                    numbered.append(c)
                where = (" WHERE " + " AND ".join(numbered)) if numbered else ""
                label = " & ".join(x for x in [
                    user and "user",
                    par and ("hot " if par == HOT else "cold ") + parent,
                    st and st[0],
                ] if x) or "no filter"
                yield label, where, args, types


def top(plan):
    lines = plan.splitlines()
    scan = next((l.strip().lstrip("-> ").split(" (")[0] for l in lines
                 if "Scan" in l and "Bitmap Heap" not in l), "?")
    ms = next((l.split(":")[1].strip() for l in lines if l.startswith("Execution Time")), "?")
    return scan, ms


def main():
    kind, url = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "auto"
    table, parent, order, statuses = KINDS[kind]
    print("| filter | first page: plan | time | count: plan | time |\n|---|---|---|---|---|")
    for label, where, args, types in combos(parent, statuses):
        n = len(args)
        page_args = ",".join(args + ["20", "0"])
        count_types = f"({','.join(types)})" if types else ""
        count_args = f"({','.join(args)})" if args else ""
        sql = f"""SET plan_cache_mode = {mode};
PREPARE p({','.join(types + ['bigint', 'bigint'])}) AS
  SELECT * FROM {table}{where} ORDER BY {order} LIMIT ${n + 1} OFFSET ${n + 2};
PREPARE c{count_types} AS SELECT count(*) FROM {table}{where};
EXECUTE p({page_args}); EXECUTE p({page_args});
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE p({page_args});
\\echo ----
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE c{count_args};
"""
        page, count = psql(url, sql).split("----")
        (ps, pt), (cs, ct) = top(page), top(count)
        print(f"| {label} | {ps} | {pt} | {cs} | {ct} |")


if __name__ == "__main__":
    main()
