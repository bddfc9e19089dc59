"""Omniglot readers on the shared zips, the stroke coordinate convention, and bad input."""

from __future__ import annotations

import io
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from conceptlearn.datasets.omniglot import (
    N_DRAWERS,
    OmniglotFormatError,
    OmniglotImages,
    OmniglotStrokes,
    data_root,
    parse_key,
    parse_strokes,
)
from conceptlearn.model.splines import resample_stroke


@pytest.mark.parametrize(
    ("split", "n_characters", "n_alphabets"),
    [("small1", 136, 5), ("small2", 156, 5), ("background", 964, 30)],
)
def test_split_sizes(omniglot_root, split, n_characters, n_alphabets):
    images = OmniglotImages(split, omniglot_root)
    chars = images.all_characters()
    assert len(chars) == n_characters
    assert len(images.alphabets) == n_alphabets
    assert all(len(images.keys(a, c)) == N_DRAWERS for a, c in chars)
    drawers = [parse_key(k)["drawer"] for k in images.keys(*chars[0])]
    assert drawers == list(range(1, N_DRAWERS + 1))
    assert len(images) == N_DRAWERS * n_characters


def test_strokes_match_images(small1_images, small1_strokes):
    assert set(small1_strokes.archive.members) == set(small1_images.archive.members)


def test_image_is_bool_ink(small1_images):
    key = small1_images.keys("Latin", "character01")[0]
    image = small1_images.image(key)
    assert image.dtype == bool and image.shape == (105, 105)
    # Ink is the minority: black strokes on a white page.
    assert 0 < image.sum() < 0.3 * image.size


def test_zip_and_folder_read_the_same(omniglot_root, tmp_path):
    with zipfile.ZipFile(omniglot_root / "images_background_small1.zip") as z:
        members = [n for n in z.namelist() if "/Latin/character0" in n]
        z.extractall(tmp_path, members=members)
    from_folder = OmniglotImages("small1", tmp_path)
    from_zip = OmniglotImages("small1", omniglot_root)
    key = from_folder.keys("Latin", "character02")[5]
    np.testing.assert_array_equal(from_folder.image(key), from_zip.image(key))


def test_stroke_convention_lands_on_ink(small1_images, small1_strokes):
    """Resampled stroke points (col, row) = (x, -y) fall on or next to their image's ink.

    Measured on these 5 x 20 drawings: 100.0% of points lie within one pixel of ink and 99.8%
    on an ink pixel itself; the transposed convention (row, col) gives 39%.
    """
    near, on, flipped, total = 0, 0, 0, 0
    for alphabet in small1_images.alphabets:
        for key in small1_images.keys(alphabet, small1_images.characters(alphabet)[0]):
            image = small1_images.image(key)
            dilated = image.copy()
            for axis in (0, 1):
                for shift in (-1, 1):
                    dilated |= np.roll(image, shift, axis=axis)
            for stroke in small1_strokes.strokes(key):
                pts = np.rint(resample_stroke(stroke)).astype(int)
                col, row = np.clip(pts[:, 0], 0, 104), np.clip(pts[:, 1], 0, 104)
                near += dilated[row, col].sum()
                on += image[row, col].sum()
                flipped += dilated[col, row].sum()
                total += len(pts)
    assert near / total > 0.98
    assert on / total > 0.95
    assert flipped / total < 0.6


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("CONCEPTLEARN_DATA", str(tmp_path))
    assert data_root("explicit") == data_root("explicit")
    assert str(data_root("explicit")) == "explicit"
    assert data_root() == tmp_path
    monkeypatch.delenv("CONCEPTLEARN_DATA")
    assert data_root().as_posix() == "data/omniglot"


# --------------------------------------------------------------------------- bad input


def test_missing_directory_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        OmniglotImages("small1", missing)


def test_zip_without_expected_folders(tmp_path):
    bad = tmp_path / "images_background_small1.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("something_else/readme.txt", "hello")
    with pytest.raises(OmniglotFormatError, match="images_background_small1.zip"):
        OmniglotImages("small1", tmp_path)


def test_not_a_zip(tmp_path):
    (tmp_path / "images_background_small1.zip").write_bytes(b"not a zip at all")
    with pytest.raises(OmniglotFormatError, match="not a readable zip"):
        OmniglotImages("small1", tmp_path)


def _png_bytes(size=(105, 105)) -> bytes:
    buf = io.BytesIO()
    Image.new("1", size, color=1).save(buf, format="PNG")
    return buf.getvalue()


def _folder_with(tmp_path, name: str, data: bytes):
    char_dir = tmp_path / "images_background_small1" / "Latin" / "character01"
    char_dir.mkdir(parents=True)
    (char_dir / name).write_bytes(data)
    return OmniglotImages("small1", tmp_path)


def test_corrupt_png_is_named(tmp_path):
    images = _folder_with(tmp_path, "0001_01.png", _png_bytes()[:40])
    with pytest.raises(OmniglotFormatError, match=r"0001_01\.png.*corrupt"):
        images.image("Latin/character01/0001_01")


def test_odd_sized_image_is_named(tmp_path):
    images = _folder_with(tmp_path, "0001_01.png", _png_bytes((100, 105)))
    with pytest.raises(OmniglotFormatError, match=r"0001_01\.png.*100x105.*105x105"):
        images.image("Latin/character01/0001_01")


def test_blank_png_reads_as_no_ink(tmp_path):
    images = _folder_with(tmp_path, "0001_01.png", _png_bytes())
    assert not images.image("Latin/character01/0001_01").any()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("START\n1.0,2.0\nBREAK\n", r"f\.txt:2: malformed stroke line '1\.0,2\.0'"),
        ("START\n1.0,abc,3\nBREAK\n", r"f\.txt:2: malformed"),
        ("1.0,2.0,3\n", r"f\.txt:1: expected START"),
        ("START\nnan,1,2\n", r"f\.txt:2: non-finite"),
        ("START\nBREAK\n", r"f\.txt: no stroke points"),
    ],
)
def test_malformed_stroke_file(text, message):
    with pytest.raises(OmniglotFormatError, match=message):
        parse_strokes(text, "f.txt")


def test_stroke_parse_flips_y():
    strokes = parse_strokes("START\n1,-2,0\n3,-4,10\nBREAK\n5,-6,20\nBREAK\n", "s.txt")
    assert len(strokes) == 2
    np.testing.assert_array_equal(strokes[0], [[1, 2, 0], [3, 4, 10]])
    np.testing.assert_array_equal(strokes[1], [[5, 6, 20]])


def test_malformed_stroke_in_archive_is_named(omniglot_root, tmp_path):
    root = tmp_path / "strokes_background_small1" / "Latin" / "character01"
    root.mkdir(parents=True)
    (root / "0001_01.txt").write_text("START\n1,2,3\n4;5;6\nBREAK\n")
    strokes = OmniglotStrokes("small1", tmp_path)
    with pytest.raises(OmniglotFormatError, match=r"0001_01\.txt:3"):
        strokes.strokes("Latin/character01/0001_01")


def test_folder_layout_skips_macos_metadata(omniglot_root, tmp_path):
    with zipfile.ZipFile(omniglot_root / "strokes_background_small1.zip") as z:
        names = [n for n in z.namelist() if "Latin/character01/" in n or "__MACOSX" in n][:60]
        z.extractall(tmp_path, members=names)
    strokes = OmniglotStrokes("small1", tmp_path)
    assert all("__MACOSX" not in v for v in strokes.archive.members.values())
    shutil.rmtree(tmp_path)
