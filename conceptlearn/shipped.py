"""What ships inside the package, so that a fresh install needs only the Omniglot data.

- ``conceptlearn/data/small1.npz``: the generative model's library learned from the small1
  background strokes (``conceptlearn learn --background small1``; pickle-free, ~700 KB);
- ``conceptlearn/data/small1.json``: its record: the command and learn config that made it, the
  SHA-256 of the stroke archive it was learned from, and the SHA-256 of the ``.npz`` itself;
- ``conceptlearn/data/vit_small1/``: the ViT comparator pretrained on the small1 background
  images (``conceptlearn pretrain-vit --background small1``; ``config.json`` + ``params.npz``,
  pickle-free, ~1.3 MB) and its ``record.json`` (command, the image archive's SHA-256, the
  parameters' SHA-256).

``default_library_path()`` is the library ``bpl`` uses when none is given, and
``default_checkpoint_path()`` the checkpoint of ``vit`` and ``vit-proto``; regenerate them with
:func:`write_library_record` after ``conceptlearn learn`` and :func:`ship_checkpoint` after
``conceptlearn pretrain-vit`` (see their docstrings).
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
SHIPPED_CHECKPOINT = "vit_small1"
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


def default_checkpoint_path() -> Path:
    """The shipped ViT checkpoint folder (pretrained on small1); raises FileNotFoundError naming
    the path when the package was installed without its data."""
    path = DATA_DIR / SHIPPED_CHECKPOINT
    if not (path / "params.npz").is_file():
        raise FileNotFoundError(
            f"the shipped ViT checkpoint {path} is missing (reinstall conceptlearn, or pass a "
            "checkpoint made by `conceptlearn pretrain-vit --background small1 --out DIR`)"
        )
    return path


def resolve_library(library=None):
    """A loaded library from ``library``: None -> the shipped small1 library; ``"standin"`` ->
    None (the stand-in prior); a path -> that ``.npz``, loaded and checked; a loaded
    :class:`~conceptlearn.model.library.Library` as it is."""
    from conceptlearn.model.library import load_library

    if library is None:
        return load_library(default_library_path())
    if isinstance(library, str | os.PathLike):
        if str(library) == STANDIN:
            return None
        if not Path(library).is_file():
            raise FileNotFoundError(f"library {library} does not exist")
        return load_library(library)
    return library


def checkpoint_record(checkpoint: str | os.PathLike | None = None) -> dict[str, Any]:
    """The record of how a checkpoint folder was made (default: the shipped checkpoint's)."""
    return json.loads((Path(checkpoint or default_checkpoint_path()) / "record.json").read_text())


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


def ship_checkpoint(
    checkpoint: str | os.PathLike, dest: str | os.PathLike, *, background: str, root=None
) -> Path:
    """Copy a finished ``conceptlearn pretrain-vit`` folder's ``config.json`` and ``params.npz``
    (not the optimiser state) into ``dest`` with a ``record.json``: the command, the image
    archive's name and SHA-256, and the parameters' SHA-256. To refresh the shipped one::

        conceptlearn pretrain-vit --background small1 --out checkpoints/vit_small1
        python -c "from conceptlearn.shipped import ship_checkpoint as s; \
            s('checkpoints/vit_small1', 'conceptlearn/data/vit_small1', background='small1')"
    """
    import shutil

    from conceptlearn.baselines.vit.pretraining import BACKGROUNDS
    from conceptlearn.datasets.omniglot import OmniglotImages

    source, dest = Path(checkpoint), Path(dest)
    config = json.loads((source / "config.json").read_text())
    if config.get("step") != config.get("train", {}).get("steps"):
        raise ValueError(f"{source}: pretraining is not finished (step {config.get('step')})")
    archive = OmniglotImages(BACKGROUNDS[background], root).archive.source
    if archive.suffix != ".zip":
        raise ValueError(f"{archive}: the record needs the official zip to hash, not a folder")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "params.npz"):
        shutil.copyfile(source / name, dest / name)
    record = {
        "background": background,
        "command": f"conceptlearn pretrain-vit --background {background} --out {source}",
        "source": {"file": archive.name, "sha256": sha256_file(archive)},
        "params_sha256": sha256_file(dest / "params.npz"),
    }
    (dest / "record.json").write_text(json.dumps(record, indent=1) + "\n")
    return dest
