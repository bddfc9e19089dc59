"""Library: consistency checks, save/load round trip, corrupted files rejected."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlearn.model.library import (
    Library,
    LibraryFormatError,
    check_library,
    load_library,
    save_library,
    toy_library,
)


@pytest.fixture
def library():
    return toy_library(n_primitives=5, n_centers=3, seed=3)


def test_round_trip(tmp_path, library):
    path = tmp_path / "lib.npz"
    save_library(library, path)
    loaded = load_library(path)
    assert isinstance(loaded, Library) and loaded.n_primitives == 5
    for name in Library._fields:
        np.testing.assert_array_equal(
            np.asarray(getattr(loaded, name)), np.asarray(getattr(library, name))
        )


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_library(tmp_path / "nope.npz")


def test_truncated_and_garbage_files_are_rejected(tmp_path, library):
    path = tmp_path / "lib.npz"
    save_library(library, path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(LibraryFormatError, match="truncated.npz"):
        load_library(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all" * 10)
    with pytest.raises(LibraryFormatError, match="garbage.npz"):
        load_library(garbage)


def _write(path, library, **changes):
    arrays = {k: np.asarray(v) for k, v in library._asdict().items()}
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"trans_probs": None}, "missing fields"),
        ({"start_probs": np.full(5, 0.3)}, "start_probs is not a probability"),
        ({"n_sub_probs": np.full((10, 6), 0.5)}, "n_sub_probs is not a probability"),
        ({"shape_sd": -np.ones((5, 5, 2))}, "shape_sd must be positive"),
        ({"position_noise_sd": np.asarray(0.0)}, "position_noise_sd must be positive"),
        ({"trans_probs": np.full((4, 4), 0.25)}, "trans_probs has shape"),
        ({"log_scale_mean": np.full(5, np.nan)}, "non-finite"),
        ({"blur_range": np.array([2.0, 1.0])}, "blur_range"),
        ({"affine_mean": np.array(["a", "b", "c", "d"])}, "not numeric"),
    ],
)
def test_inconsistent_files_are_rejected(tmp_path, library, changes, message):
    path = tmp_path / "bad.npz"
    _write(path, library, **changes)
    with pytest.raises(LibraryFormatError, match=message) as info:
        load_library(path)
    assert "bad.npz" in str(info.value)


def test_pickled_objects_are_never_loaded(tmp_path, library):
    path = tmp_path / "pickled.npz"
    _write(path, library, affine_sd=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(LibraryFormatError, match="pickled.npz"):
        load_library(path)


def test_check_library_accepts_valid_and_names_source(library):
    assert check_library(library) is library
    bad = library._replace(relation_probs=library.relation_probs * 2)
    with pytest.raises(LibraryFormatError, match="mine: relation_probs"):
        check_library(bad, "mine")


def test_library_without_first_position_weights_loads_with_the_later_strokes(tmp_path):
    """Libraries written before ``first_position_weights`` existed still load."""
    library = toy_library()
    fields = {k: np.asarray(v) for k, v in library._asdict().items()}
    del fields["first_position_weights"]
    np.savez(tmp_path / "old.npz", **fields)
    loaded = load_library(tmp_path / "old.npz")
    np.testing.assert_array_equal(loaded.first_position_weights, library.position_weights)
