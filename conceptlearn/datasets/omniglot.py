"""Read Omniglot images and pen strokes from the official zip files or their extracted folders.

Every image and stroke file is addressed by one key, ``"Alphabet/characterNN/XXXX_YY"``
(no split prefix, no extension), so an image and its strokes share a key. ``XXXX`` identifies
the character, ``YY`` the drawer (01..20).

Conventions (DESIGN.md section 4):
- images are ``bool (105, 105)`` arrays, True = ink;
- strokes are lists of ``float (n, 3)`` arrays ``(col, row, t_ms)`` in image coordinates,
  where ``(col, row) = (x, -y)`` of the raw stroke file.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SIZE = 105
N_DRAWERS = 20

IMAGE_ARCHIVES = {
    "background": "images_background",
    "small1": "images_background_small1",
    "small2": "images_background_small2",
    "evaluation": "images_evaluation",
}
STROKE_ARCHIVES = {
    "background": "strokes_background",
    "small1": "strokes_background_small1",
    "small2": "strokes_background_small2",
    "evaluation": "strokes_evaluation",
}

_KEY_RE = re.compile(
    r"^(?P<alphabet>[^/]+)/(?P<character>character\d+)/(?P<char_id>\d+)_(?P<drawer>\d+)$"
)


class OmniglotFormatError(ValueError):
    """A data file exists but its contents are not what Omniglot's layout promises."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where the Omniglot files live: ``root`` if given, else ``$CONCEPTLEARN_DATA``, else
    ``./data/omniglot``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("CONCEPTLEARN_DATA")
    return Path(env) if env else Path("data") / "omniglot"


def parse_key(key: str) -> dict[str, str | int]:
    """Split ``"Alphabet/characterNN/XXXX_YY"`` into alphabet, character, char_id and drawer."""
    match = _KEY_RE.match(key)
    if match is None:
        raise ValueError(f"not an Omniglot key (Alphabet/characterNN/XXXX_YY): {key!r}")
    parts: dict[str, str | int] = dict(match.groupdict())
    parts["drawer"] = int(parts["drawer"])
    return parts


def _is_metadata(name: str) -> bool:
    return name.startswith("__MACOSX/") or "/__MACOSX/" in name or name.endswith(".DS_Store")


class _Archive:
    """Byte access to the files of one Omniglot archive, zipped or extracted.

    ``source`` is a ``.zip`` file whose entries sit under ``top/``, or a folder that is either
    ``top`` itself or holds ``top/``.
    """

    def __init__(self, source: Path, top: str, suffix: str):
        self.source = source
        self.top = top
        self.suffix = suffix
        self._zip: zipfile.ZipFile | None = None
        if source.suffix == ".zip":
            try:
                self._zip = zipfile.ZipFile(source)
            except (zipfile.BadZipFile, OSError) as err:
                raise OmniglotFormatError(f"{source}: not a readable zip file ({err})") from err
            names = [n for n in self._zip.namelist() if not _is_metadata(n)]
            prefix = top + "/"
            members = {
                n[len(prefix) : -len(suffix)]: n
                for n in names
                if n.startswith(prefix) and n.endswith(suffix)
            }
        else:
            folder = source / top if (source / top).is_dir() else source
            members = {
                str(p.relative_to(folder).with_suffix("")).replace(os.sep, "/"): str(p)
                for p in folder.rglob("*" + suffix)
                if not _is_metadata(p.as_posix())
            }
        self.members = {k: v for k, v in members.items() if _KEY_RE.match(k)}
        if not self.members:
            raise OmniglotFormatError(
                f"{source}: no files matching '{top}/Alphabet/characterNN/XXXX_YY{suffix}' "
                "(is this the right archive?)"
            )

    def where(self, key: str) -> str:
        """A human-readable location of ``key`` for error messages."""
        if self._zip is not None:
            return f"{self.source}:{self.members[key]}"
        return self.members[key]

    def read(self, key: str) -> bytes:
        try:
            member = self.members[key]
        except KeyError:
            raise KeyError(f"{key!r} is not in {self.source}") from None
        if self._zip is not None:
            return self._zip.read(member)
        return Path(member).read_bytes()


def _locate(root: Path, top: str) -> Path:
    """Find ``top.zip`` or the folder ``top`` under ``root`` (or ``root`` itself)."""
    if not root.exists():
        raise FileNotFoundError(
            f"Omniglot data directory {root} does not exist; pass --data/root, set "
            "CONCEPTLEARN_DATA, or run `conceptlearn download`"
        )
    if root.is_file() or root.name == top:
        return root
    for candidate in (root / top, root / f"{top}.zip"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"neither {root / top}/ nor {root / top}.zip exists")


