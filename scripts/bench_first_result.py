"""Time to the first result of a new process, with a cold and then a warm compilation cache.

    python scripts/bench_first_result.py --library results/small1.npz --out results/first_result.json

Each of two fresh processes imports conceptlearn, learns 5 concepts from one image each (dev
run 1, ``cl.learn``) and classifies their 5 queries (``cl.classify``); the first finds an empty
persistent compilation cache (a new folder), the second the cache the first wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import time
start = time.perf_counter()
import numpy as np
import conceptlearn as cl
from conceptlearn.datasets.episodes import load_episode, load_runs
runs, source = load_runs("dev")
episode = load_episode(runs[0], source)
support = episode.support[:5]
queries = episode.queries[np.isin(episode.labels, range(5))]
learned = cl.learn(support, library={library!r}, quick={quick})
predictions = cl.classify(learned, queries)
print(time.perf_counter() - start, int((predictions != episode.labels[np.isin(episode.labels, range(5))]).sum()))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    report = {"library": args.library, "quick": args.quick}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "CONCEPTLEARN_JAX_CACHE": cache}
        code = CHILD.format(library=args.library, quick=args.quick)
        for name in ("first_process_s", "second_process_s"):
            done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                  text=True, check=True)
            seconds, errors = done.stdout.split()
            report[name] = round(float(seconds), 2)
            report["errors_of_5"] = int(errors)
        report["cache_files"] = sum(1 for _ in Path(cache).rglob("*") if _.is_file())
    print(json.dumps(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
