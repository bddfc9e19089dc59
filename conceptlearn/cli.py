"""``conceptlearn`` command line: one subcommand per job, each a thin wrapper over the library.

Each subcommand lives in the module named in ``COMMANDS``; that module provides
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand runs, so ``conceptlearn --help`` stays fast and a missing optional piece breaks
only its own command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "download": ("conceptlearn.datasets.download", "fetch the official Omniglot files"),
    "make-runs": ("conceptlearn.datasets.episodes", "write a run set as official-layout folders"),
    "evaluate": ("conceptlearn.evaluate", "run a contender on a run set -> results JSON"),
    "compare": (
        "conceptlearn.experiments.compare_cli",
        "the comparison: sample efficiency, shifts, anytime -> results, summary, plots",
    ),
    "pretrain-vit": ("conceptlearn.baselines.vit_train", "pretrain the ViT on background data"),
    "learn": ("conceptlearn.model.learn", "learn the generative model's library from strokes"),
    "sample": ("conceptlearn.model.sample", "sample new characters and exemplars as a grid"),
    "parse": ("conceptlearn.inference.parse", "parse an image into strokes (overlay + JSON)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conceptlearn",
        description="Few-shot concept learning: generative model vs. transformer on Omniglot.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    importlib.import_module("conceptlearn.cache").enable_compilation_cache()
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
