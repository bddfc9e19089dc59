"""On-disk caches: JAX's persistent compilation cache, and a content-addressed array store.

    from conceptlearn.cache import ArrayStore, enable_compilation_cache, user_cache_dir
    enable_compilation_cache()                      # later processes skip recompiling
    store = ArrayStore(user_cache_dir() / "parses")
    key = ArrayStore.key("parse", config, image)    # sha256 hex of the parts
    arrays = store.get_or_compute(key, lambda: {"strokes": strokes})

Folders: ``$CONCEPTLEARN_CACHE``, else ``$XDG_CACHE_HOME/conceptlearn``, else
``~/.cache/conceptlearn``. The compilation cache goes to ``$CONCEPTLEARN_JAX_CACHE`` (``off``, ``0``
or empty turns it off), else to the folder JAX was already given, else ``<cache>/jax``.
Importing this module does not import JAX.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import struct
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

_DISABLED_VALUES = {"", "0", "off"}
_MIN_COMPILE_TIME_SECS = 0.0  # every compile: many small ones add up to seconds
_unwritable_warned: set[Path] = set()  # folders already warned about, so each warns once


def user_cache_dir() -> Path:
    """The per-user cache folder (not created here): ``$CONCEPTLEARN_CACHE``, else
    ``$XDG_CACHE_HOME/conceptlearn``, else ``~/.cache/conceptlearn``."""
    if explicit := os.environ.get("CONCEPTLEARN_CACHE"):
        return Path(explicit).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "conceptlearn"
    return Path.home() / ".cache" / "conceptlearn"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache in ``path`` (see the module docstring for the
    default folder) and return that folder, or None when it is turned off or not writable (then
    a warning is given once per folder). Safe to call repeatedly; call it before compiling."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if path is None:
        from_env = os.environ.get("CONCEPTLEARN_JAX_CACHE")
        if from_env is not None and from_env.strip().lower() in _DISABLED_VALUES:
            return None
        path = from_env or jax.config.jax_compilation_cache_dir or user_cache_dir() / "jax"
    directory = Path(path).expanduser().resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):  # catches read-only mounts, even for root
            pass
    except OSError as error:
        if directory not in _unwritable_warned:
            _unwritable_warned.add(directory)
            warnings.warn(
                f"JAX compilation cache left off: cannot write to {directory} ({error}); set "
                "CONCEPTLEARN_JAX_CACHE to a writable folder, or to 'off'",
                stacklevel=2,
            )
        return None
    if jax.config.jax_compilation_cache_dir != str(directory):
        compilation_cache.reset_cache()  # a cache opened on another folder would stay in use
        jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_TIME_SECS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


class ArrayStore:
    """Bundles of arrays (``dict[str, np.ndarray]``) on disk under ``root``, one ``.npz`` file per
    key at ``root/key[:2]/key.npz``. Several processes may read and write the same keys at once:
    a file appears whole (written aside, then renamed) or not at all, and a damaged file reads as
    a miss and is removed."""

    _KEY_PATTERN = re.compile(r"[0-9A-Za-z_-]{2,}")  # no separators or dots: stays inside root

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)  # created by the first put

    def __repr__(self) -> str:
        return f"ArrayStore({str(self.root)!r})"

    @staticmethod
    def key(*parts: Any) -> str:
        """sha256 hex of the parts: bytes, str, int, float, bool, None, numpy arrays (dtype,
        shape and C-order bytes), dataclass instances, and dicts, lists and tuples of these.
        Values of different types, dtypes or shapes never share an encoding."""
        digest = hashlib.sha256()
        _encode(parts, digest.update)
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        """The file that holds ``key``'s bundle (which may not exist)."""
        if not isinstance(key, str) or not self._KEY_PATTERN.fullmatch(key):
            raise ValueError(f"ArrayStore key must be 2+ characters of [0-9A-Za-z_-], got {key!r}")
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The bundle stored under ``key``, or None when there is none or its file is damaged
        (the damaged file is then removed)."""
        path = self.path(key)
        try:
            file = open(path, "rb")  # opened, not np.load(path): the removal below checks identity
        except FileNotFoundError:
            return None
        except OSError:  # unreadable: a miss, like a damaged file
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with file:
            try:
                with np.load(file, allow_pickle=False) as bundle:
                    return {name: bundle[name] for name in bundle.files}
            except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error):
                _remove_if_same(path, os.fstat(file.fileno()))
                return None

    def put(self, key: str, arrays: Mapping[str, Any]) -> None:
        """Store ``arrays`` under ``key``, replacing any bundle there. Object arrays are refused
        (they would need pickle to load)."""
        bundle = _as_bundle(arrays)
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                _write_npz(file, bundle)
            # No fsync: a file cut short by a crash fails its CRC check and reads as a miss.
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def get_or_compute(
        self, key: str, compute: Callable[[], Mapping[str, Any]]
    ) -> dict[str, np.ndarray]:
        """The bundle under ``key``; on a miss, ``compute()``'s bundle, stored and returned as
        numpy arrays."""
        found = self.get(key)
        if found is not None:
            return found
        bundle = _as_bundle(compute())
        self.put(key, bundle)
        return bundle

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def __len__(self) -> int:
        """Number of stored bundles (files still being written are not counted)."""
        if not self.root.is_dir():
            return 0
        return sum(1 for path in self.root.glob("*/*.npz") if path.parent.name == path.name[:2])


def _as_bundle(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``arrays`` as ``dict[str, np.ndarray]``; ValueError names an entry that is not storable."""
    if not isinstance(arrays, Mapping):
        raise TypeError(f"ArrayStore bundle must be a dict of arrays, got {type(arrays).__name__}")
    bundle = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"ArrayStore entry names must be non-empty str, got {name!r}")
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise ValueError(
                f"ArrayStore entry {name!r} has dtype {array.dtype}; object arrays need pickle "
                "and are not stored"
            )
        bundle[name] = array
    return bundle


