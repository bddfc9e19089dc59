"""Pretrain the ViT comparator; the same function as `conceptlearn pretrain-vit`.

python scripts/pretrain_vit.py --background small1 --out checkpoints/vit_small1
"""

from __future__ import annotations

import argparse
import sys

from conceptlearn.baselines import vit_train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    vit_train.add_arguments(parser)
    return vit_train.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
