"""The downloader against a local HTTP server that serves copies of the shared zips."""

from __future__ import annotations

import http.server
import shutil
import stat
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conceptlearn import cli
from conceptlearn.datasets import download as dl
from conceptlearn.datasets.omniglot import OmniglotFormatError, OmniglotImages


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves ``server.root``; ``server.truncate[path] = (n_bytes, send_length)`` cuts a body short
    and closes the connection, with or without the full ``Content-Length``."""

    def __init__(self, request, client_address, server):
        super().__init__(request, client_address, server, directory=str(server.root))

    def do_GET(self):
        self.server.requests.append(self.path)
        cut = self.server.truncate.get(self.path)
        if cut is None:
            return super().do_GET()
        body = (self.server.root / self.path.lstrip("/")).read_bytes()
        n_bytes, send_length = cut
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        if send_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:n_bytes])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    (root / "one-shot-classification").mkdir(parents=True)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.root, httpd.requests, httpd.truncate = root, [], {}
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _serve_copy(server, omniglot_root: Path, name: str) -> Path:
    return Path(shutil.copy(omniglot_root / f"{name}.zip", server.root / f"{name}.zip"))


def _write_zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)


def _runs_zip(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A tiny all_runs.zip: rootless ``run01/...`` entries as in the official file."""
    entries = {
        "run01/class_labels.txt": b"run01/test/item01.png run01/training/class01.png\n",
        "run01/training/class01.png": b"png",
        "run01/test/item01.png": b"png",
        "__MACOSX/run01/._class_labels.txt": b"meta",
    }
    _write_zip(path, {**entries, **(extra or {})})
    return path


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_known_sha256_match_the_shared_official_files(omniglot_root):
    for name in ("images_background_small1", "strokes_background_small2"):
        spec = dl.FILES[name]
        assert dl.file_digests(omniglot_root / spec.filename) == {"sha256": spec.digests["sha256"]}
    # The shared images_background.zip is a rebuilt copy, not the official bytes.
    with pytest.raises(dl.DownloadError, match="md5 checksum mismatch"):
        dl.verify(omniglot_root / "images_background.zip", dl.FILES["images_background"])


def test_download_verifies_and_extracts_readably(server, omniglot_root, tmp_path):
    _serve_copy(server, omniglot_root, "images_background_small1")
    dest = tmp_path / "dest"
    result = dl.fetch("images_background_small1", dest, base_url=server.url, progress=False)
    assert result.action == "downloaded" and result.verified == ("sha256",)
    assert result.path == dest / "images_background_small1.zip"
    assert result.extracted == dest / "images_background_small1"
    assert not list(dest.glob("*.part")) and not list(dest.glob(".*"))
    assert not (dest / "__MACOSX").exists()

    extracted = OmniglotImages("small1", root=dest)
    assert extracted.archive.source == dest / "images_background_small1"  # the folder, not the zip
    reference = OmniglotImages("small1", root=omniglot_root)
    assert len(extracted) == len(reference) == 2720
    key = reference.keys("Korean", "character03")[7]
    np.testing.assert_array_equal(extracted.image(key), reference.image(key))


def test_rerun_skips_valid_files_and_replaces_invalid_ones(server, omniglot_root, tmp_path):
    _serve_copy(server, omniglot_root, "strokes_background_small1")
    dest = tmp_path / "dest"
    first = dl.fetch("strokes_background_small1", dest, base_url=server.url, extract=False)
    assert first.action == "downloaded" and len(server.requests) == 1
    again = dl.fetch("strokes_background_small1", dest, base_url=server.url, extract=False)
    assert again.action == "present" and again.verified == ("sha256",)
    assert len(server.requests) == 1

    first.path.write_bytes(b"not a zip")
    fixed = dl.fetch("strokes_background_small1", dest, base_url=server.url, extract=False)
    assert fixed.action == "downloaded" and "invalid existing file" in fixed.note
    assert len(server.requests) == 2
    assert dl.file_digests(fixed.path)["sha256"] == dl.FILES[fixed.name].digests["sha256"]


