"""New exemplars of a concept: parse choice by posterior weight, token noise, kept in the canvas."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions.gof import multinomial_goodness_of_fit

from conceptlearn.model.generate import TokenNoise, choose_parse, sample_exemplars, token_drawing
from conceptlearn.model.sample import MARGIN, border_ink_share, inside_canvas
from conceptlearn.model.token import token_log_prior

NOISE = TokenNoise(
    motor_sigma=0.7,
    stroke_sigma=5.0,
    attach_sigma=0.0,
    scale_sigma=0.15,
    shift_sigma=8.0,
    width_sigma=0.3,
    rotate_sigma=0.15,
    shear_sigma=0.15,
)


def _parses():
    """Two shots of a concept, two parses each: ``points (2, 2, 2, 8, 2)``: a vertical bar
    (one stroke) and an L (two strokes); the second shot's second parse is invalid."""
    t = jnp.linspace(0.0, 1.0, 8)
    vertical = jnp.stack([jnp.full(8, 52.0), 25.0 + 55.0 * t], -1)
    horizontal = jnp.stack([30.0 + 45.0 * t, jnp.full(8, 80.0)], -1)
    one = jnp.stack([vertical, vertical])  # (S=2, P=8, 2)
    two = jnp.stack([vertical, horizontal])
    points = jnp.stack([jnp.stack([one, two]), jnp.stack([two, one])])  # (k=2, K=2, S, P, 2)
    mask_one = jnp.stack([jnp.ones(8, bool), jnp.zeros(8, bool)])
    mask_two = jnp.ones((2, 8), bool)
    mask = jnp.stack([jnp.stack([mask_one, mask_two]), jnp.stack([mask_two, mask_one])])
    log_weight = jnp.log(jnp.asarray([[0.7, 0.3], [1.0, 0.0]]))
    return points, mask, log_weight


def test_parses_are_chosen_by_shot_then_posterior_weight():
    _, _, log_weight = _parses()
    keys = jax.random.split(jax.random.key(0), 4000)
    shot, parse = jax.vmap(lambda k: choose_parse(log_weight, key=k))(keys)
    counts = np.bincount(np.asarray(shot) * 2 + np.asarray(parse), minlength=4)
    probs = np.asarray([0.35, 0.15, 0.5, 0.0])
    assert counts[3] == 0  # an invalid parse (weight 0) is never drawn
    assert multinomial_goodness_of_fit(probs[:3], counts[:3]) > 2e-4


def test_drawn_tokens_follow_the_token_prior_and_stay_inside():
    """Without the canvas limit binding, a token's scaled noise is N(0, 1): its log prior
    (token_log_prior, the refit's density) averages -d/2 over the d free dimensions."""
    points, mask, _ = _parses()
    p, m = points[0, 1], mask[0, 1]
    keys = jax.random.split(jax.random.key(1), 500)
    moved, tokens = jax.vmap(lambda k: token_drawing(p, m, NOISE, key=k))(keys)
    assert bool(jax.vmap(lambda q: inside_canvas(q, m, MARGIN))(moved).all())
    logp = np.asarray(jax.vmap(lambda t: token_log_prior(t, m, NOISE))(tokens))
    dims = (
        16 * 2 + 2 * 2 + 2 + 2 + 1 + 1 + 1
    )  # motor, stroke shifts, scale, shift, width, rot, shear
    assert abs(logp.mean() + dims / 2) < 0.1 * dims  # the canvas limit trims the tails a little
    z = np.asarray(tokens.motor)[:, 0, :, 0].ravel() / NOISE.motor_sigma
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1.0) < 0.1


def test_exemplars_are_reproducible_images_inside_the_canvas():
    points, mask, log_weight = _parses()
    draw = lambda key: np.asarray(  # noqa: E731
        sample_exemplars(points, mask, log_weight, NOISE, key=key, n=6)
    )
    images = draw(jax.random.key(2))
    assert images.shape == (6, 105, 105) and ((images >= 0) & (images <= 1)).all()
    np.testing.assert_array_equal(images, draw(jax.random.key(2)))
    assert not np.array_equal(images, draw(jax.random.key(3)))
    assert border_ink_share(images) == 0.0
    assert (images > 0.5).any(axis=(1, 2)).all()


