"""``conceptlearn compare``: flags -> :func:`~conceptlearn.experiments.compare.make_plan` ->
:func:`~conceptlearn.experiments.compare.run_compare`, then print where everything went.

    conceptlearn compare --out results/compare                       # the standard preset
    conceptlearn compare --out /tmp/cmp --preset smoke --models bpl mhd
    conceptlearn compare --out results/compare_full --preset full --checkpoint checkpoints/vit_small1

A bad argument is one line naming it, exit status 2, no traceback. Interrupted runs resume:
rerun the same command. ``--ray [ADDRESS]`` runs the cells as Ray tasks
(:mod:`conceptlearn.experiments.ray_cells`) with the same results.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from conceptlearn.cli.common import add_data_argument
from conceptlearn.contenders import REGISTRY
from conceptlearn.experiments.compare import (
    DEFAULT_MODELS,
    PRESETS,
    BadArgument,
    make_plan,
    run_compare,
)
from conceptlearn.experiments.ray_cells import import_ray, start_ray
from conceptlearn.overrides import parse_key_values


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """argparse's errors as one line (no usage block), exit status 2."""

    def error(message: str):
        parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")

    parser.error = error  # type: ignore[method-assign]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _one_line_errors(parser)
    parser.add_argument(
        "--out",
        required=True,
        help="output folder (results.json, summary.md, "
        "plots, cells/, parse_cache/); rerun the same command to resume",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=sorted(REGISTRY),
        default=None,
        metavar="MODEL",
        help=f"contenders (default: {' '.join(DEFAULT_MODELS)})",
    )
    parser.add_argument(
        "--runs",
        default="dev",
        help="run set: dev, or a folder in the official one-shot layout (class folders for k > 1)",
    )
    parser.add_argument(
        "--preset",
        default="standard",
        choices=sorted(PRESETS),
        help="smoke (minutes, what tests use) | standard (default; <= 30 min on "
        "2 CPU cores) | full (40 runs, every shift at 3 severities)",
    )
    parser.add_argument(
        "--limit",
        type=_positive,
        default=None,
        metavar="N",
        help="only the first N runs (every experiment)",
    )
    parser.add_argument(
        "--ks",
        type=_positive,
        nargs="+",
        default=None,
        metavar="K",
        help="shots per class of the sample-efficiency sweep (default: preset's)",
    )
    parser.add_argument(
        "--shifts",
        nargs="*",
        default=None,
        metavar="SHIFT",
        help="shift families (each at its severities) or NAME=STRENGTH specs "
        "(default: preset's; none: no shift cells)",
    )
    parser.add_argument(
        "--shift-support",
        action="store_true",
        help="shift the support images as well as the queries",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=_positive,
        default=None,
        metavar="N",
        help="processes for the runs of each cell (default: 1 for smoke, else one per "
        "CPU core on CPU and 1 on an accelerator); same results as 1",
    )
    where.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run the cells as Ray tasks on the cluster at ADDRESS (e.g. ray://head:10001 or "
        "auto), else on a local Ray instance; same results as without (needs the [ray] extra)",
    )
    parser.add_argument(
        "--library",
        default=None,
        help="bpl's library .npz (default: the shipped "
        "small1 library; 'standin': the stand-in prior)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="DIR",
        help="pretrained ViT checkpoint (conceptlearn pretrain-vit) for vit, vit-proto "
        "(default: the shipped small1 checkpoint)",
    )
    parser.add_argument(
        "--bpl-set",
        dest="bpl_set",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="override a bpl config field in every cell "
        "(VALUE parsed as JSON when it can be); repeatable",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_data_argument(parser)
    parser.add_argument("--no-progress", action="store_true")


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces ``args`` (every flag that was set)."""
    parts = ["conceptlearn", "compare", "--out", args.out, "--preset", args.preset]
    for flag in ("models", "ks", "shifts"):
        value = getattr(args, flag)
        if value is not None:
            parts += [f"--{flag}", *map(str, value)]
    for flag in ("runs", "limit", "workers", "library", "checkpoint", "seed", "data"):
        value = getattr(args, flag)
        if (
            value is not None
            and not (flag == "runs" and value == "dev")
            and not (flag == "seed" and value == 0)
        ):
            parts += [f"--{flag}", str(value)]
    for item in args.bpl_set or []:
        parts += ["--bpl-set", item]
    if args.ray is not None:
        parts += ["--ray", args.ray] if args.ray else ["--ray"]
    if args.shift_support:
        parts.append("--shift-support")
    return shlex.join(parts)


def default_workers(preset: str) -> int:
    """The preset's worker count, else one process per core on CPU, one on an accelerator."""
    import jax

    if PRESETS[preset].workers is not None:
        return PRESETS[preset].workers
    return (os.cpu_count() or 1) if jax.default_backend() == "cpu" else 1


def run(args: argparse.Namespace) -> int:
    prog = "conceptlearn compare"
    on_ray = args.ray is not None
    try:
        if on_ray:
            import_ray()  # before any work: a missing extra is one line
        try:
            overrides = parse_key_values(args.bpl_set)
        except ValueError as err:
            raise BadArgument(f"argument --bpl-set: {err}".replace("--set ", "")) from None
        plan = make_plan(
            out=args.out,
            preset=args.preset,
            models=args.models,
            runs_spec=args.runs,
            data=args.data,
            seed=args.seed,
            limit=args.limit,
            ks=args.ks,
            shifts=args.shifts,
            shift_support=args.shift_support,
            library=args.library,
            checkpoint=args.checkpoint,
            bpl_overrides=overrides,
        )
        started_ray = start_ray(args.ray or None) if on_ray else False
    except BadArgument as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    workers = 1 if on_ray else args.workers or default_workers(plan.preset)
    where = f"Ray tasks ({args.ray or 'local'})" if on_ray else f"{workers} worker(s)"
    print(
        f"{prog}: {len(plan.jobs)} cells of the {plan.preset} preset over {len(plan.runs)} "
        f"runs of {plan.runs_spec}, {where} -> {args.out}",
        file=sys.stderr,
    )
    try:
        results = run_compare(
            plan,
            args.out,
            workers=workers,
            progress=not args.no_progress,
            command=command_line(args),
            on_ray=on_ray,
        )
    finally:
        if started_ray:
            import_ray().shutdown()
    summary = results["summary"]
    for model, row in summary["sample_efficiency"].items():
        errors = ", ".join(f"k={k}: {e:.1f}%" for k, e in row["error_pct"].items())
        print(f"{model}: {errors}")
    for model, match in summary["k_to_match_bpl_k1"].items():
        k = match["k"] if match["k"] is not None else f"> {match['max_k']}"
        print(f"{model} needs k = {k} to match bpl at k = 1")
    print(f"wrote {args.out}/results.json, summary.md, sample_efficiency/shifts/anytime .png/.svg")
    return 0
