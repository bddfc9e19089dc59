"""The bpl contender's parse cache: shared by processes, keyed by image and config."""

from __future__ import annotations

import multiprocessing

import numpy as np
from scipy import ndimage

from conceptlearn.cache import ArrayStore
from conceptlearn.contenders import make_contender

TINY = {
    "max_candidates": 2,
    "max_strokes": 3,
    "n_points": 8,
    "parse_steps": 2,
    "parse_coarse_steps": 1,
    "refit_steps": 2,
    "refit_coarse_steps": 2,
    "n_samples": 16,
}


def _images() -> np.ndarray:
    images = np.zeros((6, 105, 105), bool)
    for i in range(6):
        images[i, 20 + 10 * i, 15:90] = True
        images[i, 15:90, 30 + 8 * i] = i % 2 == 0
    return np.stack([ndimage.binary_dilation(im, iterations=2) for im in images])


def _parse_in_process(cache: str, order: list[int]) -> list[np.ndarray]:
    bpl = make_contender("bpl", overrides=TINY, parse_cache=cache)
    parses = bpl.parse(_images()[order])
    back = np.argsort(order)
    return [np.asarray(x)[back] for x in parses]


def test_a_parse_cache_shared_by_two_processes_stays_consistent(tmp_path):
    cache = str(tmp_path / "parses")
    orders = [[0, 1, 2, 3, 4, 5], [5, 3, 1, 4, 2, 0]]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(_parse_in_process, [(cache, o) for o in orders])
    fresh = make_contender("bpl", overrides=TINY).parse(_images())  # no cache
    for got in results:
        for a, b in zip(got, fresh, strict=True):
            np.testing.assert_array_equal(a, np.asarray(b))
    assert len(ArrayStore(cache)) == 6
    assert not list((tmp_path / "parses").rglob("*.tmp"))
    # read back from the cache; another config is another key
    again = make_contender("bpl", overrides=TINY, parse_cache=cache).parse(_images())
    np.testing.assert_array_equal(np.asarray(again.points), np.asarray(fresh.points))
    make_contender("bpl", overrides={**TINY, "n_parses": 1}, parse_cache=cache).parse(_images()[:2])
    assert len(ArrayStore(cache)) == 8
