"""Flags that several subcommands share."""

from __future__ import annotations

import argparse


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """``--data DIR``: where the Omniglot files are."""
    parser.add_argument(
        "--data",
        default=None,
        help="Omniglot folder (default: $CONCEPTLEARN_DATA or ./data/omniglot)",
    )
