"""Fetch the official Omniglot zips, verify them, and extract them safely.

``conceptlearn download [--dest DIR] [--files NAME ...] [--base-url URL] [--no-extract]``

Every file goes through the same steps:

1. if ``DEST/<name>.zip`` already exists and passes step 3, it is kept (a rerun downloads nothing);
2. otherwise it is streamed into a ``.part`` file in ``DEST`` (same filesystem);
3. the ``.part`` is verified: byte count against ``Content-Length``, the known digests in
   ``FILES`` (a file without a known digest is reported as *unverified*, not failed), and
   always the archive itself (a readable zip, CRCs intact, entries under the expected top folder,
   no entry that could land outside the destination);
4. only then is it renamed to ``DEST/<name>.zip`` with ``os.replace``, so an interrupted or
   rejected download never leaves a complete-looking file;
5. unless ``--no-extract``, it is extracted into a temporary folder in ``DEST`` that is renamed to
   ``DEST/<top>/`` when complete (an existing ``DEST/<top>/`` is left alone). ``__MACOSX/`` and
   ``.DS_Store`` entries are skipped.

The readers in :mod:`conceptlearn.datasets.omniglot` accept ``DEST`` as their root afterwards.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from conceptlearn.datasets.omniglot import OmniglotFormatError, _is_metadata, data_root, parse_key

OFFICIAL_BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python"


class DownloadError(RuntimeError):
    """A file could not be fetched, or what arrived is not the file it should be."""


class UnsafeArchiveError(DownloadError):
    """An archive entry would be written outside the destination (absolute, ``..``, symlink)."""


@dataclass(frozen=True)
class RemoteFile:
    """One official Omniglot file.

    ``url_path`` is relative to the base URL; ``top`` is the folder its entries sit under;
    ``member`` matches the data entries the structure check requires at least one of (relative to
    ``top``); ``digests`` maps a ``hashlib`` algorithm to the official file's hex digest.
    ``rootless_ok`` accepts entries stored without the ``top/`` prefix (extracted under ``top/``).
    """

    name: str
    url_path: str
    top: str
    member: Callable[[str], bool]
    digests: dict[str, str]
    rootless_ok: bool = False

    @property
    def filename(self) -> str:
        return f"{self.name}.zip"


def _key_file(suffix: str) -> Callable[[str], bool]:
    def match(rel: str) -> bool:
        if not rel.endswith(suffix):
            return False
        try:
            parse_key(rel[: -len(suffix)])
        except ValueError:
            return False
        return True

    return match


_RUN_LABELS = re.compile(r"^run\d+/class_labels\.txt$")

# SHA-256 digests computed from the official files (byte-identical copies in ../shared/omniglot).
# MD5 digests of images_background / images_evaluation: those used by torchvision.datasets.Omniglot
# for the same URLs. Files without an entry are checked for structure only ("unverified").
_SHA256 = {
    "images_background_small1": "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    "images_background_small2": "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
    "strokes_background_small1": "8cb3960fb6cf4ccf5f064ad83169f828c36c36782a0f6e7faacb7ecfae4468a2",
    "strokes_background_small2": "345bf2141efbea062833dbb2828abbc23d9e07825e46f2afdd4daecddfed6e78",
}
_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}


def _digests(name: str) -> dict[str, str]:
    known = {"sha256": _SHA256.get(name), "md5": _MD5.get(name)}
    return {algo: hexdigest for algo, hexdigest in known.items() if hexdigest}


FILES: dict[str, RemoteFile] = {
    **{
        f"{kind}_{split}": RemoteFile(
            name=f"{kind}_{split}",
            url_path=f"{kind}_{split}.zip",
            top=f"{kind}_{split}",
            member=_key_file(".png" if kind == "images" else ".txt"),
            digests=_digests(f"{kind}_{split}"),
        )
        for kind in ("images", "strokes")
        for split in ("background", "evaluation", "background_small1", "background_small2")
    },
    "all_runs": RemoteFile(
        name="all_runs",
        url_path="one-shot-classification/all_runs.zip",
        top="all_runs",
        member=_RUN_LABELS.match,
        digests={},
        rootless_ok=True,
    ),
}

DEFAULT_FILES = (
    "images_background",
    "images_evaluation",
    "strokes_background",
    "strokes_evaluation",
    "all_runs",
)


@dataclass(frozen=True)
class Fetched:
    """What :func:`fetch` did for one file.

    ``action`` is ``"downloaded"`` or ``"present"``; ``verified`` lists the digest algorithms that
    matched (empty: no known digest, structure checked only); ``extracted`` is the extracted
    folder, or None when extraction was off.
    """

    name: str
    path: Path
    action: str
    verified: tuple[str, ...]
    extracted: Path | None
    note: str = ""


def file_digests(path: Path, algorithms: Sequence[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of the file at ``path`` for each ``hashlib`` algorithm, in one pass."""
    hashers = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            for h in hashers.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Why extracting ``info`` could write outside the destination, or None if it cannot."""
    name = info.filename
    if "\0" in name:
        return "contains a NUL byte"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "contains '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    return None


def plan_extraction(
    archive: zipfile.ZipFile, archive_name: str, spec: RemoteFile
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Check every entry and say where each will go, relative to the destination.

    Metadata entries (``__MACOSX/``, ``.DS_Store``) are dropped. Raises
    :class:`UnsafeArchiveError` naming ``archive_name`` and the entry for any entry that could land
    outside the destination, and :class:`OmniglotFormatError` when the entries are not under
    ``spec.top/`` (or, for ``rootless_ok`` archives, rootless) or hold no data file.
    """
    infos = archive.infolist()
    for info in infos:
        reason = _unsafe_reason(info)
        if reason is not None:
            raise UnsafeArchiveError(
                f"{archive_name}: refusing to extract entry {info.filename!r}: it {reason}"
            )
    infos = [i for i in infos if not _is_metadata(i.filename)]
    prefix = spec.top + "/"
    rooted = all(i.filename.startswith(prefix) or i.filename == prefix for i in infos)
    if rooted:
        rel = [i.filename[len(prefix) :] for i in infos]
        base = PurePosixPath()
    elif spec.rootless_ok:
        rel = [i.filename for i in infos]
        base = PurePosixPath(spec.top)
    else:
        stray = next(i.filename for i in infos if not i.filename.startswith(prefix))
        raise OmniglotFormatError(
            f"{archive_name}: entry {stray!r} is not under '{prefix}' (is this the right archive?)"
        )
    if not any(spec.member(r) for r in rel):
        raise OmniglotFormatError(
            f"{archive_name}: no data files under '{prefix}' (is this the right archive?)"
        )
    return [(i, base / i.filename) for i in infos]


