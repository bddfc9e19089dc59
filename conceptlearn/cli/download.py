"""``conceptlearn download``: fetch, verify and extract the official Omniglot files."""

from __future__ import annotations

import argparse
import sys

from conceptlearn.datasets.download import (
    DEFAULT_FILES,
    FILES,
    OFFICIAL_BASE_URL,
    DownloadError,
    describe,
    fetch,
)
from conceptlearn.datasets.omniglot import OmniglotFormatError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dest",
        default=None,
        help="where to put the files (default: $CONCEPTLEARN_DATA, else ./data/omniglot)",
    )
    parser.add_argument(
        "--files",
        nargs="+",
        default=list(DEFAULT_FILES),
        choices=sorted(FILES),
        metavar="NAME",
        help=f"which files (default: {' '.join(DEFAULT_FILES)}); any of {', '.join(sorted(FILES))}",
    )
    parser.add_argument(
        "--base-url",
        default=OFFICIAL_BASE_URL,
        help="where the files live (default: the official repository, %(default)s)",
    )
    parser.add_argument(
        "--no-extract",
        dest="extract",
        action="store_false",
        help="keep the zips only (the readers accept zips directly)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per network read")


def run(args: argparse.Namespace) -> int:
    for name in dict.fromkeys(args.files):
        try:
            result = fetch(
                name, args.dest, base_url=args.base_url, extract=args.extract, timeout=args.timeout
            )
        except (DownloadError, OmniglotFormatError, OSError) as err:
            print(f"conceptlearn download: error: {err}", file=sys.stderr)
            return 1
        print(describe(result))
    return 0
