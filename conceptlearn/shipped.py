"""What ships inside the package, so that a fresh install needs only the Omniglot data.

- ``conceptlearn/data/small1.npz``: the generative model's library learned from the small1
  background strokes (``conceptlearn learn --background small1``; pickle-free, ~700 KB);
- ``conceptlearn/data/small1.json``: its record: the command and learn config that made it, the
  SHA-256 of the stroke archive it was learned from, and the SHA-256 of the ``.npz`` itself.

``default_library_path()`` is the library ``bpl`` uses when none is given; regenerate both files
with :func:`write_library_record` after ``conceptlearn learn`` (see its docstring).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED_BACKGROUND = "small1"
# ``library=STANDIN`` asks ``bpl`` for the stand-in prior instead of the shipped library.
STANDIN = "standin"


def default_library_path() -> Path:
    """The shipped small1 library (``.npz``); raises FileNotFoundError naming the path when the
    package was installed without its data."""
    path = DATA_DIR / f"{SHIPPED_BACKGROUND}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped library {path} is missing (reinstall conceptlearn, or pass a library "
            "made by `conceptlearn learn --background small1 --out LIB.npz`)"
        )
    return path


def library_record_path(library: str | os.PathLike | None = None) -> Path:
    """The JSON record beside a library ``.npz`` (default: the shipped one)."""
    return Path(library or default_library_path()).with_suffix(".json")


def library_record(library: str | os.PathLike | None = None) -> dict[str, Any]:
    """The record of how a library was made (default: the shipped library's)."""
    return json.loads(library_record_path(library).read_text())


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_library_record(
    library: str | os.PathLike, *, background: str, config, root=None, command: str = ""
) -> Path:
    """Write the record beside ``library`` (a ``.npz`` from ``conceptlearn learn``): the command,
    ``config`` (the ``LearnConfig`` it ran with), the stroke archive's name and SHA-256, and the
    library's own SHA-256. To refresh the shipped library::

        conceptlearn learn --background small1 --out conceptlearn/data/small1.npz
        python -c "from conceptlearn.model.learn import LearnConfig; \\
            from conceptlearn.shipped import write_library_record as w; \\
            w('conceptlearn/data/small1.npz', background='small1', config=LearnConfig())"
    """
    from conceptlearn.datasets.omniglot import STROKE_ARCHIVES, OmniglotStrokes

    archive = OmniglotStrokes(background, root).archive.source
    if archive.suffix != ".zip":
        raise ValueError(f"{archive}: the record needs the official zip to hash, not a folder")
    record = {
        "background": background,
        "command": command
        or f"conceptlearn learn --background {background} --out {Path(library).name}",
        "learn_config": json.loads(json.dumps(dataclasses.asdict(config))),
        "source": {"file": f"{STROKE_ARCHIVES[background]}.zip", "sha256": sha256_file(archive)},
        "library_sha256": sha256_file(library),
    }
    path = library_record_path(library)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path