def check_archive(path: Path, spec: RemoteFile, label: str | None = None) -> None:
    """Structure check of a downloaded zip: readable, CRCs intact, layout as ``spec`` expects,
    every entry safe to extract. ``label`` names the file in errors (default: ``path``)."""
    label = label or str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            plan_extraction(archive, label, spec)
            bad = archive.testzip()
    except zipfile.BadZipFile as err:
        raise OmniglotFormatError(f"{label}: not a valid zip file ({err})") from err
    except (OSError, EOFError, zipfile.LargeZipFile, NotImplementedError) as err:
        raise OmniglotFormatError(f"{label}: unreadable zip file ({err})") from err
    if bad is not None:
        raise OmniglotFormatError(f"{label}: entry {bad!r} is corrupt (CRC mismatch)")


def verify(path: Path, spec: RemoteFile, label: str | None = None) -> tuple[str, ...]:
    """Check ``path`` against ``spec``'s known digests, then its structure.

    Returns the algorithms that matched (empty when none is known). Raises
    :class:`DownloadError` on a digest mismatch, :class:`OmniglotFormatError` /
    :class:`UnsafeArchiveError` on a bad archive. ``label`` names the file in errors.
    """
    label = label or str(path)
    got = file_digests(path, tuple(spec.digests))
    for algo, expected in spec.digests.items():
        if got[algo] != expected:
            raise DownloadError(
                f"{label}: {algo} checksum mismatch: expected {expected}, got {got[algo]} "
                "(corrupt download, or not the official file)"
            )
    check_archive(path, spec, label)
    return tuple(spec.digests)


