"""Top-down refinement: fit trajectories to an image under prior x likelihood.

Two fits share one optimiser loop (:func:`_optimise`: optax Adam inside ``lax.scan``, with a
coarse-to-fine blur schedule so that far-off ink still pulls, and the first steps at half
resolution, where a step costs about a fifth as much):

- :func:`refine_batch` fits every proposal of every image of a batch (one jitted call) by moving
  the trajectory points freely under the image likelihood plus a parse prior;
- :func:`fit_token` refits one parse to another image through token variables only: a global
  affine (scale, rotation, shear and translation about the parse centre), per-stroke shifts,
  small per-point motor noise and the pen width. This is the inner
  ``max_theta P(I | theta) P(theta | type)`` of BPL's one-shot score (DESIGN.md §5); with
  ``cfg.wide_lr > 0`` the max is taken over two optimiser runs.

:func:`parse_images` chains proposals -> refinement -> the ``K`` best parses of a batch of
images, with normalised posterior weights. Each image's proposals are seeded by its content and
the contender's seed, so a parse never depends on what else is in the batch.
"""

from __future__ import annotations

import collections
import functools
import hashlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conceptlearn.inference.config import FitConfig
from conceptlearn.inference.proposals import merge_moves, propose
from conceptlearn.model.image import (
    coarse_target,
    level_log_likelihood,
    occluded_log_likelihood,
    pixel_probs,
)
from conceptlearn.model.render import render
from conceptlearn.model.token import (
    TrajectoryToken as Token,
)
from conceptlearn.model.token import (
    centre_of_mass,
    smooth_along_strokes,
    token_ink,
    token_log_prior,
    token_parents,
    token_points,
)

__all__ = ["FitConfig", "Parse", "Token", "fit_token", "parse_images", "refit_token"]

# Python-side count of how often each jitted function body was traced (tests check no retrace).
TRACE_COUNT: collections.Counter[str] = collections.Counter()
COARSE = 2  # the half-resolution level of the early optimiser steps


class Parse(NamedTuple):
    """The ``K`` best parses of one image (leading batch axes allowed).

    ``points`` ``f32 (K, S, P, 2)``, ``mask`` ``bool (K, S, P)``, ``log_weight`` ``f32 (K,)``
    (normalised over valid parses, ``-inf`` where invalid), ``log_post`` ``f32 (K,)``
    (unnormalised ``log P(I, parse)``, ``-inf`` where invalid).
    """

    points: jax.Array
    mask: jax.Array
    log_weight: jax.Array
    log_post: jax.Array


def targets(image, coarse: int = COARSE) -> dict[int, jax.Array]:
    """``image bool (105, 105)`` -> ``{1: f32 (105, 105), coarse: f32 (n, n)}``: what each
    resolution level scores against (:func:`conceptlearn.model.image.coarse_target`; ``n``
    53 at the default level 2)."""
    return {1: image.astype(jnp.float32), coarse: coarse_target(image, coarse)}


def level_log_lik(points, mask, target, blur_sigma, level: int, cfg: FitConfig, ink=None,
                  occluder: bool = False):
    """``log P(image | points)`` at blur ``blur_sigma`` (full-resolution px) and resolution
    ``level``: ``points f32 (S, P, 2)``, ``mask bool (S, P)``, ``target`` from :func:`targets`
    -> ``f32 ()``. With ``occluder`` (and ``cfg.occluder_side > 0``) a square of the image may
    be hidden from the program (:func:`~conceptlearn.model.image.occluded_log_likelihood`)."""
    n_samples = cfg.n_samples if level == 1 else (cfg.coarse_samples or cfg.n_samples)
    drawn = render(points, mask, ink, n_samples, level)
    probs = pixel_probs(drawn, blur_sigma / level, cfg.epsilon)
    if occluder and cfg.occluder_side > 0:  # static config
        return occluded_log_likelihood(probs, target, level, cfg.occluder_side,
                                       cfg.occluder_log_prior, cfg.occluder_ink)
    return level_log_likelihood(probs, target, level)


