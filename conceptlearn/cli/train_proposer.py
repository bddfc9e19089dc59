"""``conceptlearn train-proposer``: train the learned proposer
(:mod:`conceptlearn.inference.recognition`) on background strokes and generative-model samples."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from conceptlearn.cli.common import add_data_argument
from conceptlearn.overrides import parse_key_values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--library",
        default=None,
        help="library to sample training characters from (default: the shipped small1 library)",
    )
    parser.add_argument("--out", required=True, help="checkpoint folder (resumed if partial)")
    parser.add_argument(
        "--background",
        nargs="+",
        default=["small1"],
        help="stroke splits of real drawings (small1|small2) [small1]",
    )
    parser.add_argument(
        "--preset",
        choices=["cpu", "gpu", "tiny"],
        default="cpu",
        help="training preset [cpu: about 20 minutes on 2 cores]",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a ProposerTrainConfig field (repeatable)",
    )
    add_data_argument(parser)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from conceptlearn.inference import recognition
    from conceptlearn.model.library import load_library
    from conceptlearn.shipped import default_library_path

    try:
        tcfg = dataclasses.replace(recognition.PRESETS[args.preset], **parse_key_values(args.set))
    except (TypeError, ValueError) as err:
        raise SystemExit(f"train-proposer: --set: {err}") from None
    library_path = args.library or str(default_library_path())
    cfg = recognition.ProposerConfig()
    start = time.perf_counter()
    real = recognition.background_stroke_sets(args.background, cfg, args.data)
    samples = recognition.model_stroke_sets(
        load_library(library_path), tcfg.n_model_samples, cfg, seed=tcfg.seed
    )
    data_seconds = time.perf_counter() - start

    def progress(step: int, loss: float) -> None:
        if not args.no_progress and step % 100 == 0:
            print(f"step {step}/{tcfg.steps}  loss {loss:.3f}", file=sys.stderr, flush=True)

    meta = {
        "background": " ".join(args.background),
        "library": library_path,
        "n_real": int(len(real.points)),
        "n_model_samples": int(len(samples.points)),
        "data_seconds": round(data_seconds, 1),
    }
    config = recognition.train_proposer(args.out, (real, samples), tcfg, cfg, meta, progress)
    curve = config.get("loss_curve") or [[0, float("nan")]]
    print(
        json.dumps(
            {
                "out": args.out,
                "steps": config["step"],
                "final_loss": curve[-1][1],
                "train_seconds": round(config["train_seconds"], 1),
                "data_seconds": round(data_seconds, 1),
            }
        )
    )
    return 0