def decode_image(data: bytes, where: str) -> np.ndarray:
    """PNG bytes -> ``bool (105, 105)``, True = ink (dark pixel). ``where`` names the file."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            size = img.size
            gray = np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise OmniglotFormatError(f"{where}: corrupt or unreadable PNG ({err})") from err
    if size != (IMAGE_SIZE, IMAGE_SIZE):
        raise OmniglotFormatError(
            f"{where}: image is {size[0]}x{size[1]} pixels, expected {IMAGE_SIZE}x{IMAGE_SIZE}"
        )
    return gray < 128


def parse_strokes(text: str, where: str) -> list[np.ndarray]:
    """Parse a stroke file into ``[float64 (n_points, 3)]`` rows ``(col, row, t_ms)``.

    The file is ``START``, then ``x,y,t`` lines with ``BREAK`` after each stroke; image
    coordinates are ``(col, row) = (x, -y)``. ``where`` names the file in errors.
    """
    strokes: list[np.ndarray] = []
    current: list[tuple[float, float, float]] = []
    started = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line == "START":
            started = True
            continue
        if not started:
            raise OmniglotFormatError(f"{where}:{lineno}: expected START before {line!r}")
        if line == "BREAK":
            if current:
                strokes.append(np.asarray(current, dtype=np.float64))
            current = []
            continue
        fields = line.split(",")
        try:
            if len(fields) != 3:
                raise ValueError
            x, y, t = (float(f) for f in fields)
        except ValueError:
            raise OmniglotFormatError(
                f"{where}:{lineno}: malformed stroke line {line!r} (expected 'x,y,t')"
            ) from None
        if not all(np.isfinite((x, y, t))):
            raise OmniglotFormatError(f"{where}:{lineno}: non-finite value in {line!r}")
        current.append((x, -y, t))
    if current:
        strokes.append(np.asarray(current, dtype=np.float64))
    if not strokes:
        raise OmniglotFormatError(f"{where}: no stroke points")
    return strokes


@dataclass(frozen=True)
class _Index:
    """alphabet -> character -> keys sorted by drawer."""

    tree: dict[str, dict[str, list[str]]]


class _Collection:
    """Shared indexing over an archive of keys."""

    _archives: dict[str, str]
    _suffix: str

    def __init__(self, split: str = "background", root: str | os.PathLike | None = None):
        if split not in self._archives:
            raise ValueError(f"unknown split {split!r}; choose from {sorted(self._archives)}")
        self.split = split
        top = self._archives[split]
        self.archive = _Archive(_locate(data_root(root), top), top, self._suffix)

    @cached_property
    def _index(self) -> _Index:
        tree: dict[str, dict[str, list[str]]] = {}
        for key in sorted(self.archive.members):
            p = parse_key(key)
            tree.setdefault(str(p["alphabet"]), {}).setdefault(str(p["character"]), []).append(key)
        return _Index(tree)

    @property
    def alphabets(self) -> list[str]:
        return sorted(self._index.tree)

    def characters(self, alphabet: str) -> list[str]:
        """Character folder names (``characterNN``) of ``alphabet``, sorted."""
        return sorted(self._index.tree[alphabet])

    def keys(self, alphabet: str, character: str) -> list[str]:
        """Keys of one character's drawings, sorted by drawer."""
        return list(self._index.tree[alphabet][character])

    def key(self, alphabet: str, character: str, drawer: int) -> str:
        """The key of ``drawer``'s drawing (drawers are 1-based)."""
        for k in self._index.tree[alphabet][character]:
            if parse_key(k)["drawer"] == drawer:
                return k
        raise KeyError(f"{alphabet}/{character} has no drawer {drawer} in {self.archive.source}")

    def all_characters(self) -> list[tuple[str, str]]:
        """Every ``(alphabet, character)`` pair, sorted."""
        return [(a, c) for a in self.alphabets for c in self.characters(a)]

    def __len__(self) -> int:
        return len(self.archive.members)

    def __contains__(self, key: str) -> bool:
        return key in self.archive.members

    def raw(self, key: str) -> bytes:
        """The file's bytes exactly as stored."""
        return self.archive.read(key)


class OmniglotImages(_Collection):
    """The images of one split: ``image(key) -> bool (105, 105)``."""

    _archives = IMAGE_ARCHIVES
    _suffix = ".png"

    def image(self, key: str) -> np.ndarray:
        """One image, ``bool (105, 105)``, True = ink."""
        return decode_image(self.archive.read(key), self.archive.where(key))

    def images(self, keys: Iterable[str]) -> np.ndarray:
        """Several images stacked: ``bool (n, 105, 105)``."""
        arrays = [self.image(k) for k in keys]
        if not arrays:
            return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
        return np.stack(arrays)

    def character_array(
        self, characters: Sequence[tuple[str, str]] | None = None
    ) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """All drawings of the given (default: all) characters.

        Returns ``bool (n_characters, 20, 105, 105)`` and the ``(alphabet, character)`` list.
        """
        chars = list(characters) if characters is not None else self.all_characters()
        stacks = []
        for alphabet, character in chars:
            keys = self.keys(alphabet, character)
            if len(keys) != N_DRAWERS:
                raise OmniglotFormatError(
                    f"{self.archive.source}: {alphabet}/{character} has {len(keys)} drawings, "
                    f"expected {N_DRAWERS}"
                )
            stacks.append(self.images(keys))
        return np.stack(stacks), chars


class OmniglotStrokes(_Collection):
    """The pen strokes of one split: ``strokes(key) -> [float (n, 3)]`` as ``(col, row, t)``."""

    _archives = STROKE_ARCHIVES
    _suffix = ".txt"

    def strokes(self, key: str) -> list[np.ndarray]:
        data = self.archive.read(key)
        where = self.archive.where(key)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise OmniglotFormatError(f"{where}: not a text file ({err})") from err
        return parse_strokes(text, where)
