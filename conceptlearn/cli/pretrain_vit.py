"""``conceptlearn pretrain-vit``: pretrain the ViT comparator on background characters
(:func:`conceptlearn.baselines.vit.pretraining.pretrain`); resumes from its last checkpoint."""

from __future__ import annotations

import argparse
import dataclasses

from conceptlearn.baselines.vit.model import PRESETS
from conceptlearn.baselines.vit.pretraining import (
    BACKGROUNDS,
    configs_from_overrides,
    load_background,
    pretrain,
    scaled_steps,
)
from conceptlearn.cli.common import add_data_argument
from conceptlearn.overrides import parse_key_values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--background",
        nargs="+",
        choices=sorted(BACKGROUNDS),
        default=["small1"],
        help="background set, or several trained on together (e.g. small1 small2) [small1]",
    )
    parser.add_argument(
        "--out", required=True, help="checkpoint folder (resumed if it holds a partial run)"
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="cpu", help="architecture preset [cpu]"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a ViTConfig/TrainConfig field (repeatable)",
    )
    add_data_argument(parser)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    overrides = parse_key_values(args.set)
    cfg, tcfg = configs_from_overrides(args.preset, overrides, seed=args.seed)
    background = args.background[0] if len(args.background) == 1 else args.background
    data = load_background(background, args.data)
    if "steps" not in overrides:  # the schedule scales with the number of characters
        tcfg = dataclasses.replace(tcfg, steps=scaled_steps(len(data)))
    print(f"pretrain-vit: {len(data)} characters, {tcfg.steps} steps -> {args.out}")
    config = pretrain(
        args.out,
        background=background,
        cfg=cfg,
        tcfg=tcfg,
        data=data,
        progress=not args.no_progress,
    )
    print(
        f"pretrain-vit: {config['step']} steps in {config['train_seconds']:.0f} s, "
        f"loss {config['train_loss']} -> {args.out}"
    )
    return 0
