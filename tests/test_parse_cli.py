"""``conceptlearn parse IMAGE [--library LIB.npz|standin] --out parse.png``: overlay + JSON (the
shipped library by default), clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from conceptlearn.cli import main
from conceptlearn.model.library import save_library, toy_library


def _l_shape_png(path) -> np.ndarray:
    ink = np.zeros((105, 105), bool)
    ink[20:85, 30] = True
    ink[84, 30:80] = True
    ink = ndimage.binary_dilation(ink, iterations=2)
    Image.fromarray(np.where(ink, 0, 255).astype(np.uint8)).save(path)
    return ink


@pytest.mark.parametrize("library", ["toy", "shipped", "standin"])
def test_parse_cli_writes_overlay_and_json_on_the_ink(tmp_path, library):
    ink = _l_shape_png(tmp_path / "l.png")
    argv = ["parse", str(tmp_path / "l.png"), "--out", str(tmp_path / "p.png"), "--quick"]
    if library == "toy":
        save_library(toy_library(n_primitives=6), tmp_path / "lib.npz")
        argv += ["--library", str(tmp_path / "lib.npz")]
    elif library == "standin":
        argv += ["--library", "standin"]
    assert main(argv) == 0
    assert Image.open(tmp_path / "p.png").size[0] > 0
    parses = json.loads((tmp_path / "p.json").read_text())["parses"]
    assert parses and abs(sum(p["weight"] for p in parses) - 1.0) < 1e-4
    best = max(parses, key=lambda p: p["weight"])
    assert 1 <= len(best["strokes"]) <= 2
    points = np.concatenate([np.asarray(s) for s in best["strokes"]])  # (n, 2) (col, row)
    distance = ndimage.distance_transform_edt(~ink)
    assert distance[points[:, 1].round().astype(int), points[:, 0].round().astype(int)].max() < 3


def test_parse_cli_names_an_unreadable_image(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(SystemExit, match="broken.png"):
        main(["parse", str(bad), "--out", str(tmp_path / "p.png"), "--quick"])