def _write_npz(file, bundle: dict[str, np.ndarray]) -> None:
    """Write ``bundle`` as an uncompressed ``.npz`` (as ``np.savez`` does, but any entry name,
    ``file`` included, is allowed)."""
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in bundle.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _remove_if_same(path: Path, opened: os.stat_result) -> None:
    """Remove ``path`` unless another writer has since replaced the damaged file we opened."""
    with contextlib.suppress(OSError):
        current = os.stat(path)
        if (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            os.unlink(path)


def _encode(part: Any, write: Callable[[bytes], Any]) -> None:
    """Feed ``write`` an unambiguous encoding of ``part``: a one-byte type tag, then
    length-prefixed contents, so no two different values share an encoding."""

    def sized(tag: bytes, payload: bytes) -> None:
        write(tag + struct.pack(">Q", len(payload)) + payload)

    if part is None:
        write(b"N")
    elif isinstance(part, bool):  # before int: bool is an int subclass
        write(b"T" if part else b"F")
    elif isinstance(part, int):
        sized(b"I", str(part).encode())
    elif isinstance(part, float):
        write(b"D" + struct.pack(">d", part))
    elif isinstance(part, str):
        sized(b"S", part.encode("utf-8", "surrogatepass"))
    elif isinstance(part, bytes | bytearray):
        sized(b"B", bytes(part))
    elif isinstance(part, np.ndarray | np.generic):
        array = np.asarray(part)
        if array.dtype.hasobject:
            raise TypeError(f"ArrayStore.key cannot hash object arrays (dtype {array.dtype})")
        sized(b"A", repr(np.lib.format.dtype_to_descr(array.dtype)).encode())
        write(struct.pack(f">{array.ndim + 1}Q", array.ndim, *array.shape))
        sized(b"R", array.tobytes(order="C"))
    elif dataclasses.is_dataclass(part) and not isinstance(part, type):
        sized(b"C", type(part).__qualname__.encode())
        _encode(dataclasses.asdict(part), write)
    elif isinstance(part, Mapping):
        items = []
        for name, value in part.items():
            encoded = []
            _encode(name, encoded.append)
            items.append((b"".join(encoded), value))
        write(b"M" + struct.pack(">Q", len(items)))
        for encoded_name, value in sorted(items, key=lambda item: item[0]):
            write(encoded_name)
            _encode(value, write)
    elif isinstance(part, list | tuple):
        write((b"L" if isinstance(part, list) else b"U") + struct.pack(">Q", len(part)))
        for item in part:
            _encode(item, write)
    else:
        raise TypeError(
            f"ArrayStore.key cannot hash {type(part).__name__}; use bytes, str, int, float, bool, "
            "None, numpy arrays (np.asarray a JAX array), dataclasses, or dicts, lists and tuples "
            "of these"
        )
