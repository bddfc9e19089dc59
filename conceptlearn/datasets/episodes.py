"""Within-alphabet N-way k-shot runs: generate, store as image-name lists, read and write the
official one-shot folder layout.

A run names its images by reference: an Omniglot key (``"Alphabet/characterNN/XXXX_YY"``) when
it comes from a committed run set, or a PNG path when it was read from folders. The official
layout is ``runNN/training/classMM.png``, ``runNN/test/itemMM.png`` and
``runNN/class_labels.txt`` with lines ``runNN/test/itemAA.png runNN/training/classBB.png``.
For k > 1 a class is a folder ``training/classMM/`` of PNGs instead of one ``classMM.png``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from conceptlearn.datasets.omniglot import (
    N_DRAWERS,
    OmniglotFormatError,
    OmniglotImages,
    decode_image,
)

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
DEV_RUNS_FILE = "dev_runs.json"
SMALL_SPLITS = ("small1", "small2")


@dataclass(frozen=True)
class Run:
    """One episode by reference.

    ``support``: ``(n_way, k_shot)`` image references; ``queries``: ``(n_query,)`` references;
    ``labels``: ``(n_query,)`` index of each query's class in ``support``.
    """

    name: str
    support: tuple[tuple[str, ...], ...]
    queries: tuple[str, ...]
    labels: tuple[int, ...]

    @property
    def n_way(self) -> int:
        return len(self.support)

    @property
    def k_shot(self) -> int:
        return len(self.support[0])


class Episode(NamedTuple):
    """One episode as arrays: support ``bool (n_way, k, 105, 105)``, queries
    ``bool (n_query, 105, 105)``, labels ``int32 (n_query,)``."""

    support: np.ndarray
    queries: np.ndarray
    labels: np.ndarray


class FileImages:
    """An image source whose references are PNG paths."""

    def image(self, ref: str) -> np.ndarray:
        path = Path(ref)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise FileNotFoundError(f"cannot read image {path}: {err}") from err
        return decode_image(data, str(path))

    def images(self, refs: Sequence[str]) -> np.ndarray:
        return np.stack([self.image(r) for r in refs])

    def raw(self, ref: str) -> bytes:
        return Path(ref).read_bytes()


def load_episode(run: Run, source) -> Episode:
    """Decode a run's images from ``source`` (``OmniglotImages`` or ``FileImages``)."""
    flat = [ref for refs in run.support for ref in refs]
    support = source.images(flat).reshape(run.n_way, run.k_shot, *source.image(flat[0]).shape)
    return Episode(support, source.images(run.queries), np.asarray(run.labels, dtype=np.int32))


# --------------------------------------------------------------------------- generation


def dev_alphabets(
    background: OmniglotImages, small: Sequence[OmniglotImages], n_way: int
) -> list[str]:
    """Background alphabets in none of the ``small`` splits with at least ``n_way`` characters."""
    excluded = {a for s in small for a in s.alphabets}
    return [
        a
        for a in background.alphabets
        if a not in excluded and len(background.characters(a)) >= n_way
    ]


def generate_run_set(
    images: OmniglotImages,
    alphabets: Sequence[str],
    *,
    n_runs: int,
    n_way: int,
    max_k: int,
    seed: int,
) -> dict:
    """Draw ``n_runs`` within-alphabet runs, deterministically from ``seed``.

    Alphabets are used round-robin in a seeded order, so runs spread as evenly as possible.
    Each run picks ``n_way`` characters of its alphabet and, as in the official task, one query
    drawer and ``max_k`` support drawers shared by all its characters, all distinct. The
    support lists are ordered, so the k-shot variant of a run is its first k drawers: the same
    characters and queries at every k. Queries are shuffled so that item order says nothing
    about the class.

    Returns the JSON-ready run-set dict (see ``run_set_runs``).
    """
    if max_k + 1 > N_DRAWERS:
        raise ValueError(f"max_k={max_k} needs {max_k + 1} drawers; Omniglot has {N_DRAWERS}")
    rng = np.random.default_rng(seed)
    order = [alphabets[i] for i in rng.permutation(len(alphabets))]
    runs = []
    for r in range(n_runs):
        alphabet = order[r % len(order)]
        characters = sorted(rng.choice(images.characters(alphabet), size=n_way, replace=False))
        drawers = rng.choice(np.arange(1, N_DRAWERS + 1), size=max_k + 1, replace=False)
        query_drawer, support_drawers = int(drawers[0]), [int(d) for d in drawers[1:]]
        support = [[images.key(alphabet, c, d) for d in support_drawers] for c in characters]
        labels = [int(i) for i in rng.permutation(n_way)]
        queries = [images.key(alphabet, characters[i], query_drawer) for i in labels]
        runs.append(
            {
                "name": f"run{r + 1:02d}",
                "alphabet": alphabet,
                "query_drawer": query_drawer,
                "support_drawers": support_drawers,
                "support": support,
                "queries": queries,
                "labels": labels,
            }
        )
    return {"split": images.split, "n_way": n_way, "max_k": max_k, "seed": seed, "runs": runs}


