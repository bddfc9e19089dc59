"""Out-of-distribution shifts: what each does to ink, determinism, errors, harness wiring."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from conceptlearn.datasets.shifts import SEVERITIES, SHIFTS, apply_shift, parse_shift


@pytest.fixture(scope="module")
def images(small1_images):
    keys = [
        small1_images.keys(a, small1_images.characters(a)[0])[0] for a in small1_images.alphabets
    ]
    return small1_images.images(keys)  # (5, 105, 105)


def _centroid(image):
    return np.argwhere(image).mean(axis=0)


def test_every_shift_keeps_shape_and_is_deterministic(images):
    specs = {
        "rotate": 30,
        "scale": 0.7,
        "shear": 0.4,
        "translate": 10,
        "thicken": 2,
        "thin": 1,
        "flip": 0.02,
        "occlude": 20,
        "clutter": 20,
    }
    assert set(specs) == set(SHIFTS) == set(SEVERITIES)
    for name, strength in specs.items():
        spec = f"{name}={strength}"
        a = apply_shift(spec, images, jax.random.key(0))
        b = apply_shift(spec, images, jax.random.key(0))
        assert a.shape == images.shape and a.dtype == bool
        np.testing.assert_array_equal(a, b)
        assert (a != images).any(), spec


def test_zero_strength_is_identity(images):
    for spec in (
        "rotate=0",
        "scale=1",
        "shear=0",
        "translate=0",
        "thicken=0",
        "thin=0",
        "flip=0",
        "clutter=0",
    ):
        np.testing.assert_array_equal(
            apply_shift(spec, images, jax.random.key(3)), images, err_msg=spec
        )


def test_ink_changes_the_expected_way(images):
    ink = images.sum(axis=(1, 2))
    assert (apply_shift("thicken=2", images, jax.random.key(0)).sum(axis=(1, 2)) > 1.5 * ink).all()
    assert (apply_shift("thin=1", images, jax.random.key(0)).sum(axis=(1, 2)) < ink).all()
    assert (apply_shift("scale=0.5", images, jax.random.key(0)).sum(axis=(1, 2)) < 0.75 * ink).all()
    assert (apply_shift("occlude=25", images, jax.random.key(0)).sum(axis=(1, 2)) < ink).all()
    flipped = apply_shift("flip=0.1", images, jax.random.key(0))
    assert abs((flipped != images).mean() - 0.1) < 0.01


def test_translate_moves_the_centroid_by_its_strength():
    image = np.zeros((1, 105, 105), dtype=bool)
    image[0, 45:60, 45:60] = True
    moved = apply_shift("translate=12", image, jax.random.key(1))
    assert np.linalg.norm(_centroid(moved[0]) - _centroid(image[0])) == pytest.approx(12, abs=1.0)


def test_rotation_by_180_degrees_is_a_point_reflection():
    image = np.zeros((1, 105, 105), dtype=bool)
    image[0, 20:30, 30:80] = True
    np.testing.assert_array_equal(
        apply_shift("rotate=180", image, jax.random.key(0))[0], image[0, ::-1, ::-1]
    )


def test_clutter_adds_ink_of_another_image_only():
    """Each image gains a fragment of another image's ink (its own ink stays); the fragment
    grows with the radius and comes from the donors when they are given."""
    a = np.zeros((2, 105, 105), dtype=bool)
    a[0, 50:55, 10:95] = True  # a horizontal bar
    a[1, 10:95, 50:55] = True  # a vertical bar
    key = jax.random.key(0)
    small, large = (apply_shift(f"clutter={r}", a, key) for r in (8, 30))
    for out in (small, large):
        assert (out >= a).all()  # ink is only added
        assert (out & ~a).any(axis=(1, 2)).all()
    assert ((large & ~a).sum(axis=(1, 2)) > (small & ~a).sum(axis=(1, 2))).all()
    # image 0's added ink is a piece of the vertical bar: taller than wide
    rows, cols = np.nonzero(large[0] & ~a[0])
    assert np.ptp(rows) > np.ptp(cols)
    donor = np.zeros((1, 105, 105), dtype=bool)
    donor[0, 30:75, 30:75] = True  # a solid square: its fragment is a disc
    blank = np.zeros((3, 105, 105), dtype=bool)
    added = apply_shift("clutter=6", blank, key, donors=donor)
    assert added.any(axis=(1, 2)).all()
    assert (added.sum(axis=(1, 2)) <= np.pi * 36 + 1).all()


def test_severities_are_valid_specs_mild_to_strong():
    for name, strengths in SEVERITIES.items():
        assert len(strengths) == (2 if name == "thin" else 3)
        for strength in strengths:
            parse_shift(f"{name}={strength}")
        assert len(set(strengths)) == len(strengths)


@pytest.mark.parametrize(
    "spec", ["spin=3", "rotate", "rotate=abc", "thicken=1.5", "scale=0", "flip=2", "clutter=-2"]
)
def test_bad_specs_are_named(spec):
    with pytest.raises(ValueError, match="--shift"):
        parse_shift(spec)


def test_harness_shifts_queries_only(small1_images, tmp_path):
    from conceptlearn.datasets.episodes import generate_run_set, run_set_runs
    from conceptlearn.evaluate import evaluate_contender

    seen = {}

    class Recorder:
        name, config = "recorder", {}

        def fit(self, support, *, key):
            seen["support"] = support
            return None

        def scores(self, state, queries, *, key):
            seen["queries"] = queries
            return np.zeros((len(queries), 3))

    runs = run_set_runs(
        generate_run_set(small1_images, ["Latin"], n_runs=1, n_way=3, max_k=1, seed=0), 1
    )
    results = evaluate_contender(
        Recorder(), runs, small1_images, tmp_path / "r.json", shift="thicken=2", progress=False
    )
    assert results["shift"] == "thicken=2"
    np.testing.assert_array_equal(
        seen["support"][:, 0], small1_images.images([s[0] for s in runs[0].support])
    )
    clean = small1_images.images(runs[0].queries)
    assert (seen["queries"].sum(axis=(1, 2)) > clean.sum(axis=(1, 2))).all()


def test_harness_shifts_the_support_alike_at_every_k(small1_images, tmp_path):
    """With shift_support the support is shifted too, each shot by its own class and shot, so a
    k-sweep sees the same shifted first shots as a separate evaluation at that k."""
    from conceptlearn.datasets.episodes import generate_run_set, run_set_runs
    from conceptlearn.evaluate import evaluate_contender

    seen = []

    class Recorder:
        name, config = "recorder", {}

        def fit(self, support, *, key):
            seen.append(np.asarray(support))
            return None

        def scores(self, state, queries, *, key):
            return np.zeros((len(queries), 3))

    run_set = generate_run_set(small1_images, ["Latin"], n_runs=1, n_way=3, max_k=2, seed=0)
    runs = run_set_runs(run_set, 2)
    results = evaluate_contender(
        Recorder(),
        runs,
        small1_images,
        tmp_path / "r.json",
        shift="rotate=30",
        ks=[1, 2],
        shift_support=True,
        progress=False,
    )
    assert results[1]["shift_support"] is True
    one, two = seen  # fitted at k = 1, then k = 2
    clean = small1_images.images([s[0] for s in runs[0].support])
    assert (one[:, 0] != clean).any(axis=(1, 2)).all()
    np.testing.assert_array_equal(one[:, 0], two[:, 0])
    evaluate_contender(
        Recorder(),
        run_set_runs(run_set, 1),
        small1_images,
        tmp_path / "k1.json",
        shift="rotate=30",
        shift_support=True,
        progress=False,
    )
    np.testing.assert_array_equal(seen[-1], one)
