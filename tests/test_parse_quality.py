"""The parse-quality metric on hand-made trajectories, and scripts/parse_quality.py."""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conceptlearn.inference.parse_quality import parse_quality, resample_even

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "parse_quality.py"

# Three strokes (col, row) that no reversal or permutation maps onto each other.
STROKES = [
    np.array([[10.0, 10.0], [30.0, 12.0], [40.0, 30.0]]),
    np.array([[50.0, 60.0], [52.0, 80.0], [70.0, 85.0], [90.0, 84.0]]),
    np.array([[20.0, 70.0], [25.0, 72.0]]),
]


def as_parse(strokes, n_slots: int = 6, n_points: int = 20):
    """Pad strokes ``[float (m, 2)]`` into a parse: ``points f32 (S, P, 2)``, ``mask (S, P)``."""
    points = np.zeros((n_slots, n_points, 2), np.float32)
    mask = np.zeros((n_slots, n_points), bool)
    for s, stroke in enumerate(strokes):
        points[s, : len(stroke)] = stroke
        mask[s, : len(stroke)] = True
    return points, mask


def with_time(strokes):
    """Strokes as the stroke files give them: ``float (m, 3)`` ``(col, row, t_ms)``."""
    return [np.column_stack([s, 10.0 * np.arange(len(s))]) for s in strokes]


def test_identical_trajectories_are_good_at_distance_zero():
    quality = parse_quality(with_time(STROKES), *as_parse(STROKES))
    assert quality.true_strokes == quality.parse_strokes == 3
    assert quality.count_ok and quality.good
    assert quality.mean_distance == pytest.approx(0.0, abs=1e-5)


def test_a_reversed_stroke_costs_nothing():
    parsed = [STROKES[0], STROKES[1][::-1], STROKES[2]]
    quality = parse_quality(STROKES, *as_parse(parsed))
    assert quality.good and quality.mean_distance == pytest.approx(0.0, abs=1e-5)


def test_permuted_strokes_cost_nothing():
    parsed = [STROKES[2], STROKES[0], STROKES[1]]
    quality = parse_quality(STROKES, *as_parse(parsed))
    assert quality.good and quality.mean_distance == pytest.approx(0.0, abs=1e-5)


def test_a_shift_is_the_distance_and_past_three_pixels_is_not_good():
    near = parse_quality(STROKES, *as_parse([s + [2.0, 0.0] for s in STROKES]))
    assert near.mean_distance == pytest.approx(2.0, abs=1e-4) and near.good
    far = parse_quality(STROKES, *as_parse([s + [0.0, 4.0] for s in STROKES]))
    assert far.mean_distance == pytest.approx(4.0, abs=1e-4)
    assert far.count_ok and not far.good


def test_a_missing_stroke_is_a_wrong_count_but_the_rest_still_matches():
    quality = parse_quality(STROKES, *as_parse([STROKES[2], STROKES[0]]))
    assert (quality.true_strokes, quality.parse_strokes) == (3, 2)
    assert not quality.count_ok and not quality.good
    assert quality.mean_distance == pytest.approx(0.0, abs=1e-5)


def test_a_dot_matches_a_dot_at_the_same_place():
    dot = np.array([[40.0, 41.0]])
    points, mask = as_parse([np.repeat(dot, 5, axis=0)])  # a parse dot: one place, many points
    quality = parse_quality([dot], points, mask)
    assert quality.good and quality.mean_distance == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_array_equal(resample_even(dot), np.repeat(dot, 16, axis=0))


def test_masked_points_and_empty_parses():
    points, mask = as_parse(STROKES)
    points[~mask] = 1000.0  # masked points are never read
    assert parse_quality(STROKES, points, mask).mean_distance == pytest.approx(0.0, abs=1e-5)
    empty = parse_quality(STROKES, points, np.zeros_like(mask))
    assert empty.parse_strokes == 0 and empty.mean_distance is None and not empty.good
    with pytest.raises(ValueError, match="not \\(S, P, 2\\)"):
        parse_quality(STROKES, points[..., :1], mask)


def test_resample_even_spaces_points_by_arc_length():
    out = resample_even(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [15.0, 0.0]]), 16)
    np.testing.assert_allclose(out[:, 0], np.arange(16.0))


def run_script(*args, timeout=900):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_a_proposer_mode_without_a_checkpoint_is_a_clear_error(tmp_path):
    done = run_script("--mode", "proposer", "--out", str(tmp_path / "out.json"), timeout=300)
    assert done.returncode != 0 and "--mode proposer needs --proposer" in done.stderr


@pytest.fixture(scope="module")
def small2_root(omniglot_root):
    if not (omniglot_root / "strokes_background_small2.zip").exists():
        pytest.skip("the small2 archives are not in the Omniglot folder")
    return omniglot_root


def load_script():
    spec = importlib.util.spec_from_file_location("parse_quality_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_drawings_spread_evenly_over_the_held_out_characters(small2_root):
    from conceptlearn.datasets.omniglot import OmniglotImages, OmniglotStrokes

    script = load_script()
    alphabets = script.held_out_alphabets("small2", "small1", small2_root)
    assert alphabets == ["Japanese_(katakana)", "Sanskrit", "Tagalog"]
    images, strokes = OmniglotImages("small2", small2_root), OmniglotStrokes("small2", small2_root)
    keys = script.select_drawings(images, strokes, alphabets, 300, seed=0)
    assert len(set(keys)) == 300 and keys == sorted(keys) and all(k in strokes for k in keys)
    per_character = collections.Counter(k.rsplit("/", 1)[0] for k in keys)
    assert len(per_character) == 106 and set(per_character.values()) == {2, 3}
    assert keys == script.select_drawings(images, strokes, alphabets, 300, seed=0)
    assert keys != script.select_drawings(images, strokes, alphabets, 300, seed=1)


@pytest.mark.slow  # parses three images with the generative model
def test_the_script_scores_three_drawings_and_resumes(small2_root, tmp_path):
    out = tmp_path / "quality.json"
    args = ["--n-drawings", "3", "--chunk", "2", "--set", "max_candidates=3", "--data",
            str(small2_root), "--out", str(out)]
    done = run_script(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["complete"] and results["n_drawings"] == len(results["rows"]) == 3
    assert results["setup"]["config"]["max_candidates"] == 3
    assert results["command"].endswith(" ".join(args))
    lo, hi = results["good_ci95_pct"]
    assert 0.0 <= lo <= results["good_pct"] <= hi <= 100.0
    for row in results["rows"]:
        assert row["good"] == (row["count_ok"] and row["mean_distance"] <= 3.0)
    assert "parse quality (walks) on 3 drawings" in done.stdout.strip().splitlines()[-1]
    again = run_script(*args)  # complete already: nothing is parsed again
    assert again.returncode == 0 and json.loads(out.read_text())["rows"] == results["rows"]
    other = run_script(*args[:-2], "--seed", "1", "--out", str(out))
    assert other.returncode != 0 and "another setup" in other.stderr