def run_set_runs(run_set: dict, k: int) -> list[Run]:
    """The k-shot runs of a run-set dict (first ``k`` support drawers of each class)."""
    if not 1 <= k <= run_set["max_k"]:
        raise ValueError(f"k={k} is outside 1..{run_set['max_k']} for this run set")
    return [
        Run(
            name=r["name"],
            support=tuple(tuple(s[:k]) for s in r["support"]),
            queries=tuple(r["queries"]),
            labels=tuple(r["labels"]),
        )
        for r in run_set["runs"]
    ]


def make_dev_run_set(
    root=None, *, n_runs: int = 40, n_way: int = 20, max_k: int = 10, seed: int = 0
) -> dict:
    """The dev run set: 20-way runs from background alphabets in neither small1 nor small2."""
    background = OmniglotImages("background", root)
    small = [OmniglotImages(s, root) for s in SMALL_SPLITS]
    alphabets = dev_alphabets(background, small, n_way)
    run_set = generate_run_set(
        background, alphabets, n_runs=n_runs, n_way=n_way, max_k=max_k, seed=seed
    )
    run_set["description"] = (
        f"{n_runs} dev runs, {n_way}-way within-alphabet, from the {len(alphabets)} background "
        f"alphabets in neither small1 nor small2 with >= {n_way} characters; k-shot variant = "
        "first k support drawers"
    )
    return run_set


# --------------------------------------------------------------------------- run sets by name

_SETNAME_RE = re.compile(r"^(?P<base>[a-z0-9_]+?)(?:-k(?P<k>\d+))?$")


def run_set_digest(runs: Sequence[Run]) -> str:
    """A short hash of the runs' contents, so results know exactly what they were run on."""
    payload = json.dumps([[r.name, r.support, r.queries, r.labels] for r in runs])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_runs(spec: str | os.PathLike, root=None) -> tuple[list[Run], object]:
    """Resolve a run set and its image source.

    ``spec`` is a folder in the official layout (one run, or a folder of ``runNN`` folders),
    or a committed set name: ``dev`` (= ``dev-k1``), ``dev-k2``, ... read from ``data/``
    (a ``NAME_runs.json`` file).
    Returns ``(runs, source)`` where ``source`` decodes the runs' image references.
    """
    path = Path(spec)
    if path.is_dir():
        return read_run_folders(path), FileImages()
    match = _SETNAME_RE.match(str(spec))
    json_path = DATA_DIR / f"{match['base']}_runs.json" if match else None
    if json_path is None or not json_path.exists():
        raise FileNotFoundError(
            f"--runs {spec!r} is neither a run folder nor a known run set (data/NAME_runs.json)"
        )
    run_set = json.loads(json_path.read_text())
    k = int(match["k"]) if match["k"] else 1
    return run_set_runs(run_set, k), OmniglotImages(run_set["split"], root)


# --------------------------------------------------------------------------- official layout

_LABEL_LINE = re.compile(
    r"^(?P<run>[^/\s]+)/test/(?P<item>[^\s]+\.png)\s+(?P=run)/training/(?P<cls>[^\s]+)$"
)


