"""Time ``conceptlearn generate``'s work for a 10 x 10 grid: 10 images parsed, 9 new exemplars
of each (the grid's first column is the image itself), in one process: the first call compiles
(or loads the compilation cache), the later ones run compiled. Writes JSON.

    CONCEPTLEARN_DATA=/work/shared/omniglot python scripts/bench_generate.py \\
        --out results/bench_generate.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def dev_images(n: int, root=None) -> np.ndarray:
    """``bool (n, 105, 105)``: the first support image of the first ``n`` classes of dev run 1."""
    from conceptlearn.datasets.episodes import load_episode, load_runs

    runs, source = load_runs("dev", root)
    return load_episode(runs[0], source).support[:n, 0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--exemplars", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the first")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import jax

    from conceptlearn.concept import generate

    images = dev_images(args.images, args.data)
    seconds = []
    for i in range(1 + args.repeats):
        start = time.perf_counter()
        out = generate(images[:, None], args.exemplars, seed=i, quick=args.quick)
        seconds.append(round(time.perf_counter() - start, 2))
    result = {
        "grid": [args.images, 1 + args.exemplars],
        "quick": args.quick,
        "first_call_s": seconds[0],
        "compiled_calls_s": seconds[1:],
        "shape": list(out.shape),
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
