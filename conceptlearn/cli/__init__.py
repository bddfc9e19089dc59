"""``conceptlearn`` command line: one subcommand per job, each a thin wrapper over the library.

Each subcommand is a module of this package (``COMMANDS``) holding its argparse setup and all
its printing: ``add_arguments(parser)`` and ``run(args) -> int``. The library modules they call
print nothing. Modules are imported only when their subcommand runs, so ``conceptlearn --help``
stays fast and a missing optional piece breaks only its own command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module under conceptlearn.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "download": ("download", "fetch the official Omniglot files"),
    "make-runs": ("make_runs", "write a run set as official-layout folders"),
    "evaluate": ("evaluate", "run a contender on a run set -> results JSON"),
    "compare": (
        "compare",
        "the comparison: sample efficiency, shifts, anytime -> results, summary, plots",
    ),
    "pretrain-vit": ("pretrain_vit", "pretrain the ViT on background data"),
    "train-proposer": (
        "train_proposer",
        "train the learned proposer (image -> strokes) on background strokes and model samples",
    ),
    "learn": ("learn", "learn the generative model's library from strokes"),
    "sample": ("sample", "sample new characters and exemplars as a grid"),
    "parse": ("parse", "parse an image into strokes (overlay + JSON)"),
    "generate": (
        "generate",
        "new exemplars of characters in images, or new characters in an alphabet's style",
    ),
}


def _command_module(name: str):
    return importlib.import_module(f"conceptlearn.cli.{COMMANDS[name][0]}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conceptlearn",
        description="Few-shot concept learning: generative model vs. transformer on Omniglot.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _command_module(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    importlib.import_module("conceptlearn.cache").enable_compilation_cache()
    return int(_command_module(args.command).run(args) or 0)
