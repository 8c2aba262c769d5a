"""Two ``sketchcolor eval --json`` reports of the same items, compared group by group.

Usage::

    python benchmarks/eval_groups.py A.json B.json --metric ciede2000 \\
        --group "people=^(?:.*(?:1f468|1f469|1f9d1)){2}" --group "letters=^1f[12][0-9a-f]{2}$"

Items are matched by name (the rows at the first stroke count of each report; items scored in
only one report, or failed, are left out). Each ``--group NAME=REGEX`` takes the items whose name
the regular expression finds (``re.search``) and not taken by an earlier group; the rest are
"other". Prints, per group and for all: the number of items, the mean of the metric in A and in
B, and the change of A against B in per cent. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def scores(path: Path, metric: str) -> dict[str, float]:
    items = json.loads(path.read_text(encoding="utf-8"))["items"]
    first = min(item["strokes"] for item in items)
    return {
        item["name"]: float(item[metric])
        for item in items
        if item["strokes"] == first and item.get("status") == "scored" and item.get(metric) is not None
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", type=Path, help="report A (e.g. with a reference)")
    parser.add_argument("b", type=Path, help="report B (e.g. without)")
    parser.add_argument("--metric", default="ciede2000")
    parser.add_argument(
        "--group", action="append", default=[], help="NAME=REGEX (repeatable, first match wins)"
    )
    args = parser.parse_args()
    a, b = scores(args.a, args.metric), scores(args.b, args.metric)
    names = sorted(a.keys() & b.keys())
    rules = [(g.split("=", 1)[0], re.compile(g.split("=", 1)[1])) for g in args.group]
    groups: dict[str, list[str]] = {name: [] for name, _ in rules} | {"other": []}
    for item in names:
        group = next((name for name, rule in rules if rule.search(item)), "other")
        groups[group].append(item)
    print(f"{'group':20s} {'items':>6s} {'A':>8s} {'B':>8s} {'change':>8s}")
    for group, members in [*groups.items(), ("all", names)]:
        if not members:
            continue
        mean_a = sum(a[m] for m in members) / len(members)
        mean_b = sum(b[m] for m in members) / len(members)
        print(
            f"{group:20s} {len(members):6d} {mean_a:8.2f} {mean_b:8.2f} {100 * (mean_a - mean_b) / mean_b:7.1f} %"
        )


if __name__ == "__main__":
    main()
