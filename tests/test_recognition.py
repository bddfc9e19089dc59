"""The learned proposer: output shapes and masks, the set loss, training, checkpoints, and its
proposals in the parse pipeline."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conceptlearn.baselines.vit.checkpoint import CheckpointError
from conceptlearn.inference import recognition as rec
from conceptlearn.inference.config import preset
from conceptlearn.inference.fit import parse_images, propose_batch
from conceptlearn.inference.parse_quality import parse_quality
from conceptlearn.model.render import render

SMALL = rec.ProposerConfig(max_strokes=3, n_points=8, channels=(8, 16), hidden=32)
TINY_TRAIN = dataclasses.replace(
    rec.PRESETS["tiny"],
    steps=60,
    batch=8,
    lr=3e-3,
    model_share=0.0,
    ckpt_every=1000,
    scale_sd=0.0,
    rotate_sd=0.0,
    shear_sd=0.0,
    shift_sd=0.0,
    width_sd=0.0,
)


def line(start, end, n: int = 8) -> np.ndarray:
    return np.linspace(np.asarray(start, float), np.asarray(end, float), n)


def drawn(points, exists) -> np.ndarray:
    """A stroke set ``f32 (S, P, 2)``, ``bool (S,)`` inked and thresholded: ``bool (105, 105)``."""
    mask = jnp.broadcast_to(jnp.asarray(exists)[:, None], points.shape[:2])
    return np.asarray(render(jnp.asarray(points), mask)) > 0.5


def easy_sets(cfg: rec.ProposerConfig = SMALL) -> rec.StrokeSets:
    """Four drawings of one or two straight strokes."""
    drawings = [
        [line((20, 50), (85, 50))],
        [line((50, 20), (50, 85))],
        [line((20, 20), (85, 85)), line((20, 85), (85, 20))],
        [line((30, 30), (80, 30)), line((30, 70), (80, 70))],
    ]
    points, exists = zip(
        *(rec.stroke_set(d, cfg.max_strokes, cfg.n_points) for d in drawings), strict=True
    )
    return rec.StrokeSets(np.stack(points), np.stack(exists))


def test_stroke_set_keeps_the_longest_strokes_in_drawing_order():
    strokes = [line((0, 0), (0, 10 * (i + 1))) for i in range(5)]
    points, exists = rec.stroke_set(strokes, max_strokes=3, n_points=8)
    assert points.shape == (3, 8, 2) and exists.tolist() == [True, True, True]
    np.testing.assert_allclose(points[:, -1, 1], [30, 40, 50])  # strokes 3, 4, 5, in order
    np.testing.assert_allclose(np.diff(points[0, :, 1]), 30 / 7, rtol=1e-5)  # even in arc length


def test_network_output_shapes():
    model = rec.Proposer(SMALL, nnx.Rngs(0))
    slots = model(jnp.zeros((5, 53, 53)))
    assert slots.points.shape == (5, 3, 8, 2)
    assert slots.exist.shape == slots.flip.shape == slots.order.shape == (5, 3)
    assert bool(jnp.all(jnp.isfinite(slots.points)))


def test_set_loss_ignores_stroke_order_and_direction():
    sets = easy_sets()
    points, exists = jnp.asarray(sets.points[2]), jnp.asarray(sets.exists[2])
    confident = jnp.where(exists, 20.0, -20.0)
    pred = rec.Slots(points, confident, jnp.full(3, -20.0), jnp.array([0.0, 1 / 3, 0.0]))
    assert float(rec.set_loss(pred, points, exists, TINY_TRAIN)) < 1e-3
    swapped = rec.Slots(
        points[jnp.array([1, 0, 2])], confident, jnp.full(3, -20.0), jnp.array([1 / 3, 0.0, 0.0])
    )
    assert float(rec.set_loss(swapped, points, exists, TINY_TRAIN)) < 1e-3
    # a reversed stroke costs no distance, only its flip loss
    reversed_points = points.at[0].set(points[0, ::-1])
    flipped = rec.Slots(
        reversed_points, confident, jnp.array([20.0, -20.0, -20.0]), jnp.array([0.0, 1 / 3, 0.0])
    )
    assert float(rec.set_loss(flipped, points, exists, TINY_TRAIN)) < 1e-3
    # a slot 2 px off along every point pays 2 px
    off = rec.Slots(
        points.at[1].add(jnp.array([2.0, 0.0])),
        confident,
        jnp.full(3, -20.0),
        jnp.array([0.0, 1 / 3, 0.0]),
    )
    assert float(rec.set_loss(off, points, exists, TINY_TRAIN)) == pytest.approx(2.0, abs=1e-3)


def test_set_loss_gradient_matches_finite_differences():
    sets = easy_sets()
    points, exists = jnp.asarray(sets.points[3]), jnp.asarray(sets.exists[3])
    pred = rec.Slots(
        points + 1.5,
        jnp.array([0.3, -0.2, 0.1]),
        jnp.array([0.2, 0.1, -0.4]),
        jnp.array([0.1, 0.5, 0.9]),
    )

    def loss(exist):
        return rec.set_loss(pred._replace(exist=exist), points, exists, TINY_TRAIN)

    grad = jax.grad(loss)(pred.exist)
    eps = 1e-3
    for i in range(3):
        bump = jnp.zeros(3).at[i].set(eps)
        numeric = (loss(pred.exist + bump) - loss(pred.exist - bump)) / (2 * eps)
        assert float(grad[i]) == pytest.approx(float(numeric), rel=1e-2, abs=1e-3)


def test_render_example_draws_the_moved_strokes():
    sets = easy_sets()
    image, moved = rec.render_example(
        jnp.asarray(sets.points[0]), jnp.asarray(sets.exists[0]), jax.random.key(0), TINY_TRAIN
    )
    assert image.shape == (53, 53)
    ink = (
        np.asarray(
            render(moved, jnp.broadcast_to(jnp.asarray(sets.exists[0])[:, None], moved.shape[:2]))
        )
        > 0.5
    )
    assert 0 < float(image.sum()) * 4 == pytest.approx(ink.sum(), rel=0.1)


def test_training_on_a_tiny_set_reduces_the_loss(tmp_path):
    sets = easy_sets()
    empty = rec.StrokeSets(sets.points[:0], sets.exists[:0])
    config = rec.train_proposer(tmp_path / "p", (sets, empty), TINY_TRAIN, SMALL)
    curve = np.asarray(config["loss_curve"])
    assert config["step"] == TINY_TRAIN.steps
    assert curve[-1, 1] < 0.85 * curve[0, 1]
    # the checkpoint holds the trained network
    _, graphdef, params = rec.load_proposer(tmp_path / "p")
    slots = nnx.merge(graphdef, params)(jnp.zeros((1, 53, 53)))
    assert slots.points.shape == (1, 3, 8, 2)


@pytest.mark.slow
def test_checkpoint_round_trip_and_resume(tmp_path):
    sets = easy_sets()
    empty = rec.StrokeSets(sets.points[:0], sets.exists[:0])
    half = dataclasses.replace(TINY_TRAIN, steps=20, ckpt_every=5)
    folder = tmp_path / "p"

    class Interrupted(Exception):
        pass

    def interrupt(step, loss):
        if step == 10:  # after the checkpoint at step 5, before the one at step 10
            raise Interrupted

    with pytest.raises(Interrupted):
        rec.train_proposer(folder, (sets, empty), half, SMALL, progress=interrupt)
    resumed = rec.train_proposer(folder, (sets, empty), half, SMALL)
    straight = rec.train_proposer(tmp_path / "q", (sets, empty), half, SMALL)
    assert resumed["step"] == 20
    cfg, graphdef, params = rec.load_proposer(folder)
    assert cfg == SMALL
    _, _, params_q = rec.load_proposer(tmp_path / "q")
    images = jnp.zeros((2, 53, 53))
    a, b = nnx.merge(graphdef, params)(images), nnx.merge(graphdef, params_q)(images)
    np.testing.assert_allclose(a.points, b.points, rtol=1e-4, atol=1e-3)  # resume = one run
    assert resumed["loss_curve"][-1][0] == straight["loss_curve"][-1][0]
    (folder / "params.npz").write_bytes(b"not a zip")
    rec.load_proposer.cache_clear()
    with pytest.raises(CheckpointError, match="params.npz"):
        rec.load_proposer(folder)
    with pytest.raises(CheckpointError, match="config.json"):
        rec.load_proposer(tmp_path / "missing")


def test_candidates_from_slots():
    points = np.stack(
        [np.tile(line((10, 10), (60, 10), 8)[None], (1, 1, 1))[0] + 20 * i for i in range(3)]
    ).astype(np.float32)
    points[2] = 40.0  # slot 2 is a dot
    slots = rec.Slots(
        points, np.array([3.0, 0.0, -1.0]), np.array([1.0, -1.0, -1.0]), np.array([0.9, 0.1, 0.5])
    )
    cand_points, mask, valid = rec.slots_to_candidates(slots, 5, 3, 8)
    assert cand_points.shape == (5, 3, 8, 2) and mask.shape == (5, 3, 8)
    # thresholds 0.5, 0.3, 0.7, 0.15, 0.85 -> slots {0}, {0, 1}, {0}, {0, 1, 2}, {0}
    assert valid.tolist() == [True, True, False, True, False]
    assert mask[0].any(-1).tolist() == [True, False, False]
    np.testing.assert_allclose(cand_points[0, 0], points[0, ::-1])  # flipped
    np.testing.assert_allclose(cand_points[1, 0], points[1])  # slot 1 comes first by order
    assert mask[3, 1].sum() == 1  # the dot keeps one point
    with pytest.raises(ValueError, match="max_strokes"):
        rec.slots_to_candidates(slots, 5, 4, 8)


def test_no_proposals_is_an_error():
    cfg = dataclasses.replace(preset(), max_candidates=0)
    with pytest.raises(ValueError, match="no proposals"):
        propose_batch(np.zeros((1, 105, 105), bool), cfg)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="issue 13, open: the two lines are parsed with the right count but 8 px off "
    "(mean), not within 3 px; the candidates' join is checked before the parse",
)
def test_learned_proposals_join_the_walks_and_easy_strokes_are_recovered(tmp_path):
    """A model of the parse's shapes, trained a little, adds candidates; proposals plus
    refinement recover a two-stroke drawing within 3 px."""
    cfg = rec.ProposerConfig(max_strokes=6, n_points=16, channels=(8, 16), hidden=32)
    sets = easy_sets(cfg)
    empty = rec.StrokeSets(sets.points[:0], sets.exists[:0])
    rec.train_proposer(
        tmp_path / "p", (sets, empty), dataclasses.replace(TINY_TRAIN, steps=10), cfg
    )
    truth = [line((30, 30), (80, 30), 16), line((30, 70), (80, 75), 16)]
    points, exists = rec.stroke_set(truth, 6, 16)
    image = drawn(points, exists)
    both = dataclasses.replace(
        preset(quick=True), proposer=str(tmp_path / "p"), proposer_candidates=2
    )
    walks, _, valid = propose_batch(image[None], both)
    assert walks.shape[1] == both.max_candidates + 2 and valid[0, -2]
    parse = parse_images(image[None], both)
    quality = parse_quality(truth, np.asarray(parse.points[0, 0]), np.asarray(parse.mask[0, 0]))
    assert quality.good, quality


def test_candidates_snap_to_the_skeleton():
    """A slot 3 px beside a drawn line is moved onto the line, evenly spaced."""
    truth = line((20, 50), (85, 50), 8)
    points, exists = rec.stroke_set([truth], 3, 8)
    image = drawn(points, exists)
    slot_points = np.zeros((3, 8, 2), np.float32)
    slot_points[0] = line((22, 53), (83, 53), 8)
    slots = rec.Slots(slot_points, np.array([5.0, -5.0, -5.0]), np.full(3, -1.0), np.zeros(3))
    cand, mask, valid = rec.slots_to_candidates(slots, 1, 3, 8, image)
    assert valid[0] and mask[0, 0].all() and not mask[0, 1:].any()
    assert np.abs(cand[0, 0, :, 1] - 50).max() <= 1.0
    assert np.ptp(np.diff(cand[0, 0, :, 0])) < 1.5  # evenly spaced after snapping
