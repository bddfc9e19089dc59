"""Parse quality (issue 13): on characters of alphabets the library never saw, the share of
drawings whose best parse has the true stroke count and lies within 3 px mean distance of the
true pen trajectories (:mod:`conceptlearn.inference.parse_quality`).

The drawings are an even spread over every character of the alphabets of ``--split`` that are
not in ``--exclude-split`` (small2 minus small1: Japanese_(katakana), Sanskrit, Tagalog):
``--n-drawings`` of them, each character's drawers in an order drawn from ``--seed``, the
characters taking turns (in an order also drawn from ``--seed``) until the count is reached.
Images and strokes are paired by alphabet, character and drawer.

Results are rewritten atomically after every chunk of ``--chunk`` images; a rerun with the same
setup skips the drawings already scored, so an interrupted run resumes.

    python scripts/parse_quality.py --n-drawings 300 --out results/s12/parse_quality_walks.json

``--mode proposer`` / ``both`` parse with ``--proposer``'s learned proposals
(``proposer_candidates=4``) instead of (``max_candidates=0``) / as well as the skeleton walks';
(``conceptlearn train-proposer``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from conceptlearn.datasets.omniglot import OmniglotImages, OmniglotStrokes, parse_key
from conceptlearn.evaluate import bootstrap_ci, write_atomic
from conceptlearn.inference.config import preset
from conceptlearn.inference.fit import parse_images
from conceptlearn.inference.parse_quality import MAX_DISTANCE, parse_quality
from conceptlearn.overrides import parse_key_values
from conceptlearn.shipped import default_library_path, resolve_library, sha256_file

PROPOSER_CANDIDATES = 4  # learned proposals per image in --mode proposer and both
MODE_OVERRIDES = {
    "walks": {},
    "proposer": {"max_candidates": 0, "proposer_candidates": PROPOSER_CANDIDATES},
    "both": {"proposer_candidates": PROPOSER_CANDIDATES},
}


def held_out_alphabets(split: str, exclude_split: str, root=None) -> list[str]:
    """Alphabets of ``split``'s image archive that ``exclude_split``'s does not hold, sorted."""
    seen = set(OmniglotImages(exclude_split, root).alphabets)
    return [a for a in OmniglotImages(split, root).alphabets if a not in seen]


def select_drawings(
    images: OmniglotImages, strokes: OmniglotStrokes, alphabets: list[str], n_drawings: int,
    seed: int,
) -> list[str]:
    """``n_drawings`` keys spread evenly over every character of ``alphabets``: characters take
    turns in a seeded order, each giving its next drawer in a seeded order, so that character
    counts differ by at most one. Only drawers with both an image and strokes are drawn; the
    keys come back sorted."""
    rng = np.random.default_rng(seed)
    characters = [(a, c) for a in alphabets for c in images.characters(a)]
    drawers = []
    for alphabet, character in characters:
        have_strokes = {parse_key(k)["drawer"] for k in strokes.keys(alphabet, character)}
        keys = [k for k in images.keys(alphabet, character)
                if parse_key(k)["drawer"] in have_strokes]
        drawers.append([keys[i] for i in rng.permutation(len(keys))])
    total = sum(map(len, drawers))
    if not 0 < n_drawings <= total:
        raise ValueError(f"--n-drawings must be in 1..{total} (drawings of {alphabets}), "
                         f"got {n_drawings}")
    order = rng.permutation(len(characters))
    chosen: list[str] = []
    for turn in range(max(map(len, drawers))):
        chosen += [drawers[c][turn] for c in order if turn < len(drawers[c])]
    return sorted(chosen[:n_drawings])


def proposer_overrides(mode: str, checkpoint: str | None) -> dict:
    """The config overrides of ``--mode`` (the learned proposer is the ``proposer`` config
    field); exits with a message naming the flag when the checkpoint is missing or bad."""
    if mode == "walks":
        if checkpoint is not None:
            raise SystemExit("--proposer is used only with --mode proposer or both")
        return {}
    if checkpoint is None:
        raise SystemExit(f"--mode {mode} needs --proposer CKPT (a learned proposer checkpoint)")
    if not Path(checkpoint).exists():
        raise SystemExit(f"--proposer {checkpoint} does not exist")
    from conceptlearn.inference.recognition import load_proposer

    try:
        load_proposer(checkpoint)  # fails here, before any parse, on a bad folder
    except (OSError, ValueError) as err:
        raise SystemExit(f"--proposer {checkpoint}: {err}") from err
    return {**MODE_OVERRIDES[mode], "proposer": checkpoint}


def summarise(rows: list[dict], max_strokes: int) -> dict:
    """The figures over the scored ``rows``: the share of good parses (%) with a 95% percentile
    bootstrap interval over characters (10,000 resamples, seed 0), the share with the right
    stroke count, the median distance, and how many drawings have more strokes than a parse."""
    if not rows:
        return {"n_drawings": 0}
    character = np.array(["/".join(r["key"].split("/")[:2]) for r in rows])
    good = np.array([r["good"] for r in rows])
    names, index = np.unique(character, return_inverse=True)
    good_per_character = np.bincount(index, weights=good)
    drawings_per_character = np.bincount(index)
    # bootstrap_ci resamples characters and pools: the "errors" here are the good parses
    lo, hi = bootstrap_ci(good_per_character, drawings_per_character, n_boot=10_000, seed=0)
    distances = [r["mean_distance"] for r in rows if r["mean_distance"] is not None]
    fits = [r["good"] for r in rows if r["true_strokes"] <= max_strokes]
    return {
        "n_drawings": len(rows),
        "n_characters": len(names),
        "good_pct": 100.0 * float(good.mean()),
        "good_ci95_pct": [lo, hi],
        "count_ok_pct": 100.0 * float(np.mean([r["count_ok"] for r in rows])),
        "median_mean_distance_px": float(np.median(distances)) if distances else None,
        "n_without_distance": len(rows) - len(distances),
        "n_true_over_max_strokes": len(rows) - len(fits),
        "good_pct_within_max_strokes": 100.0 * float(np.mean(fits)) if fits else None,
    }


def score_chunk(keys, images, strokes, cfg, library, seed) -> list[dict]:
    """Parse the images of ``keys`` and score each best parse against its strokes."""
    parse = parse_images(images.images(keys), cfg, seed=seed, library=library)
    points = np.asarray(parse.points[:, 0])  # (n, S, P, 2), the best parse of each image
    mask = np.asarray(parse.mask[:, 0]) & np.isfinite(np.asarray(parse.log_post[:, 0]))[:, None, None]
    rows = []
    for key, pts, msk in zip(keys, points, mask, strict=True):
        quality = parse_quality(strokes.strokes(key), pts, msk, max_distance=MAX_DISTANCE)
        rows.append({"key": key, **quality._asdict()})
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="results JSON (rewritten as chunks finish; resumed)")
    parser.add_argument("--library", default=None,
                        help="library .npz (default: the shipped small1 library)")
    parser.add_argument("--split", default="small2", help="split whose drawings are parsed")
    parser.add_argument("--exclude-split", default="small1",
                        help="leave out the alphabets of this split (the library's)")
    parser.add_argument("--n-drawings", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0,
                        help="picks the drawers and seeds the proposals")
    parser.add_argument("--set", dest="overrides", action="append", default=None,
                        metavar="KEY=VALUE",
                        help="override a BPLConfig field (VALUE parsed as JSON when it can be); "
                        "repeatable")
    parser.add_argument("--quick", action="store_true", help="start from the QUICK preset")
    parser.add_argument("--mode", choices=sorted(MODE_OVERRIDES), default="walks",
                        help="proposals: random walks, the learned proposer, or both")
    parser.add_argument("--proposer", default=None, metavar="CKPT",
                        help="learned proposer checkpoint (--mode proposer or both)")
    parser.add_argument("--chunk", type=int, default=40, help="images per parse call")
    parser.add_argument("--data", default=None,
                        help="Omniglot folder (default: $CONCEPTLEARN_DATA or ./data/omniglot)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.chunk < 1:
        parser.error(f"--chunk must be >= 1, got {args.chunk}")
    mode_overrides = proposer_overrides(args.mode, args.proposer)
    try:
        overrides = {**mode_overrides, **parse_key_values(args.overrides)}
        cfg = preset(quick=args.quick, overrides=overrides)
    except ValueError as err:
        raise SystemExit(f"--mode {args.mode} / --set: {err}") from err
    library_path = Path(args.library) if args.library else default_library_path()
    library = resolve_library(library_path)

    images = OmniglotImages(args.split, args.data)
    strokes = OmniglotStrokes(args.split, args.data)
    alphabets = held_out_alphabets(args.split, args.exclude_split, args.data)
    if not alphabets:
        raise SystemExit(f"--split {args.split} has no alphabet outside --exclude-split "
                         f"{args.exclude_split}")
    try:
        keys = select_drawings(images, strokes, alphabets, args.n_drawings, args.seed)
    except ValueError as err:
        raise SystemExit(str(err)) from err

    setup = {
        "split": args.split,
        "exclude_split": args.exclude_split,
        "alphabets": alphabets,
        "seed": args.seed,
        "mode": args.mode,
        "proposer": args.proposer,
        "library": str(library_path),
        "library_sha256": sha256_file(library_path),
        "config": dataclasses.asdict(cfg),
        "max_distance_px": MAX_DISTANCE,
        "n_drawings": args.n_drawings,
    }
    out = Path(args.out)
    rows: list[dict] = []
    seconds = 0.0
    if out.exists():
        previous = json.loads(out.read_text())
        if previous.get("setup") != json.loads(json.dumps(setup)):
            raise SystemExit(f"--out {out} holds a run with another setup (flags, config, library "
                             "or data); remove it or choose another --out")
        rows, seconds = previous["rows"], previous["seconds_total"]
    command = "python scripts/parse_quality.py " + shlex.join(argv)

    def write() -> dict:
        rows.sort(key=lambda r: r["key"])
        results = {"command": command, "setup": setup, **summarise(rows, cfg.max_strokes),
                   "seconds_total": seconds, "complete": len(rows) == len(keys), "rows": rows}
        write_atomic(out, results)
        return results

    done = {r["key"] for r in rows}
    todo = [k for k in keys if k not in done]
    results = write()
    for start in range(0, len(todo), args.chunk):
        part = todo[start : start + args.chunk]
        tic = time.perf_counter()
        rows += score_chunk(part, images, strokes, cfg, library, args.seed)
        seconds += time.perf_counter() - tic
        results = write()
        print(f"{len(rows)}/{len(keys)} drawings scored", file=sys.stderr, flush=True)

    lo, hi = results["good_ci95_pct"]
    median = results["median_mean_distance_px"]
    print(
        f"parse quality ({args.mode}) on {results['n_drawings']} drawings of "
        f"{results['n_characters']} {args.split}-only characters: {results['good_pct']:.1f}% good "
        f"(95% CI {lo:.1f}-{hi:.1f}), {results['count_ok_pct']:.1f}% right stroke count, median "
        f"distance {median if median is None else round(median, 2)} px, "
        f"{results['n_true_over_max_strokes']} with more than {cfg.max_strokes} strokes, "
        f"{results['seconds_total']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