def test_parse_pen_recovers_the_pen_an_image_was_drawn_with():
    """An image rendered from a parse with a known pen, binarised as exemplars are: the pen
    read back from it is that pen, within the 0.1 over which a binarised line's width in
    whole pixels stays the same, and thicker lines keep more core."""
    from conceptlearn.model.generate import line_core_share, parse_pen
    from conceptlearn.model.image import pixel_probs
    from conceptlearn.model.render import render
    from conceptlearn.model.token import pen_ink

    points, mask, _ = _parses()
    p, m = points[0, 1], mask[0, 1]  # the L
    shares = []
    for log_width in (-0.3, 0.0, 0.4):
        image = pixel_probs(render(p, m, pen_ink(jnp.float32(log_width))), 0.5, 0.0) > 0.5
        shares.append(float(line_core_share(image)))
        assert abs(float(parse_pen(p, m, image)) - log_width) < 0.1
    assert shares[0] < shares[1] < shares[2]


def test_style_library_is_the_dirichlet_posterior_mean():
    from conceptlearn.model.generate import STYLE_PRIOR, stroke_controls, style_library
    from conceptlearn.model.library import toy_library
    from conceptlearn.model.type_prior import type_from_splines

    library = toy_library(n_primitives=5, n_centers=4, seed=2)
    points, mask, _ = _parses()
    controls = stroke_controls(points[0, 1], mask[0, 1])  # the L: two strokes
    assert len(controls) == 2 and all(c.shape[1:] == (5, 2) for c in controls)
    types = [type_from_splines(library, controls)] * 3
    styled = style_library(library, types)
    a = STYLE_PRIOR.counts
    expected = a * np.asarray(library.n_strokes_probs, np.float64)
    expected[1] += 3  # three two-stroke characters
    np.testing.assert_allclose(styled.n_strokes_probs, expected / (a + 3), rtol=1e-5)
    first = int(types[0].ids[0, 0])
    assert styled.start_probs[first] > library.start_probs[first]
    np.testing.assert_array_equal(styled.shape_mean, library.shape_mean)  # shapes untouched
    assert styled.first_position_weights.argmax() == np.argmin(
        ((np.asarray(library.position_centers) - np.asarray(types[0].position[0])) ** 2).sum(1)
    )


@pytest.mark.slow  # parses images with the generative model
def test_generate_cli_writes_both_grids(tmp_path, small1_images):
    from PIL import Image

    from conceptlearn.cli import main

    keys = [
        small1_images.keys(a, small1_images.characters(a)[0])[0]
        for a in small1_images.alphabets[:2]
    ]
    paths = []
    (tmp_path / "alphabet").mkdir()
    for i, key in enumerate(keys):
        path = tmp_path / "alphabet" / f"c{i}.png"
        Image.fromarray(np.uint8(~small1_images.image(key)) * 255).save(path)
        paths.append(str(path))
    argv = ["generate", "--from", paths[0], "--from", paths[1], "--exemplars", "3", "--quick"]
    assert main([*argv, "--out", str(tmp_path / "a.png")]) == 0
    assert Image.open(tmp_path / "a.png").size == (4 * 108 + 3, 2 * 108 + 3)
    alphabet = str(tmp_path / "alphabet")
    argv = ["generate", "--alphabet-from", alphabet, "--new-concepts", "3", "--quick"]
    assert main([*argv, "--out", str(tmp_path / "b.png")]) == 0
    assert Image.open(tmp_path / "b.png").size == (10 * 108 + 3, 2 * 108 + 3)


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_sample_discriminator_separates_only_what_differs():
    two_sample = _script("two_sample")
    rng = np.random.default_rng(0)
    real = rng.normal(size=(30, 9, 5))
    same, _, _ = two_sample.two_sample_accuracy(real, rng.normal(size=(30, 9, 5)))
    shifted, (low, high), per_concept = two_sample.two_sample_accuracy(
        real, rng.normal(size=(30, 9, 5)) + 3.0
    )
    assert abs(same - 0.5) < 0.1 and shifted > 0.95
    assert low <= shifted <= high and per_concept.shape == (30,)