@pytest.mark.parametrize("send_length", [True, False])
def test_interrupted_download_leaves_nothing_complete(server, omniglot_root, tmp_path, send_length):
    served = _serve_copy(server, omniglot_root, "strokes_background_small1")
    server.truncate["/" + served.name] = (served.stat().st_size // 2, send_length)
    dest = tmp_path / "dest"
    expected = "incomplete: received" if send_length else "checksum mismatch"
    with pytest.raises(dl.DownloadError, match=expected) as err:
        dl.fetch("strokes_background_small1", dest, base_url=server.url, progress=False)
    assert f"{server.url}/{served.name}" in str(err.value)
    assert _tree(dest) == set()  # no zip, no .part, no extracted folder

    server.truncate.clear()
    result = dl.fetch("strokes_background_small1", dest, base_url=server.url, progress=False)
    assert result.action == "downloaded" and result.verified == ("sha256",)
    assert (dest / "strokes_background_small1" / "Korean").is_dir()


def test_truncated_file_without_checksum_is_a_bad_zip(server, tmp_path):
    served = _runs_zip(server.root / "one-shot-classification" / "all_runs.zip")
    server.truncate["/one-shot-classification/all_runs.zip"] = (served.stat().st_size - 30, False)
    dest = tmp_path / "dest"
    with pytest.raises(OmniglotFormatError, match="all_runs.zip.*not a valid zip"):
        dl.fetch("all_runs", dest, base_url=server.url, progress=False)
    assert _tree(dest) == set()


def test_checksum_mismatch_is_rejected(server, omniglot_root, tmp_path):
    # Structurally valid, but not the official bytes.
    with zipfile.ZipFile(omniglot_root / "images_background_small2.zip") as official:
        first = next(n for n in official.namelist() if n.endswith(".png"))
        _write_zip(server.root / "images_background_small2.zip", {first: official.read(first)})
    dest = tmp_path / "dest"
    with pytest.raises(dl.DownloadError, match="sha256 checksum mismatch") as err:
        dl.fetch("images_background_small2", dest, base_url=server.url, progress=False)
    assert f"{server.url}/images_background_small2.zip" in str(err.value)
    assert _tree(dest) == set()


def test_unknown_checksum_is_unverified_and_rootless_runs_extract_under_all_runs(server, tmp_path):
    _runs_zip(server.root / "one-shot-classification" / "all_runs.zip")
    dest = tmp_path / "dest"
    result = dl.fetch("all_runs", dest, base_url=server.url, progress=False)
    assert result.verified == () and "unverified" in dl.describe(result)
    assert _tree(dest / "all_runs") == {
        "run01",
        "run01/class_labels.txt",
        "run01/training",
        "run01/training/class01.png",
        "run01/test",
        "run01/test/item01.png",
    }


def test_wrong_structure_is_rejected(server, tmp_path):
    _write_zip(
        server.root / "strokes_evaluation.zip", {"strokes_background/A/character01/1_01.txt": b""}
    )
    with pytest.raises(OmniglotFormatError, match="not under 'strokes_evaluation/'"):
        dl.fetch("strokes_evaluation", tmp_path / "dest", base_url=server.url, progress=False)
    _write_zip(server.root / "strokes_evaluation.zip", {"strokes_evaluation/README": b""})
    with pytest.raises(OmniglotFormatError, match="no data files"):
        dl.fetch("strokes_evaluation", tmp_path / "dest", base_url=server.url, progress=False)
    assert _tree(tmp_path / "dest") == set()


def test_http_error_names_the_url(server, tmp_path):
    with pytest.raises(dl.DownloadError, match=r"/images_evaluation\.zip: HTTP error 404"):
        dl.fetch("images_evaluation", tmp_path / "dest", base_url=server.url, progress=False)
    assert _tree(tmp_path / "dest") == set()


def test_path_traversal_entry_is_refused(server, tmp_path):
    _runs_zip(server.root / "one-shot-classification" / "all_runs.zip", {"../evil": b"x"})
    dest = tmp_path / "sandbox" / "dest"
    with pytest.raises(dl.UnsafeArchiveError, match=r"all_runs\.zip.*'\.\./evil'.*'\.\.'"):
        dl.fetch("all_runs", dest, base_url=server.url, progress=False)
    assert _tree(tmp_path / "sandbox") == {"dest"}  # nothing beside or inside dest


@pytest.mark.parametrize(
    ("entries", "symlinks", "reason"),
    [
        ({"/tmp/evil": b"x"}, {}, "absolute path"),
        ({"run01/../../evil": b"x"}, {}, r"contains '\.\.'"),
        ({"run01\\..\\..\\evil": b"x"}, {}, r"contains '\.\.'"),
        ({}, {"run01/link": "/etc"}, "symbolic link"),
    ],
)
def test_safe_extract_refuses_before_writing(tmp_path, entries, symlinks, reason):
    archive = tmp_path / "all_runs.zip"
    _runs_zip(archive)
    with zipfile.ZipFile(archive, "a") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in symlinks.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(dl.UnsafeArchiveError, match=reason) as err:
        dl.safe_extract(archive, dest, dl.FILES["all_runs"])
    assert str(archive) in str(err.value)
    assert _tree(dest) == set()
    assert _tree(tmp_path) == {"all_runs.zip", "dest"}


def test_cli_download(server, omniglot_root, tmp_path, capsys):
    _serve_copy(server, omniglot_root, "images_background_small2")
    dest = tmp_path / "dest"
    argv = ["download", "--dest", str(dest), "--base-url", server.url, "--no-extract"]
    assert cli.main([*argv, "--files", "images_background_small2"]) == 0
    out = capsys.readouterr().out
    assert "images_background_small2.zip: downloaded, verified (sha256)" in out
    assert _tree(dest) == {"images_background_small2.zip"}
    assert len(OmniglotImages("small2", root=dest).alphabets) == 5

    assert cli.main([*argv, "--files", "images_background_small2"]) == 0
    assert "present" in capsys.readouterr().out

    assert cli.main([*argv, "--files", "all_runs"]) == 1
    err = capsys.readouterr().err
    assert f"{server.url}/one-shot-classification/all_runs.zip: HTTP error 404" in err


def test_default_dest_is_the_data_root(server, tmp_path, monkeypatch):
    _runs_zip(server.root / "one-shot-classification" / "all_runs.zip")
    monkeypatch.setenv("CONCEPTLEARN_DATA", str(tmp_path / "env"))
    result = dl.fetch("all_runs", base_url=server.url, extract=False, progress=False)
    assert result.path == tmp_path / "env" / "all_runs.zip"


def test_cli_reports_a_bad_zip_and_an_unwritable_dest(server, tmp_path, capsys):
    (server.root / "one-shot-classification" / "all_runs.zip").write_bytes(b"<html>not a zip")
    argv = ["download", "--base-url", server.url, "--files", "all_runs"]
    assert cli.main([*argv, "--dest", str(tmp_path / "dest")]) == 1
    assert "all_runs.zip (saved as" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main([*argv, "--dest", str(blocker / "dest")]) == 1
    assert str(blocker) in capsys.readouterr().err