def read_run_folder(run_dir: str | os.PathLike) -> Run:
    """Read one official-layout run (``class_labels.txt`` + ``training/`` + ``test/``)."""
    run_dir = Path(run_dir)
    labels_file = run_dir / "class_labels.txt"
    if not labels_file.exists():
        raise FileNotFoundError(f"{labels_file} does not exist (not an official-layout run folder)")
    classes: dict[str, int] = {}
    support: list[tuple[str, ...]] = []
    queries: list[str] = []
    labels: list[int] = []
    for lineno, line in enumerate(labels_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        m = _LABEL_LINE.match(line.strip())
        if m is None:
            raise OmniglotFormatError(
                f"{labels_file}:{lineno}: expected 'runNN/test/itemAA.png runNN/training/classBB.png', got {line!r}"
            )
        cls = m["cls"]
        if cls not in classes:
            cls_path = run_dir / "training" / cls
            class_dir = cls_path.with_suffix("") if cls.endswith(".png") else cls_path
            if cls_path.is_file():
                shots = (str(cls_path),)
            elif class_dir.is_dir():
                shots = tuple(str(p) for p in sorted(class_dir.glob("*.png")))
            else:
                raise FileNotFoundError(
                    f"{labels_file}:{lineno}: neither {cls_path} nor {class_dir}/ exists"
                )
            if not shots:
                raise OmniglotFormatError(f"{class_dir}: class folder holds no PNG")
            classes[cls] = len(support)
            support.append(shots)
        queries.append(str(run_dir / "test" / m["item"]))
        labels.append(classes[cls])
    if not queries:
        raise OmniglotFormatError(f"{labels_file}: no test items listed")
    if len({len(s) for s in support}) != 1:
        raise OmniglotFormatError(f"{run_dir}: classes have different numbers of training images")
    # Classes in a stable order (class01, class02, ...), labels remapped to it.
    order = sorted(classes, key=lambda c: _natural_key(c))
    remap = {classes[c]: i for i, c in enumerate(order)}
    return Run(
        name=run_dir.name,
        support=tuple(support[classes[c]] for c in order),
        queries=tuple(queries),
        labels=tuple(remap[lab] for lab in labels),
    )


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_run_folders(folder: str | os.PathLike) -> list[Run]:
    """Read a folder of ``runNN`` run folders, or a single run folder."""
    folder = Path(folder)
    if (folder / "class_labels.txt").exists():
        return [read_run_folder(folder)]
    run_dirs = sorted(
        (p for p in folder.iterdir() if (p / "class_labels.txt").exists()),
        key=lambda p: _natural_key(p.name),
    )
    if not run_dirs:
        raise FileNotFoundError(f"{folder} holds no run folders (runNN/class_labels.txt)")
    return [read_run_folder(p) for p in run_dirs]


def write_run_folders(runs: Sequence[Run], source, dest: str | os.PathLike) -> list[Path]:
    """Write runs in the official layout under ``dest``; images are copied byte for byte from
    ``source`` (anything with ``raw(ref) -> bytes``: ``OmniglotImages`` or ``FileImages``).

    k = 1 classes are ``training/classMM.png`` exactly as in the official runs; k > 1 classes
    are folders ``training/classMM/`` holding ``NN.png``.
    """
    dest = Path(dest)
    written = []
    for run in runs:
        run_dir = dest / run.name
        (run_dir / "training").mkdir(parents=True, exist_ok=True)
        (run_dir / "test").mkdir(parents=True, exist_ok=True)
        class_names = []
        for c, shots in enumerate(run.support, start=1):
            if run.k_shot == 1:
                name = f"class{c:02d}.png"
                (run_dir / "training" / name).write_bytes(source.raw(shots[0]))
            else:
                name = f"class{c:02d}"
                for s, ref in enumerate(shots, start=1):
                    (run_dir / "training" / name).mkdir(exist_ok=True)
                    (run_dir / "training" / name / f"{s:02d}.png").write_bytes(source.raw(ref))
            class_names.append(name)
        lines = []
        for i, (ref, label) in enumerate(zip(run.queries, run.labels, strict=True), start=1):
            item = f"item{i:02d}.png"
            (run_dir / "test" / item).write_bytes(source.raw(ref))
            lines.append(f"{run.name}/test/{item} {run.name}/training/{class_names[label]}")
        (run_dir / "class_labels.txt").write_text("\n".join(lines) + "\n")
        written.append(run_dir)
    return written