def test_two_sample_folds_by_group_do_not_learn_a_groups_own_mark():
    """Fakes carrying their group's own offset (a support drawer's hand): folds by concept
    learn the offsets from the group's other concepts; folds by group cannot."""
    two_sample = _script("two_sample")
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(10), 5)  # 10 drawers, 5 concepts each
    real = rng.normal(size=(50, 9, 40))
    offset = 2.5 * rng.normal(size=(10, 40)) / np.sqrt(40)
    fake = rng.normal(size=(50, 9, 40)) + 4.0 * offset[groups][:, None]
    by_concept, _, _ = two_sample.two_sample_accuracy(real, fake)
    by_group, _, _ = two_sample.two_sample_accuracy(real, fake, groups=groups)
    assert by_concept > 0.75 and abs(by_group - 0.5) < 0.1
    with pytest.raises(ValueError, match="groups"):
        two_sample.two_sample_accuracy(real, fake, groups=groups % 3)


def test_diversity_is_one_for_the_same_spread_and_near_zero_for_copies():
    two_sample = _script("two_sample")
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(30, 1, 8)) * 3.0
    real = centres + rng.normal(size=(30, 9, 8))
    assert abs(two_sample.diversity(real, centres + rng.normal(size=(30, 9, 8))) - 1.0) < 0.1
    copies = real[:, :1] + 0.01 * rng.normal(size=(30, 9, 8))
    assert two_sample.diversity(real, copies) < 0.05
    diff, (low, high) = two_sample.paired_difference(np.full(30, 0.6), np.full(30, 0.5))
    assert diff == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)


def test_affine_jitter_keeps_ink_and_repeats_with_the_key():
    two_sample = _script("two_sample")
    image = np.zeros((1, 105, 105), bool)
    image[0, 30:70, 50:53] = True
    out = two_sample.affine_jitter(image, jax.random.key(0))
    assert out.shape == (1, 9, 105, 105) and out.any(axis=(2, 3)).all()
    np.testing.assert_array_equal(out, two_sample.affine_jitter(image, jax.random.key(0)))
    assert not (out == image[:, None]).all(axis=(2, 3)).any()


def test_attached_strokes_move_with_their_parent_in_exemplars():
    """With ``attach_sigma``, an L's foot (it starts on the bar's end) keeps its place on the
    bar: its shift less the bar's has sd ``attach_sigma``, and the exemplars' tokens score by
    the same density (``token_log_prior`` with the same attachments)."""
    from conceptlearn.model.token import token_parents

    t = jnp.linspace(0.0, 1.0, 8)
    bar = jnp.stack([jnp.full(8, 40.0), 25.0 + 55.0 * t], -1)
    foot = jnp.stack([40.0 + 35.0 * t, jnp.full(8, 80.0)], -1)
    p, m = jnp.stack([bar, foot]), jnp.ones((2, 8), bool)
    noise = NOISE._replace(attach_sigma=0.5)
    parents = token_parents(p, m, noise)
    np.testing.assert_array_equal(np.asarray(parents), [-1, 0])
    keys = jax.random.split(jax.random.key(3), 500)
    _, tokens = jax.vmap(lambda k: token_drawing(p, m, noise, key=k))(keys)
    gap = np.asarray(tokens.stroke_shift[:, 1] - tokens.stroke_shift[:, 0])
    assert abs(gap.std() / 0.5 - 1.0) < 0.15
    assert np.asarray(tokens.stroke_shift[:, 0]).std() > 3.0  # the parent itself moves freely
    logp = np.asarray(jax.vmap(lambda t: token_log_prior(t, m, noise, parents))(tokens))
    dims = 16 * 2 + 2 * 2 + 2 + 2 + 1 + 1 + 1
    assert abs(logp.mean() + dims / 2) < 0.1 * dims
