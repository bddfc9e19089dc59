"""Seconds per stage of the ``bpl`` contender on dev episodes, on whatever device jax has.

    python scripts/bench_bpl.py --library results/small1.npz --runs 1 2 3 [--quick] \
        [--ks 1] --out results/bench_bpl_full.json

The first run given is a warm-up that compiles (its time is reported as ``compile_episode_s``);
the others are timed stage by stage (mean seconds per episode): proposals (host), refinement and
``log P(type)`` (one jitted call for the episode's images), evidence self-refits, pruning refits,
two-way refits. Also refits per second (one refit = one parse fitted to one image, each of its
optimiser runs counted), errors, peak memory (RSS of this process; device memory where the
device reports it) and the device. No parse cache: every stage is computed.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from conceptlearn.datasets.episodes import load_episode, load_runs
from conceptlearn.evaluate import device_description, versions
from conceptlearn.inference import classify as C
from conceptlearn.inference.config import preset
from conceptlearn.inference.fit import propose_batch, refine_proposals
from conceptlearn.model.library import load_library
from conceptlearn.overrides import parse_key_values


def time_episode(episode, cfg, library, ks) -> dict:
    """Seconds per stage of scoring one episode (support ``(n_way, k)`` and queries)."""
    t = {}
    n_way, k = episode.support.shape[:2]
    support = episode.support.reshape(n_way * k, *episode.support.shape[2:])
    images = np.concatenate([support, episode.queries])
    s = time.perf_counter()
    stacked = propose_batch(images, cfg, 0)
    t["proposals"] = time.perf_counter() - s
    s = time.perf_counter()
    parses = jax.block_until_ready(refine_proposals(stacked, images, cfg, library))
    t["refinement and log P(type)"] = time.perf_counter() - s
    sp = jax.tree.map(lambda x: x[: n_way * k], parses)
    qp = jax.tree.map(lambda x: x[n_way * k :], parses)
    s = time.perf_counter()
    evidence = C.log_evidence(sp, support, cfg)
    t["evidence self-refits"] = time.perf_counter() - s
    state = C.State(
        jax.tree.map(lambda x: x.reshape(n_way, k, *x.shape[1:]), sp),
        jnp.asarray(episode.support),
        jnp.asarray(evidence.reshape(n_way, k)),
    )
    queries = jnp.asarray(episode.queries)
    pruning = 0.0
    if cfg.prune_width < n_way:
        s = time.perf_counter()
        C.prune_scores(state, qp, queries, cfg)
        pruning = t["pruning refits"] = time.perf_counter() - s
    s = time.perf_counter()
    scores = C.score_queries(state, qp, queries, cfg, ks=ks)  # prunes again inside
    t["two-way refits"] = time.perf_counter() - s - pruning
    t["total"] = sum(t.values())
    t["errors"] = {int(kk): int((v.argmax(1) != episode.labels).sum()) for kk, v in scores.items()}
    return t


def refits_per_episode(n_way: int, k: int, n_query: int, cfg) -> int:
    """Refits (optimiser runs) of one episode without pruning, the largest k."""
    runs = 2 if cfg.wide_lr > 0 else 1
    directions = 2 if cfg.two_way else 1
    width = min(cfg.prune_width, n_way)
    two_way = n_query * width * k * cfg.n_parses * directions * runs
    evidence = n_way * k * cfg.n_parses * runs
    prune = 0 if width >= n_way else (n_query * n_way * k * directions + n_way * k) * runs
    return two_way + evidence + prune


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True)
    parser.add_argument("--runs", type=int, nargs="+", default=[0, 1, 2],
                        help="dev run indices (0-based); the first only compiles")
    parser.add_argument("--quick", action="store_true", help="QUICK preset (default FULL)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1],
                        help="shots per class, scored in one sweep on dev-k<max>")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override (JSON value)")
    parser.add_argument("--out", default=None, help="write the table as JSON here")
    args = parser.parse_args()
    cfg = preset(args.quick, parse_key_values(args.overrides) or None)
    library = load_library(args.library)
    runs, source = load_runs(f"dev-k{max(args.ks)}")
    s = time.perf_counter()
    first = time_episode(load_episode(runs[args.runs[0]], source), cfg, library, args.ks)
    compile_s = time.perf_counter() - s
    tables = [time_episode(load_episode(runs[i], source), cfg, library, args.ks)
              for i in args.runs[1:]]
    stages = [k for k in first if k not in ("errors",)]
    mean = {k: float(np.mean([t[k] for t in tables])) for k in stages} if tables else first
    episode = load_episode(runs[args.runs[0]], source)
    n_way, k = episode.support.shape[:2]
    refits = refits_per_episode(n_way, k, len(episode.queries), cfg)
    device = jax.devices()[0]
    memory = getattr(device, "memory_stats", lambda: None)()
    report = {
        "preset": "quick" if args.quick else "full",
        "overrides": parse_key_values(args.overrides),
        "ks": args.ks,
        "runs": [runs[i].name for i in args.runs[1:]],
        "seconds_per_episode": {k: round(v, 3) for k, v in mean.items()},
        "compile_episode_s": round(compile_s, 2),
        "refits_per_episode": refits,
        "refits_per_s": round(refits / mean["total"], 1),
        "errors": [t["errors"] for t in tables],
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "peak_device_gb": None if not memory else round(memory.get("peak_bytes_in_use", 0) / 2**30, 3),
        "device": device_description(),
        "versions": versions(),
    }
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