def safe_extract(zip_path: Path, dest: Path, spec: RemoteFile) -> Path:
    """Extract ``zip_path`` to ``dest/spec.top/`` and return that folder.

    Every entry is checked before anything is written (see :func:`plan_extraction`); files go
    into a temporary folder in ``dest`` that is renamed into place when complete, so an interrupted
    extraction never looks complete. An existing ``dest/spec.top`` is returned untouched.
    """
    dest = Path(dest)
    target = dest / spec.top
    if target.exists():
        return target
    with zipfile.ZipFile(zip_path) as archive:
        plan = plan_extraction(archive, str(zip_path), spec)
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.top}.", suffix=".extracting", dir=dest))
        try:
            for info, rel in plan:
                out = tmp.joinpath(*rel.parts)
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(out, "xb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp / spec.top, target)
        except FileExistsError as err:
            raise OmniglotFormatError(f"{zip_path}: duplicate entry {err.filename}") from err
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _stream(url: str, out_path: Path, timeout: float, progress: bool) -> None:
    """GET ``url`` into ``out_path``; raise :class:`DownloadError` naming ``url`` on failure."""
    request = urllib.request.Request(url, headers={"User-Agent": "conceptlearn-download"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            received = 0
            with (
                open(out_path, "wb") as out,
                tqdm(
                    total=expected,
                    unit="B",
                    unit_scale=True,
                    desc=url.rsplit("/", 1)[-1],
                    disable=None if progress else True,
                    leave=False,
                ) as bar,
            ):
                while block := response.read(1 << 16):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
                out.flush()
                os.fsync(out.fileno())
    except urllib.error.HTTPError as err:
        raise DownloadError(f"{url}: HTTP error {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise DownloadError(f"{url}: download failed ({err.reason})") from err
    except (OSError, http.client.HTTPException) as err:
        raise DownloadError(f"{url}: download interrupted ({err!r})") from err
    if expected is not None and received != expected:
        raise DownloadError(f"{url}: download incomplete: received {received} of {expected} bytes")


def url_for(spec: RemoteFile, base_url: str = OFFICIAL_BASE_URL) -> str:
    return f"{base_url.rstrip('/')}/{spec.url_path}"


def fetch(
    name: str,
    dest: str | os.PathLike | None = None,
    *,
    base_url: str = OFFICIAL_BASE_URL,
    extract: bool = True,
    timeout: float = 60.0,
    progress: bool = True,
) -> Fetched:
    """Make sure ``dest/<name>.zip`` is present and valid (downloading it if not), then extract.

    ``name`` is a key of ``FILES``; ``dest`` defaults to
    :func:`conceptlearn.datasets.omniglot.data_root`. Raises :class:`DownloadError` (HTTP error,
    incomplete body, checksum mismatch, unsafe entry) or :class:`OmniglotFormatError` (bad zip,
    unexpected layout); either way nothing complete-looking is left behind.
    """
    if name not in FILES:
        raise ValueError(f"unknown Omniglot file {name!r}; choose from {sorted(FILES)}")
    spec = FILES[name]
    dest = data_root(dest)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / spec.filename
    url = url_for(spec, base_url)
    note = ""
    action = "present"
    try:
        verified = verify(path, spec) if path.exists() else None
    except (DownloadError, OmniglotFormatError) as err:
        verified, note = None, f"replaced an invalid existing file ({err})"
    if verified is None:
        fd, part_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=dest)
        os.close(fd)
        part = Path(part_name)
        try:
            _stream(url, part, timeout, progress)
            verified = verify(part, spec, label=f"{url} (saved as {path})")
            os.chmod(part, 0o644)  # mkstemp makes it private
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
        action = "downloaded"
    extracted = safe_extract(path, dest, spec) if extract else None
    return Fetched(name, path, action, verified, extracted, note)


def download(
    names: Sequence[str] = DEFAULT_FILES,
    dest: str | os.PathLike | None = None,
    **options,
) -> list[Fetched]:
    """:func:`fetch` each of ``names`` in turn (same keyword options); stops at the first error."""
    return [fetch(name, dest, **options) for name in names]


def describe(result: Fetched) -> str:
    """One line for the user about one fetched file."""
    check = (
        "verified (" + ", ".join(result.verified) + ")"
        if result.verified
        else "unverified: no known checksum, structure checked"
    )
    parts = [f"{result.path}: {result.action}, {check}"]
    if result.extracted is not None:
        parts.append(f"extracted to {result.extracted}")
    if result.note:
        parts.append(result.note)
    return "; ".join(parts)