def image_log_lik(points, mask, image, blur_sigma, cfg: FitConfig) -> jax.Array:
    """``log P(image | points)`` at full resolution: ``image bool (105, 105)`` -> ``f32 ()``."""
    return level_log_lik(points, mask, image.astype(jnp.float32), blur_sigma, 1, cfg)


def parse_log_prior(points, mask, cfg: FitConfig) -> jax.Array:
    """Stand-in parse prior: smooth trajectories, few strokes. ``(S, P, 2), (S, P) -> f32 ()``."""
    d2 = points[:, 2:] - 2.0 * points[:, 1:-1] + points[:, :-2]
    m2 = mask[:, 2:] & mask[:, 1:-1] & mask[:, :-2]
    smooth = -0.5 * jnp.sum(jnp.where(m2, jnp.sum(d2 * d2, -1), 0.0)) / cfg.smooth_sigma**2
    return smooth - cfg.stroke_cost * jnp.sum(jnp.any(mask, -1))


def _optimise(loss_fn, params, n_steps: int, n_coarse: int, lr: float, blur_start, cfg,
              coarse_level: int, eps: float = 1e-8):
    """Minimise ``loss_fn(params, blur_sigma, level)`` with Adam (``eps``) for ``n_steps`` steps
    in ``lax.scan``, the first ``n_coarse`` at level ``coarse_level``; blur goes geometrically
    from ``blur_start`` to ``cfg.blur_sigma``. Returns the final params."""
    opt = optax.adam(lr, eps=eps)
    frac = jnp.linspace(0.0, 1.0, max(n_steps, 1))
    sigmas = blur_start * (cfg.blur_sigma / blur_start) ** frac
    n_coarse = min(n_coarse, n_steps)
    carry = (params, opt.init(params))
    for level, part in ((coarse_level, sigmas[:n_coarse]), (1, sigmas[n_coarse:n_steps])):
        if part.shape[0] == 0:
            continue

        def step(carry, sigma, level=level):
            params, state = carry
            grads = jax.grad(loss_fn)(params, sigma, level)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        carry, _ = jax.lax.scan(step, carry, part)
    return carry[0]


def refine_parse(points, mask, image, cfg: FitConfig):
    """Refine one proposal ``points f32 (S, P, 2)``, ``mask bool (S, P)`` against
    ``image bool (105, 105)``. Returns ``(points, log_lik f32 (), log_prior f32 ())``."""
    tgt = targets(image, cfg.coarse_level)

    def loss(p, sigma, level):
        ll = level_log_lik(p, mask, tgt[level], sigma, level, cfg)
        return -(ll + parse_log_prior(p, mask, cfg))

    points = _optimise(
        loss, points, cfg.parse_steps, cfg.parse_coarse_steps, cfg.parse_lr, cfg.blur_start, cfg,
        cfg.coarse_level,
    )
    return (
        points,
        level_log_lik(points, mask, tgt[1], cfg.blur_sigma, 1, cfg),
        parse_log_prior(points, mask, cfg),
    )


@functools.partial(jax.jit, static_argnames=("cfg",))
def refine_parses(points, mask, valid, image, cfg: FitConfig):
    """All proposals of one image in one call: ``points f32 (C, S, P, 2)``, ``mask (C, S, P)``,
    ``valid bool (C,)``, ``image bool (105, 105)`` -> ``(points, log_lik (C,), log_prior (C,))``
    with ``-inf`` log-likelihoods where not valid."""
    TRACE_COUNT["refine_parses"] += 1
    pts, ll, lp = jax.vmap(refine_parse, in_axes=(0, 0, None, None))(points, mask, image, cfg)
    return pts, jnp.where(valid, ll, -jnp.inf), lp


def top_k(points, mask, log_post, k: int) -> Parse:
    """Keep the ``k`` largest ``log_post f32 (C,)`` (``-inf`` = invalid) with normalised weights."""
    order = jnp.argsort(-log_post)[:k]
    lp = log_post[order]
    log_weight = lp - jax.scipy.special.logsumexp(lp)
    return Parse(points[order], mask[order], log_weight, lp)


