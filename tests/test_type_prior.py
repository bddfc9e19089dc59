"""P(type): each distribution checked three ways (reference density, gradient, samples)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions.gof import auto_goodness_of_fit, multinomial_goodness_of_fit
from scipy import stats
from scipy.special import logsumexp

from conceptlearn.model.library import (
    ALONG,
    END_OF,
    INDEPENDENT,
    MAX_STROKES,
    MAX_SUBSTROKES,
    START_OF,
    toy_library,
)
from conceptlearn.model.splines import bspline_basis
from conceptlearn.model.type_prior import (
    PrimitiveChain,
    Type,
    masks,
    position_dist,
    sample_type,
    stroke_marginal_log_prob,
    type_from_splines,
    type_log_prob,
    type_marginal_log_prob,
)

GOF_FAILURE = 2e-4  # numpyro's threshold for goodness-of-fit p-values


@pytest.fixture(scope="module")
def library():
    return toy_library(n_primitives=3, n_centers=4, seed=0)


N_SAMPLES = 2000


@pytest.fixture(scope="module")
def types(library):
    """``N_SAMPLES`` types drawn from the prior (one compiled, batched call)."""
    keys = jax.random.split(jax.random.key(0), N_SAMPLES)
    return jax.jit(jax.vmap(lambda k: sample_type(library, key=k)))(keys)


def _one(types, i):
    return jax.tree.map(lambda x: x[i], types)


def reference_log_prob(library, t: Type) -> float:
    """``log P(type)`` written out with scipy, term by term."""
    lib = {k: np.asarray(v, np.float64) for k, v in library._asdict().items()}
    t = Type(*[np.asarray(x) for x in t])
    n = int(t.n_strokes)
    lp = np.log(lib["n_strokes_probs"][n - 1])
    for i in range(n):
        m = int(t.n_sub[i])
        lp += np.log(lib["n_sub_probs"][n - 1, m - 1])
        ids = t.ids[i, :m]
        lp += np.log(lib["start_probs"][ids[0]])
        lp += sum(np.log(lib["trans_probs"][a, b]) for a, b in zip(ids[:-1], ids[1:], strict=True))
        for j, k in enumerate(ids):
            lp += stats.norm(lib["shape_mean"][k], lib["shape_sd"][k]).logpdf(t.shapes[i, j]).sum()
            lp += stats.lognorm(
                s=lib["log_scale_sd"][k], scale=np.exp(lib["log_scale_mean"][k])
            ).logpdf(t.scales[i, j])
        kind = int(t.relation[i])
        if i == 0:
            assert kind == INDEPENDENT
        else:
            lp += np.log(lib["relation_probs"][kind])
        if kind == INDEPENDENT:
            weights = lib["first_position_weights" if i == 0 else "position_weights"]
            density = sum(
                w * stats.multivariate_normal(c, lib["position_sd"] ** 2).pdf(t.position[i])
                for w, c in zip(weights, lib["position_centers"], strict=True)
            )
            lp += np.log(density)
        else:
            lp += np.log(1.0 / i)
        if kind == ALONG:
            lp += np.log(1.0 / t.n_sub[t.parent[i]])  # along_t ~ U(0, 1) adds 0
    return float(lp)


def test_log_prob_matches_reference(library, types):
    batch = np.asarray(jax.jit(jax.vmap(type_log_prob, in_axes=(None, 0)))(library, types))
    assert np.all(np.isfinite(batch))
    kinds = set()
    for i in range(12):
        t = _one(types, i)
        kinds.update(np.asarray(t.relation)[: int(t.n_strokes)].tolist())
        np.testing.assert_allclose(batch[i], reference_log_prob(library, t), rtol=2e-4, atol=2e-3)
    assert kinds == {INDEPENDENT, START_OF, END_OF, ALONG}  # every branch was checked


def test_impossible_types_score_minus_infinity(library, types):
    t = _one(types, 0)
    assert np.isneginf(type_log_prob(library, t._replace(relation=t.relation.at[0].set(END_OF))))
    t = t._replace(
        n_strokes=jnp.asarray(2),
        relation=t.relation.at[1].set(START_OF),
        parent=t.parent.at[1].set(1),
    )  # a stroke cannot attach to itself
    assert np.isneginf(type_log_prob(library, t))


def test_gradient_matches_finite_differences(library, types):
    t = _one(types, 1)

    def f(shapes, scales, position):
        return type_log_prob(library, t._replace(shapes=shapes, scales=scales, position=position))

    args = (t.shapes, t.scales, t.position)
    grads = jax.grad(f, argnums=(0, 1, 2))(*args)
    rng = np.random.default_rng(0)
    _, sub_mask = masks(t.n_strokes, t.n_sub)
    for a, g in enumerate(grads):
        for _ in range(3):
            direction = jnp.asarray(rng.normal(size=args[a].shape), jnp.float32)
            if a < 2:  # only valid sub-strokes carry density
                m = sub_mask if a == 1 else sub_mask[..., None, None]
                direction = jnp.where(m, direction, 0.0)
            h = 1e-2
            plus = list(args)
            minus = list(args)
            plus[a] = args[a] + h * direction
            minus[a] = args[a] - h * direction
            fd = (f(*plus) - f(*minus)) / (2 * h)
            np.testing.assert_allclose(jnp.vdot(g, direction), fd, rtol=2e-2, atol=2e-2)


def test_primitive_chain_samples_fit_log_prob(library):
    length = jnp.full((5000,), 3)
    chain = PrimitiveChain(library.start_probs, library.trans_probs, length, n_steps=3)
    samples = np.asarray(chain.sample(jax.random.key(1)))
    sequences = jnp.asarray(list(itertools.product(range(3), repeat=3)))
    every = PrimitiveChain(library.start_probs, library.trans_probs, jnp.full((27,), 3), n_steps=3)
    probs = np.exp(np.asarray(every.log_prob(sequences), np.float64))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)
    code = samples @ np.array([9, 3, 1])
    counts = np.bincount(code, minlength=27)
    assert multinomial_goodness_of_fit(probs, counts) > GOF_FAILURE
    # a shorter chain ignores its padding
    short = PrimitiveChain(library.start_probs, library.trans_probs, jnp.asarray([2]), n_steps=3)
    a = short.log_prob(jnp.asarray([[0, 1, 2]]))
    b = short.log_prob(jnp.asarray([[0, 1, 0]]))
    np.testing.assert_allclose(a, b)


def test_position_samples_fit_log_prob(library):
    d = position_dist(library, (2500,))
    samples = d.sample(jax.random.key(2))
    probs = np.exp(np.asarray(d.log_prob(samples)))
    assert auto_goodness_of_fit(np.asarray(samples), probs, dim=2) > GOF_FAILURE


def test_type_samples_fit_log_prob(library, types):
    many = types
    counts = np.bincount(np.asarray(many.n_strokes) - 1, minlength=MAX_STROKES)
    assert multinomial_goodness_of_fit(np.asarray(library.n_strokes_probs), counts) > GOF_FAILURE
    # the first sub-stroke's shape (given its primitive) and scale, standardised, are N(0, 1)
    ids = np.asarray(many.ids[:, 0, 0])
    z = (np.asarray(many.shapes[:, 0, 0]) - np.asarray(library.shape_mean)[ids]) / np.asarray(
        library.shape_sd
    )[ids]
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    zs = (np.log(np.asarray(many.scales[:, 0, 0])) - np.asarray(library.log_scale_mean)[ids]) / (
        np.asarray(library.log_scale_sd)[ids]
    )
    assert stats.kstest(zs, "norm").pvalue > 1e-3
    second = np.asarray(many.n_strokes) >= 2
    kinds = np.bincount(np.asarray(many.relation[second, 1]), minlength=4)
    assert multinomial_goodness_of_fit(np.asarray(library.relation_probs), kinds) > GOF_FAILURE


def test_marginal_sums_over_all_id_sequences(library, types):
    index = int(
        np.argmax((np.asarray(types.n_sub[:, 0]) >= 2) & (np.asarray(types.n_sub[:, 0]) <= 3))
    )
    t = _one(types, index)
    i = 0
    m = int(t.n_sub[i])
    assert 2 <= m <= 3
    brute = []
    for ids in itertools.product(range(library.n_primitives), repeat=m):
        full = t.ids.at[i, :m].set(jnp.asarray(ids))
        brute.append(_stroke_terms(library, t._replace(ids=full), i))
    np.testing.assert_allclose(
        stroke_marginal_log_prob(library, t.shapes[i], t.scales[i], t.n_sub[i]),
        logsumexp(brute),
        rtol=1e-5,
        atol=1e-4,
    )
    assert type_marginal_log_prob(library, t) >= type_log_prob(library, t) - 1e-4


def _stroke_terms(library, t, i):
    lib = {k: np.asarray(v, np.float64) for k, v in library._asdict().items()}
    m = int(t.n_sub[i])
    ids = np.asarray(t.ids[i, :m])
    lp = np.log(lib["start_probs"][ids[0]])
    lp += sum(np.log(lib["trans_probs"][a, b]) for a, b in zip(ids[:-1], ids[1:], strict=True))
    for j, k in enumerate(ids):
        lp += (
            stats.norm(lib["shape_mean"][k], lib["shape_sd"][k])
            .logpdf(np.asarray(t.shapes[i, j]))
            .sum()
        )
        lp += stats.lognorm(
            s=lib["log_scale_sd"][k], scale=np.exp(lib["log_scale_mean"][k])
        ).logpdf(float(t.scales[i, j]))
    return lp


def test_no_retrace_across_types(library, types):
    traces = []

    @jax.jit
    def f(t):
        traces.append(1)
        return type_log_prob(library, t)

    for i in range(4):
        f(_one(types, i))
    assert len(traces) == 1


def _line(a, b):
    """Control points ``(1, 5, 2)`` of a straight sub-stroke from ``a`` to ``b``."""
    return np.linspace(a, b, 5)[None]


def test_type_from_splines_finds_relations(library):
    controls = [
        _line([20, 20], [20, 80]),  # independent
        _line([20.5, 80], [60, 80]),  # starts at the end of stroke 0
        _line([20, 50.5], [50, 50]),  # starts along stroke 0 (half way)
        np.concatenate([_line([70, 20], [80, 30]), _line([80, 30], [90, 20])]),  # independent
        _line([70.5, 20.5], [70, 5]),  # starts at the start of stroke 3
    ]
    t = type_from_splines(library, controls)
    assert int(t.n_strokes) == 5
    assert np.asarray(t.n_sub)[:5].tolist() == [1, 1, 1, 2, 1]
    assert np.asarray(t.relation)[:5].tolist() == [
        INDEPENDENT,
        END_OF,
        ALONG,
        INDEPENDENT,
        START_OF,
    ]
    assert np.asarray(t.parent)[[1, 2, 4]].tolist() == [0, 0, 3]
    spot = bspline_basis(t.along_t[2]) @ controls[0][0]
    np.testing.assert_allclose(spot, [20, 50.5], atol=2.0)
    np.testing.assert_allclose(t.position[0], [20, 20])
    assert np.isfinite(type_log_prob(library, t))
    with pytest.raises(ValueError, match="strokes"):
        type_from_splines(library, [])
    with pytest.raises(ValueError, match="stroke 0"):
        type_from_splines(library, [np.zeros((MAX_SUBSTROKES + 1, 5, 2))])


def test_first_stroke_starts_by_its_own_density(library, types):
    """The first stroke's start follows ``first_position_weights``, not ``position_weights``:
    a chi-square test of the sampled starts' counts in a 4 x 4 grid against each density's cell
    probabilities (estimated from 400k draws; cells expecting < 5 starts pooled)."""
    assert not np.allclose(library.first_position_weights, library.position_weights)

    def cells(points):
        ij = np.clip(np.asarray(points) // 26.25, 0, 3).astype(int)
        return np.bincount(ij[:, 0] * 4 + ij[:, 1], minlength=16)

    counts = cells(types.position[:, 0])

    def p_value(weights, key):
        draws = position_dist(library, (400_000,), weights).sample(jax.random.key(key))
        expected = cells(draws) / 400_000 * counts.sum()
        small = expected < 5
        obs = np.append(counts[~small], counts[small].sum())
        exp = np.append(expected[~small], expected[small].sum())
        return stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue

    assert p_value(library.first_position_weights, 3) > 1e-3
    assert p_value(library.position_weights, 4) < 1e-6


def test_marginal_needs_only_the_used_sub_strokes(library, types):
    """The forward algorithm over the first ``n_sub`` sub-strokes alone (``n_sub - 1`` steps)
    equals it over the padded ``MAX_SUBSTROKES``: ``stroke_log_prob`` passes only the pieces."""
    n_sub = np.asarray(types.n_sub[:, 0])
    picked = [*np.nonzero(n_sub == 1)[0][:2], *np.nonzero(n_sub >= 2)[0][:6]]
    assert len(picked) == 8 and n_sub[picked].max() >= 3
    for i in picked:
        t = _one(types, int(i))
        m = int(t.n_sub[0])
        np.testing.assert_allclose(
            stroke_marginal_log_prob(library, t.shapes[0, :m], t.scales[0, :m], t.n_sub[0]),
            stroke_marginal_log_prob(library, t.shapes[0], t.scales[0], t.n_sub[0]),
            rtol=1e-6,
        )
