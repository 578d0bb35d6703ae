"""Regression guard: ``python bench/compare.py OLD.json NEW.json`` flags every target
ratio that got more than 20 % worse (exit 1 if any did). Not a timed test: run it on
demand with two result files written by ``bench/run.py --json``."""

from __future__ import annotations

import json
import sys

# Direction of "better" for each target: higher ratios or lower times/percentages.
HIGHER_IS_BETTER = ("W1 vs", "W1b vs", "W2 ")
TOLERANCE = 0.20


def main(old_path: str, new_path: str) -> int:
    with open(old_path) as handle:
        old = json.load(handle)["ratios"]
    with open(new_path) as handle:
        new = json.load(handle)["ratios"]
    worse = 0
    for name in sorted(set(old) & set(new)):
        before, after = old[name], new[name]
        higher = name.startswith(HIGHER_IS_BETTER)
        change = (after - before) / before if before else 0.0
        regressed = change < -TOLERANCE if higher else change > TOLERANCE
        worse += regressed
        flag = "WORSE" if regressed else "ok"
        print(f"{flag:5} {name:32} {before:10.3f} -> {after:10.3f} ({change:+.0%})")
    return 1 if worse else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: compare.py OLD.json NEW.json")
    sys.exit(main(sys.argv[1], sys.argv[2]))
