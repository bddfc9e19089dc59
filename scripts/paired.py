"""Paired comparison of two harness results files on the same runs (same queries).

    python scripts/paired.py results/a.json results/b.json

Prints each file's errors on the runs both finished, the queries only A gets wrong and only B
gets wrong, and the two-sided exact sign (McNemar) test of those discordant queries.
"""

from __future__ import annotations

import argparse
import json

from scipy.stats import binomtest


def paired(a: dict, b: dict) -> dict:
    """Discordant-query counts and the sign-test p-value of two results dicts."""
    runs_b = {r["run"]: r for r in b["runs"]}
    only_a = only_b = both = n = 0
    for ra in a["runs"]:
        rb = runs_b.get(ra["run"])
        if rb is None:
            continue
        for pa, pb, label in zip(ra["predictions"], rb["predictions"], ra["labels"], strict=True):
            n += 1
            wrong_a, wrong_b = pa != label, pb != label
            only_a += wrong_a and not wrong_b
            only_b += wrong_b and not wrong_a
            both += wrong_a and wrong_b
    discordant = only_a + only_b
    p = binomtest(only_a, discordant).pvalue if discordant else 1.0
    return {"queries": n, "errors_a": only_a + both, "errors_b": only_b + both,
            "only_a_wrong": only_a, "only_b_wrong": only_b, "sign_test_p": round(p, 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    args = parser.parse_args()
    with open(args.a) as fa, open(args.b) as fb:
        print(json.dumps(paired(json.load(fa), json.load(fb))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