@functools.partial(jax.jit, static_argnames=("cfg",))
def refine_chunk(points, mask, images, cfg: FitConfig, library=None):
    """Refine a chunk of proposals, each against its own image: ``points f32 (M, S, P, 2)``,
    ``mask bool (M, S, P)``, ``images bool (M, 105, 105)`` -> ``(points, log_lik f32 (M,),
    log_prior f32 (M,))`` (:func:`refine_parse`). ``log_prior`` is ``log P(type)`` of the
    refined parse under ``library`` (:func:`~conceptlearn.model.type_prior.parse_type_log_probs`),
    or the stand-in prior when it is None."""
    TRACE_COUNT["refine_chunk"] += 1
    refined, log_lik, log_prior = jax.vmap(refine_parse, in_axes=(0, 0, 0, None))(
        points, mask, images, cfg
    )
    if library is not None:
        from conceptlearn.model.type_prior import parse_type_log_probs

        log_prior = parse_type_log_probs(library, refined, mask, cfg.type_max_pieces)
    return refined, log_lik, log_prior


@functools.partial(jax.jit, static_argnames=("cfg",))
def rank_batch(points, mask, log_lik, log_prior, cfg: FitConfig) -> Parse:
    """The ``cfg.n_parses`` best refined proposals of each image of a batch by ``log_lik +
    log_prior``: ``points f32 (N, C, S, P, 2)``, ``mask bool (N, C, S, P)``, ``log_lik f32
    (N, C)`` (``-inf``: not a proposal), ``log_prior f32 (N, C)`` -> :class:`Parse` with
    leading axis ``N``."""
    TRACE_COUNT["rank_batch"] += 1
    return jax.vmap(lambda p, m, ll, lp: top_k(p, m, ll + lp, cfg.n_parses))(
        points, mask, log_lik, log_prior
    )


def image_seed(image: np.ndarray, seed: int) -> int:
    """The proposal seed of ``image bool (H, W)``: a hash of its pixels and ``seed``, so that
    the same image gets the same parses wherever it appears."""
    digest = hashlib.sha256(np.packbits(np.asarray(image, bool)).tobytes() + b"%d" % seed)
    return int.from_bytes(digest.digest()[:4], "little") & 0x7FFFFFFF


def _parse_chunk() -> int:
    """Images per ranking call: small on a CPU (memory), large on an accelerator."""
    return 8 if jax.default_backend() == "cpu" else 256


def _proposal_chunk() -> int:
    """Proposals per refinement call (fixed, so that a proposal's refinement never depends on
    what else the batch holds)."""
    return 32 if jax.default_backend() == "cpu" else 1024


def propose_batch(images: np.ndarray, cfg: FitConfig, seed: int = 0) -> list[np.ndarray]:
    """Proposals of each of ``images bool (N, 105, 105)`` on the host, stacked: ``points f32
    (N, C, S, P, 2)``, ``mask bool (N, C, S, P)``, ``valid bool (N, C)``: the skeleton walks'
    ``cfg.max_candidates``, then the learned proposer's ``cfg.proposer_candidates``."""
    parts = []
    if cfg.max_candidates:
        props = [
            propose(
                im,
                max_candidates=cfg.max_candidates,
                max_strokes=cfg.max_strokes,
                n_points=cfg.n_points,
                seed=image_seed(im, seed),
                spur_depth=cfg.spur_depth,
                dot_length=cfg.dot_length,
            )
            for im in images
        ]
        parts.append([np.stack([getattr(p, f) for p in props]) for f in ("points", "mask", "valid")])
    if cfg.proposer and cfg.proposer_candidates:
        from conceptlearn.inference.recognition import load_proposer, propose_learned

        parts.append(propose_learned(load_proposer(cfg.proposer), images, cfg.proposer_candidates,
                                     cfg.max_strokes, cfg.n_points))
    if not parts:
        raise ValueError("no proposals: max_candidates is 0 and there is no learned proposer "
                         "(proposer, proposer_candidates)")
    return [np.concatenate(xs, axis=1) for xs in zip(*parts, strict=True)]


def strokes_used(mask) -> np.ndarray:
    """Stroke slots up to the last used one: ``mask bool (..., S, P)`` -> ``int (...)`` (at
    least 1). Slots past it are masked and add nothing to a fit, so fits drop them."""
    used = np.asarray(mask).any(-1)  # (..., S)
    n_slots = used.shape[-1]
    return np.where(used.any(-1), n_slots - np.argmax(used[..., ::-1], axis=-1), 1)


def slot_sizes(max_strokes: int) -> tuple[int, ...]:
    """The stroke-slot counts that fits compile: half, two thirds and all of ``max_strokes``
    (rounded up)."""
    return tuple(sorted({-(-max_strokes // 2), -(-2 * max_strokes // 3), max_strokes}))


def round_slots(slots: np.ndarray, max_strokes: int) -> np.ndarray:
    """``slots int (M,)`` rounded up to one of :func:`slot_sizes` -> ``int (M,)``."""
    sizes = slot_sizes(max_strokes)
    return np.asarray(sizes)[np.searchsorted(sizes, slots)]


def slot_order(slots: np.ndarray, max_strokes: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch items by the stroke slots they need, ``slots int (M,)``: the items in an order of
    rising slots, padded to a multiple of ``chunk`` with the first item, ``int (T,)``, and each
    item's slots rounded up to one of :func:`slot_sizes`, ``int (M,)``. A chunk of that order
    needs the slots of its last item."""
    rounded = round_slots(slots, max_strokes)
    order = np.argsort(rounded, kind="stable")
    total = -(-len(order) // chunk) * chunk
    return np.concatenate([order, np.full(total - len(order), order[0])]), rounded


def refine_valid(proposals: list[np.ndarray], images: np.ndarray, cfg: FitConfig, library=None):
    """Refine every valid proposal of a batch of images and score its type: ``proposals`` from
    :func:`propose_batch`, ``images bool (N, 105, 105)`` -> ``(points f32 (N, C, S, P, 2),
    log_lik f32 (N, C), log_prior f32 (N, C))`` (``-inf`` log-likelihoods where not valid;
    ``log_prior`` as :func:`refine_chunk`, under ``library`` when ``cfg.type_prior``).

    The valid proposals of all images are refined together (:func:`refine_chunk`), in chunks
    of a fixed size, grouped by the stroke slots they use and cut to them (rounded up to one of
    :func:`slot_sizes`): a fit costs about linearly in its slots, and most proposals use half
    of them or fewer. Every proposal goes through the program of its own slot size and chunk
    size, so its refinement does not depend on the rest of the batch."""
    points, mask, valid = proposals
    n, n_cand = valid.shape
    image_of, cand_of = np.nonzero(valid)
    log_lik = np.full((n, n_cand), -np.inf, np.float32)
    log_prior = np.zeros((n, n_cand), np.float32)
    refined = np.array(points, np.float32)
    library = library if cfg.type_prior else None
    if len(image_of):
        chunk = _proposal_chunk()
        slots = round_slots(strokes_used(mask[image_of, cand_of]), mask.shape[2])
        for size in slot_sizes(mask.shape[2]):  # one compiled shape per slot size, whatever the batch holds
            items = np.nonzero(slots == size)[0]
            for start in range(0, len(items), chunk):
                part = items[start : start + chunk]
                batch = np.concatenate([part, np.full(chunk - len(part), part[0])])
                i, c = image_of[batch], cand_of[batch]
                pts, ll, lp = refine_chunk(points[i, c, :size], mask[i, c, :size], images[i], cfg,
                                          library)
                i, c, n_part = i[: len(part)], c[: len(part)], len(part)
                refined[i, c, :size] = np.asarray(pts)[:n_part]
                log_lik[i, c], log_prior[i, c] = np.asarray(ll)[:n_part], np.asarray(lp)[:n_part]
    return refined, log_lik, log_prior


def rank_refined(refined, mask, log_lik, log_prior, cfg: FitConfig) -> Parse:
    """:func:`rank_batch` over fixed-size chunks of images: arrays of :func:`refine_valid`
    (leading axes ``(N, C)``) -> :class:`Parse` with leading axis ``N``."""
    n = len(refined)
    chunk = min(_parse_chunk(), -(-n // 8) * 8)
    pad = -(-n // chunk) * chunk - n

    def padded(x):
        return np.concatenate([x, np.repeat(x[:1], pad, 0)])

    arrays = [padded(np.asarray(x)) for x in (refined, mask, log_lik, log_prior)]
    parses = [
        rank_batch(*(x[i : i + chunk] for x in arrays), cfg) for i in range(0, n + pad, chunk)
    ]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs)[:n], *parses)


def type_refine_parse(points, mask, image, cfg: FitConfig, library):
    """Refine one parse ``points f32 (S, P, 2)``, ``mask bool (S, P)`` as a BPL type against
    ``image bool (105, 105)``: ``cfg.type_steps`` Adam steps on ``log P(image | points) + log
    P(type)``, the type's sub-stroke splines under the library's primitive mixture, its
    relations and stroke counts (:func:`~conceptlearn.model.type_prior.parse_type_log_prob`) in
    place of the stand-in smoothness prior of :func:`refine_parse`. Steps are at
    ``cfg.coarse_level`` and the score's blur. A point whose type gradient is not finite (a dot:
    a zero-length arc has no direction) takes the likelihood's gradient alone. The refined
    parse replaces the given one only where it scores better at full resolution. Returns
    ``(points, log_lik f32 (), log_prior f32 ())``, both at full resolution."""
    from conceptlearn.model.type_prior import parse_type_log_prob

    tgt = targets(image, cfg.coarse_level)

    def log_prior(p):
        return parse_type_log_prob(library, p, mask, max_pieces=cfg.type_max_pieces)

    def loss(p, sigma, level):
        value, grad = jax.value_and_grad(log_prior)(p)
        grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
        # the prior's value, with its sanitised gradient (a linear term in p)
        prior = jax.lax.stop_gradient(value) + jnp.sum(
            jax.lax.stop_gradient(grad) * (p - jax.lax.stop_gradient(p)))
        return -(level_log_lik(p, mask, tgt[level], sigma, level, cfg) + prior)

    def score(p):
        return level_log_lik(p, mask, tgt[1], cfg.blur_sigma, 1, cfg), log_prior(p)

    refined = _optimise(loss, points, cfg.type_steps, cfg.type_steps, cfg.parse_lr,
                        cfg.blur_sigma, cfg, cfg.coarse_level)
    (ll0, lp0), (ll1, lp1) = score(points), score(refined)
    better = ll1 + lp1 > ll0 + lp0
    return jnp.where(better, refined, points), jnp.where(better, ll1, ll0), jnp.where(better, lp1, lp0)


@functools.partial(jax.jit, static_argnames=("cfg",))
def type_refine_chunk(points, mask, images, cfg: FitConfig, library):
    """:func:`type_refine_parse` of a chunk: ``points f32 (M, S, P, 2)``, ``mask bool (M, S, P)``,
    ``images bool (M, 105, 105)`` -> ``(points, log_lik f32 (M,), log_prior f32 (M,))``."""
    TRACE_COUNT["type_refine_chunk"] += 1
    return jax.vmap(type_refine_parse, in_axes=(0, 0, 0, None, None))(
        points, mask, images, cfg, library)


def type_refine(parse: Parse, images: np.ndarray, cfg: FitConfig, library) -> Parse:
    """The ``K`` parses of each image (``parse`` with leading axis ``N``, ``images bool (N, 105,
    105)``) refined as types (:func:`type_refine_parse`) and re-ranked by their new ``log_lik +
    log P(type)``; invalid parses stay invalid. Chunks of a fixed size, as
    :func:`refine_valid`."""
    n, k = parse.log_post.shape
    valid = np.isfinite(np.asarray(parse.log_post))
    points = np.array(parse.points, np.float32)
    mask = np.asarray(parse.mask)
    log_post = np.full((n, k), -np.inf, np.float32)
    image_of, parse_of = np.nonzero(valid)
    chunk = _proposal_chunk()
    for start in range(0, len(image_of), chunk):
        part = np.arange(start, min(start + chunk, len(image_of)))
        batch = np.concatenate([part, np.full(chunk - len(part), part[0])])
        i, j = image_of[batch], parse_of[batch]
        pts, ll, lp = type_refine_chunk(points[i, j], mask[i, j], images[i], cfg, library)
        i, j, m = i[: len(part)], j[: len(part)], len(part)
        points[i, j] = np.asarray(pts)[:m]
        log_post[i, j] = np.asarray(ll)[:m] + np.asarray(lp)[:m]
    return jax.vmap(lambda p, m, lp: top_k(p, m, lp, k))(points, mask, log_post)


def merge_batch(parse: Parse, cfg: FitConfig, fresh: np.ndarray) -> list[np.ndarray]:
    """Merge moves (:func:`~conceptlearn.inference.proposals.merge_moves`) on each image's best
    parse, stacked like :func:`propose_batch`'s proposals: ``(N, cfg.merge_moves, S, P, ...)``.
    Only images with ``fresh bool (N,)`` get valid moves (another image's best parse had its
    moves refined in an earlier round)."""
    best_points, best_mask = np.asarray(parse.points[:, 0]), np.asarray(parse.mask[:, 0])
    moves = [
        merge_moves(p, m, n_moves=cfg.merge_moves, radius=cfg.merge_radius)
        for p, m in zip(best_points, best_mask, strict=True)
    ]
    points, mask, valid = (np.stack(x) for x in zip(*moves, strict=True))
    return [points, mask, valid & fresh[:, None]]


def refine_proposals(proposals: list[np.ndarray], images: np.ndarray, cfg: FitConfig,
                     library=None) -> Parse:
    """Refine every valid proposal of a batch of images (:func:`refine_valid`) and keep each
    image's best (:func:`rank_refined`): ``proposals`` from :func:`propose_batch`, ``images bool
    (N, 105, 105)`` -> :class:`Parse` with leading axis ``N``. Each of ``cfg.merge_rounds``
    rounds then refines merge moves on every image's best parse that is new since the last
    round (:func:`merge_batch`) and ranks them with everything refined before. With
    ``cfg.type_steps`` the ``K`` best are then refined as types (:func:`type_refine`)."""
    mask = proposals[1]
    refined, log_lik, log_prior = refine_valid(proposals, images, cfg, library)
    parse = rank_refined(refined, mask, log_lik, log_prior, cfg)
    fresh = np.ones(len(images), bool)
    for _ in range(cfg.merge_rounds):
        moves = merge_batch(parse, cfg, fresh)
        if not moves[2].any():
            break
        more_points, more_lik, more_prior = refine_valid(moves, images, cfg, library)
        refined = np.concatenate([refined, more_points], axis=1)
        mask = np.concatenate([mask, moves[1]], axis=1)
        log_lik = np.concatenate([log_lik, more_lik], axis=1)
        log_prior = np.concatenate([log_prior, more_prior], axis=1)
        best = np.asarray(parse.points[:, 0])
        parse = rank_refined(refined, mask, log_lik, log_prior, cfg)
        fresh = np.any(np.asarray(parse.points[:, 0]) != best, axis=(1, 2, 3))
    if cfg.type_steps > 0 and cfg.type_prior and library is not None:
        parse = type_refine(parse, images, cfg, library)
    return parse


def parse_images(images: np.ndarray, cfg: FitConfig, seed: int = 0, library=None) -> Parse:
    """Proposals (on the host) -> refinement and ranking (jitted calls over fixed-size chunks of
    images) -> the ``cfg.n_parses`` best parses of each of ``images bool (N, 105, 105)``: a
    :class:`Parse` with leading axis ``N``, weighted by ``log P(type)`` under ``library`` (a
    learned :class:`~conceptlearn.model.library.Library`) or the stand-in prior when it is
    None."""
    images = np.asarray(images, bool)
    return refine_proposals(propose_batch(images, cfg, seed), images, cfg, library)


def parse_image(image: np.ndarray, cfg: FitConfig, *, seed: int = 0, library=None) -> Parse:
    """The ``cfg.n_parses`` best parses of one ``image bool (105, 105)`` (:func:`parse_images`)."""
    return jax.tree.map(lambda x: x[0], parse_images(np.asarray(image)[None], cfg, seed, library))


# Preconditioning: the optimiser sees log-scale, rotation, shear and log-width in px at these
# radii, so one learning rate (px per step) fits every variable.
_SCALE_PX = 30.0
_WIDTH_PX = 3.0


def ink_centre(image) -> jax.Array:
    """Centre of mass ``f32 (2,)`` in (col, row) of the ink of ``image bool (105, 105)``."""
    img = image.astype(jnp.float32)
    grid = jnp.arange(img.shape[0], dtype=jnp.float32)
    mass = jnp.maximum(jnp.sum(img), 1.0)
    return jnp.stack([jnp.sum(img.sum(0) * grid), jnp.sum(img.sum(1) * grid)]) / mass


def ink_radius(image) -> jax.Array:
    """Root-mean-square distance ``f32 ()`` (px) of the ink of ``image bool (105, 105)`` from
    its centre of mass (1 for a blank image)."""
    img = image.astype(jnp.float32)
    grid = jnp.arange(img.shape[0], dtype=jnp.float32)
    col, row = ink_centre(image)
    sq = (grid[None, :] - col) ** 2 + (grid[:, None] - row) ** 2
    mass = jnp.sum(img)
    return jnp.where(mass > 0, jnp.sqrt(jnp.sum(img * sq) / jnp.maximum(mass, 1.0)), 1.0)


MAX_START_LOG_SCALE = 0.7  # the moment-matched starting scale is clipped to 1/2 .. 2


def start_log_scale(source_image, target_image) -> jax.Array:
    """The log scale ``f32 ()`` that matches the ink spread of ``source_image`` (whose parse is
    refit) to that of ``target_image`` (both ``bool (105, 105)``): where a refit starts, so that
    a drawing two thirds the size is not searched for from the prior's mean size."""
    ratio = jnp.log(ink_radius(target_image)) - jnp.log(ink_radius(source_image))
    return jnp.clip(ratio, -MAX_START_LOG_SCALE, MAX_START_LOG_SCALE)


def start_grid(cfg: FitConfig) -> np.ndarray:
    """The starts of a refit's far-reaching search, ``f32 (G, 2)`` of (log scale, rotation rad)
    offsets from the refit's own start (``log_scale0``, no rotation): ``cfg.start_scales`` (odd)
    log scales evenly over ``+-cfg.start_scale`` times 3 rotations over ``+-cfg.start_rotation``
    (each axis just 0 when its extent is 0). The first row is (0, 0), so that ``argmax`` keeps
    the plain start on ties."""
    if cfg.start_scale > 0 and cfg.start_scales % 2 == 0:
        raise ValueError(f"start_scales must be odd (the grid keeps the plain start), got "
                         f"{cfg.start_scales}")

    def axis(extent: float, n: int) -> np.ndarray:  # 0 first, then outwards
        values = np.linspace(-extent, extent, n) if extent > 0 else np.zeros(1)
        return values[np.argsort(np.abs(values), kind="stable")]

    scales, turns = axis(cfg.start_scale, cfg.start_scales), axis(cfg.start_rotation, 3)
    return np.stack(np.meshgrid(scales, turns, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)


def fit_token(
    points,
    mask,
    image,
    cfg: FitConfig,
    n_steps: int | None = None,
    n_coarse: int | None = None,
    score_level: int = 1,
    log_scale0=0.0,
):
    """Refit one parse's token to ``image``: ``max_token log P(image | token(points)) +
    log P(token)`` for ``points f32 (S, P, 2)``, ``mask bool (S, P)``, ``image bool (105, 105)``.

    ``n_steps`` Adam steps (default ``cfg.refit_steps``), the first ``n_coarse`` (default
    ``cfg.refit_coarse_steps``) at resolution level ``cfg.refit_level``; the score is taken at
    resolution ``score_level``, with ``cfg.occluder_side``'s square summed out when set (the
    steps too with ``cfg.occluder_steps``: with an inky square they drift off the ink the square
    takes). The initial shift
    aligns the parse's centre of mass with the ink's, and the initial log scale is
    ``log_scale0`` (:func:`start_log_scale`; the prior still scores the scale from 0). With
    ``cfg.wide_lr > 0`` a second fit of the same objective takes long steps from blur
    ``cfg.wide_blur`` (it reaches strokes and scales the short steps cannot) and the better of
    the two is kept. The far-reaching fit (the wide one, else the only one) starts from the
    best start of :func:`start_grid` at its first blur. The objective and score weigh the image
    log-likelihood by ``cfg.likelihood_weight`` (the score by ``cfg.score_likelihood_weight``
    instead, where that is >= 0). Returns the score ``f32 ()``, the refit
    trajectories ``f32 (S, P, 2)`` and the :class:`Token`."""
    steps = cfg.refit_steps if n_steps is None else n_steps
    coarse = cfg.refit_coarse_steps if n_coarse is None else n_coarse
    tgt = targets(image, cfg.refit_level)
    parents = token_parents(points, mask, cfg)
    shift0 = jnp.where(jnp.any(image), ink_centre(image) - centre_of_mass(points, mask), 0.0)
    zero = jnp.zeros(())
    n_strokes = points.shape[0]
    u0 = Token(jnp.full(2, log_scale0 * _SCALE_PX), shift0, jnp.zeros((n_strokes, 2)),
               jnp.zeros_like(points), zero, zero, zero)

    def unpack(u: Token) -> Token:
        return u._replace(
            motor=smooth_along_strokes(u.motor, cfg),  # steps in white noise when it is smooth
            log_scale=u.log_scale / _SCALE_PX,
            log_width=u.log_width / _WIDTH_PX,
            rotation=u.rotation / _SCALE_PX,
            shear=u.shear / _SCALE_PX,
        )

    def objective(u: Token, sigma, level: int, occluder: bool = False, weight=None):
        tok = unpack(u)
        pts = token_points(points, mask, tok)
        ll = level_log_lik(pts, mask, tgt[level], sigma, level, cfg, token_ink(tok), occluder)
        weight = cfg.likelihood_weight if weight is None else weight
        return weight * ll + token_log_prior(tok, mask, cfg, parents)

    score_weight = (cfg.likelihood_weight if cfg.score_likelihood_weight < 0
                    else cfg.score_likelihood_weight)

    def fit_from(start, lr, blur_start, n):
        u = _optimise(lambda u, s, lv: -objective(u, s, lv, occluder=cfg.occluder_steps), start,
                      n, min(coarse, n), lr, blur_start, cfg, cfg.refit_level, cfg.refit_eps)
        return objective(u, cfg.blur_sigma, score_level, occluder=True, weight=score_weight), u

    def best_start(blur):
        """The start of the grid (:func:`start_grid`) that ``objective`` rates best at ``blur``,
        before any step."""
        grid = start_grid(cfg)
        if grid.shape[0] == 1:  # static config: no grid
            return u0
        starts = jax.vmap(lambda g: u0._replace(log_scale=u0.log_scale + g[0] * _SCALE_PX,
                                                rotation=g[1] * _SCALE_PX))(jnp.asarray(grid))
        fits = jax.vmap(lambda u: objective(u, blur, cfg.refit_level))(starts)
        return jax.tree.map(lambda x: x[jnp.argmax(fits)], starts)

    if cfg.wide_lr <= 0:  # static config: one search, started from the grid's best
        score, u = fit_from(best_start(cfg.blur_start), cfg.refit_lr, cfg.blur_start, steps)
    else:  # a short search, and a far-reaching one from the grid's best; the better is kept
        score, u = fit_from(u0, cfg.refit_lr, cfg.blur_start, steps)
        wide_steps = min(cfg.wide_steps or steps, steps)
        wide_start = best_start(cfg.wide_blur)
        wide_score, wide_u = fit_from(wide_start, cfg.wide_lr, cfg.wide_blur, wide_steps)
        better = wide_score > score
        u = jax.tree.map(lambda a, b: jnp.where(better, b, a), u, wide_u)
        score = jnp.maximum(score, wide_score)
    tok = unpack(u)
    return score, token_points(points, mask, tok), tok


def refit_token(points, mask, image, cfg: FitConfig, n_steps: int | None = None, **kw):
    """The score ``f32 ()`` of :func:`fit_token`."""
    return fit_token(points, mask, image, cfg, n_steps, **kw)[0]
