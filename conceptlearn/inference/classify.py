"""One-shot (and k-shot) classification by analysis by synthesis: the ``bpl`` contender.

For a query image ``I_T`` and a class image ``I_C`` the score is BPL's two-way score
(DESIGN.md §5)

    log P(I_T | I_C) + log P(I_C | I_T) - log P(I_C),

with ``log P(I_T | I_C) = logsumexp_k [log w_k + max_theta log P(I_T | theta) P(theta | parse_k)]``
over the ``K`` best parses of ``I_C`` (:func:`conceptlearn.inference.fit.parse_images`), ``theta``
the token variables refit to ``I_T`` (:func:`conceptlearn.inference.fit.fit_token`). The
evidence ``log P(I_C)`` is estimated with the same refit, of ``I_C``'s own parses to ``I_C``, so
that the second and third terms form a calibrated ratio: how much worse ``I_T``'s programs
explain ``I_C`` than ``I_C``'s own do.

Everything is built on one single-pair function, :func:`pair_terms` (class image, query image
and their parses -> the refit scores both ways), vmapped over fixed-size chunks of pairs
(:func:`score_pairs`; the chunk axis is sharded over all local devices). Stages (every knob in
:class:`~conceptlearn.inference.config.BPLConfig`):

1. parse every support and query image of the episode (one batched call; cached on disk by
   image content and config when the contender has a parse cache);
2. prune (``prune_width < n_way``): the best parse of each pair, refit both ways with
   ``prune_steps`` steps at level ``prune_level``, keeps the ``prune_width`` best classes per query;
3. score the kept pairs both ways with ``refit_steps`` steps.

For ``k > 1`` support images per class, each shot is scored as a class image of its own and the
class score is the log-mean-exp over its shots (a mixture over the shots' parses). Pair terms
do not depend on k, so :func:`score_queries` derives every k of a sweep from one set of pairs
(runs at k = 1, 2, 5, 10 share their drawers in order).

Images that are not 105 x 105 are resized to 105 x 105 (bilinear) and thresholded at 0.25.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from conceptlearn.inference.config import (
    FULL,
    PARSE_FIELDS,
    QUICK,
    BPLConfig,
    learned_noise,
    preset,
)
from conceptlearn.inference.fit import (
    TRACE_COUNT,
    Parse,
    parse_images,
    refit_token,
    slot_order,
    start_log_scale,
    strokes_used,
)
from conceptlearn.model.render import IMAGE_SIZE

__all__ = ["FULL", "QUICK", "BPLConfig", "BPLContender", "PairTerms", "pair_terms", "score_pairs"]

PARSE_CACHE_VERSION = 3  # bump when a parse of the same image and config would change


class PairTerms(NamedTuple):
    """Refit scores of one (class image, query image) pair: ``forward f32 (K,)``, every parse
    of the class image refit to the query; ``backward f32 (K,)``, every parse of the query
    refit to the class image (zeros when not two-way)."""

    forward: jax.Array
    backward: jax.Array


def pair_terms(
    class_parse: Parse,
    class_image,
    query_parse: Parse,
    query_image,
    cfg: BPLConfig,
    n_steps: int,
    n_coarse: int,
    score_level: int = 1,
    two_way: bool = True,
) -> PairTerms:
    """The score terms of one pair: parses with leading axis ``K``, images ``bool (105, 105)``.
    Refits take ``n_steps`` steps, ``n_coarse`` of them at ``cfg.refit_level``, and are scored at
    ``score_level``; with ``cfg.match_scale`` they start at the scale that matches the two
    images' ink spreads. Only the forward refits have an occluder when
    ``cfg.occluder_query_only`` (:func:`class_image_config`)."""

    def refits(parse: Parse, image, log_scale0, cfg):
        return jax.vmap(
            lambda p, m: refit_token(p, m, image, cfg, n_steps, n_coarse=n_coarse,
                                     score_level=score_level, log_scale0=log_scale0)
        )(parse.points, parse.mask)

    log_scale0 = start_log_scale(class_image, query_image) if cfg.match_scale else 0.0
    forward = refits(class_parse, query_image, log_scale0, cfg)
    if two_way:
        backward = refits(query_parse, class_image, -log_scale0, class_image_config(cfg))
    else:
        backward = jnp.zeros_like(forward)
    return PairTerms(forward, backward)


def class_image_config(cfg: BPLConfig) -> BPLConfig:
    """``cfg`` for refits that score a class image (the backward refits and the evidence): with
    ``cfg.occluder_query_only`` they have no occluder."""
    return dataclasses.replace(cfg, occluder_side=0) if cfg.occluder_query_only else cfg


def two_way_score(terms: PairTerms, class_log_weight, query_log_weight, class_log_evidence,
                  two_way: bool = True) -> jax.Array:
    """``log P(I_T | I_C) [+ log P(I_C | I_T) - log P(I_C)]`` from :class:`PairTerms` with any
    leading shape ``L`` (terms ``(*L, K)``, weights ``(*L, K)``, evidence ``(*L,)``) -> ``(*L,)``."""
    forward = logsumexp(class_log_weight + terms.forward, axis=-1)
    if not two_way:
        return forward
    return forward + logsumexp(query_log_weight + terms.backward, axis=-1) - class_log_evidence


_two_way_score_jit = jax.jit(two_way_score, static_argnames="two_way")


def pair_scores(terms: PairTerms, class_log_weight, query_log_weight, class_log_evidence,
                two_way: bool = True) -> np.ndarray:
    """:func:`two_way_score` of ``M`` pairs (terms and weights ``(M, K)``, evidence ``(M,)``) ->
    ``f32 (M,)``, on the host's arrays padded to the next power of two: an episode's pair count
    depends on its data, and a new shape would compile (and keep) new programs every episode."""
    args = [np.asarray(x, np.float32) for x in (*terms, class_log_weight, query_log_weight,
                                                 class_log_evidence)]
    m = args[-1].shape[0]
    padded = max(64, 1 << max(m - 1, 0).bit_length())
    args = [np.pad(x, [(0, padded - m)] + [(0, 0)] * (x.ndim - 1)) for x in args]
    forward, backward, *rest = args
    return np.asarray(_two_way_score_jit(PairTerms(forward, backward), *rest, two_way))[:m]


def _mesh() -> Mesh | None:
    devices = jax.local_devices()
    return Mesh(np.asarray(devices), ("pairs",)) if len(devices) > 1 else None


@functools.partial(
    jax.jit, static_argnames=("cfg", "n_steps", "n_coarse", "score_level", "two_way")
)
def _chunk_terms(c_parse, c_images, q_parse, q_images, cfg, n_steps, n_coarse, score_level,
                 two_way) -> PairTerms:
    TRACE_COUNT["pair_terms"] += 1
    return jax.vmap(
        lambda cp, ci, qp, qi: pair_terms(cp, ci, qp, qi, cfg, n_steps, n_coarse, score_level,
                                          two_way)
    )(c_parse, c_images, q_parse, q_images)


def _take(parses: Parse, index: np.ndarray, n_slots: int) -> Parse:
    """``parses`` (leading axes ``(N, K)``) at ``index int (M,)``, stroke slots cut to
    ``n_slots``."""
    return Parse(parses.points[index][:, :, :n_slots], parses.mask[index][:, :, :n_slots],
                 parses.log_weight[index], parses.log_post[index])


def score_pairs(
    c_parses: Parse,
    c_images,
    q_parses: Parse,
    q_images,
    c_index: np.ndarray,
    q_index: np.ndarray,
    cfg: BPLConfig,
    *,
    n_steps: int,
    n_coarse: int,
    score_level: int = 1,
    two_way: bool = True,
) -> PairTerms:
    """:func:`pair_terms` of the pairs ``(c_index[m], q_index[m])``: class parses and images
    with leading axis ``N_c``, query parses and images with leading axis ``N_q``, index arrays
    ``int (M,)`` -> :class:`PairTerms` of ``f32 (M, K)``.

    Pairs run in chunks of ``cfg.pair_chunk`` (one compiled shape; fewer when there are fewer
    pairs), each chunk sharded over the local devices. Pairs are sorted by the stroke slots
    their parses use (:func:`~conceptlearn.inference.fit.slot_order`; each slot size
    compiled the first time a chunk needs it), and each chunk keeps only the slots its pairs
    need. A refit's cost grows about linearly with its slots, and two thirds of the pairs of a
    dev episode need four of six or fewer. A call of a single chunk keeps all slots, so that
    it compiles one shape whatever its episode holds."""
    c_index, q_index = np.asarray(c_index, np.int32), np.asarray(q_index, np.int32)
    m = len(c_index)
    k = c_parses.mask.shape[1]
    if m == 0:
        return PairTerms(np.zeros((0, k), np.float32), np.zeros((0, k), np.float32))
    mesh = _mesh()
    n_dev = 1 if mesh is None else mesh.size
    per_call = cfg.pair_chunk or (64 if jax.default_backend() == "cpu" else 1024 * n_dev)
    # fewer pairs than a chunk: the next power of two, so that few shapes are ever compiled
    chunk = -(-min(per_call, 1 << (m - 1).bit_length()) // n_dev) * n_dev
    total = -(-m // chunk) * chunk
    slots = strokes_used(c_parses.mask).max(1)[c_index]
    if two_way:
        slots = np.maximum(slots, strokes_used(q_parses.mask).max(1)[q_index])
    order, slots = slot_order(slots, c_parses.mask.shape[2], chunk)
    c_images, q_images = jnp.asarray(c_images), jnp.asarray(q_images)
    sharding = None if mesh is None else NamedSharding(mesh, PartitionSpec("pairs"))
    statics = (cfg, n_steps, n_coarse, score_level, two_way)

    def chunk_args(pairs, n_slots):
        ci, qi = c_index[pairs], q_index[pairs]
        args = (_take(c_parses, ci, n_slots), c_images[ci], _take(q_parses, qi, n_slots),
                q_images[qi])
        return args if sharding is None else jax.device_put(args, sharding)

    out = []
    for start in range(0, total, chunk):
        pairs = order[start : start + chunk]
        # a call of one chunk keeps every slot: its slots would be the most any pair uses,
        # which changes from episode to episode, and each new size compiles (seconds)
        n_slots = int(slots[pairs].max()) if total > chunk else c_parses.mask.shape[2]
        out.append(_chunk_terms(*chunk_args(pairs, n_slots), *statics))
    sorted_terms = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *out)
    unsorted = np.empty(m, np.int64)
    unsorted[order[:m]] = np.arange(m)
    return PairTerms(*(x[unsorted] for x in sorted_terms))


def as_image(image: np.ndarray) -> np.ndarray:
    """Any 2-D image (bool or grey in [0, 1], True/1 = ink) -> ``bool (105, 105)``."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    if image.shape == (IMAGE_SIZE, IMAGE_SIZE):
        return image.astype(bool)
    from skimage.transform import resize

    grey = resize(image.astype(np.float32), (IMAGE_SIZE, IMAGE_SIZE), order=1, anti_aliasing=True)
    return grey > 0.25


class State(NamedTuple):
    """What ``fit`` learns from the support set: the parses of every support image (leading axes
    ``(n_way, k)``), the images themselves (``bool (n_way, k, 105, 105)``) and their log
    evidence ``f32 (n_way, k)``."""

    parses: Parse
    images: jax.Array
    log_evidence: jax.Array


def _flat(tree, n: int):
    return jax.tree.map(lambda x: x.reshape(n, *x.shape[2:]), tree)


def self_scores(parses: Parse, images, cfg: BPLConfig, n_steps: int, n_coarse: int,
                score_level: int = 1) -> np.ndarray:
    """Each image's parses refit to the image itself: parses with leading axis ``n``, ``images
    bool (n, 105, 105)`` -> forward terms ``f32 (n, K)``. The images are class images
    (:func:`class_image_config`)."""
    idx = np.arange(images.shape[0])
    cfg = class_image_config(cfg)
    return score_pairs(parses, images, parses, images, idx, idx, cfg, n_steps=n_steps,
                       n_coarse=n_coarse, score_level=score_level, two_way=False).forward


def log_evidence(parses: Parse, images, cfg: BPLConfig) -> np.ndarray:
    """``log P(I) ~ logsumexp_k [log w_k + refit(parse_k -> I)]`` for parses with leading axes
    ``(n, K)`` of ``images bool (n, 105, 105)`` -> ``f32 (n,)``."""
    own = self_scores(parses, images, cfg, cfg.refit_steps, cfg.refit_coarse_steps)
    return np.asarray(logsumexp(parses.log_weight + own, axis=-1))


def _log_mean_exp_over_shots(per_shot, k: int) -> np.ndarray:
    """``(n_query, n_way, k_max)`` -> ``(n_query, n_way)`` over the first ``k`` shots."""
    return np.asarray(logsumexp(jnp.asarray(per_shot[..., :k]), axis=-1) - np.log(k))


def prune_scores(state: State, q_parses: Parse, q_images, cfg: BPLConfig) -> np.ndarray:
    """The cheap score ``f32 (n_query, n_way, k)`` of every (query, shot) pair: the best parse
    each way, one refit of ``cfg.prune_steps`` long steps (``cfg.prune_lr`` from blur
    ``cfg.prune_blur``, started from the best of the grid of ``cfg.prune_start_scale`` and
    ``cfg.prune_start_rotation``) at resolution level ``cfg.prune_level`` (3: 35 px, 4: 27 px)
    and scored there, the backward term less the shot's own best parse refit the same way."""
    cfg = dataclasses.replace(cfg, refit_lr=cfg.prune_lr, blur_start=cfg.prune_blur, wide_lr=0.0,
                              refit_level=cfg.prune_level, start_scale=cfg.prune_start_scale,
                              start_rotation=cfg.prune_start_rotation)
    n_way, k = state.images.shape[:2]
    n_query = q_images.shape[0]
    best = jax.tree.map(lambda x: x[:, :, :1], state.parses)  # the best parse of each shot
    c_parses = _flat(best, n_way * k)
    c_images = state.images.reshape(n_way * k, IMAGE_SIZE, IMAGE_SIZE)
    q_best = jax.tree.map(lambda x: x[:, :1], q_parses)
    steps = dict(n_steps=cfg.prune_steps, n_coarse=cfg.prune_steps, score_level=cfg.prune_level)
    q_idx, c_idx = np.divmod(np.arange(n_query * n_way * k), n_way * k)
    terms = score_pairs(c_parses, c_images, q_best, q_images, c_idx, q_idx, cfg,
                        two_way=cfg.two_way, **steps)
    cheap = terms.forward[:, 0]
    if cfg.two_way:
        own = self_scores(c_parses, c_images, cfg, **steps)[:, 0]
        cheap = cheap + terms.backward[:, 0] - own[c_idx]
    return cheap.reshape(n_query, n_way, k)


def score_queries(
    state: State, q_parses: Parse, q_images, cfg: BPLConfig, ks: Sequence[int] | None = None
):
    """Two-way scores ``f32 (n_query, n_way)`` of parsed queries against a fitted support set;
    with ``ks``, a dict ``k -> f32 (n_query, n_way)`` that scores each ``k`` on the first ``k``
    shots of every class, exactly as a separate call on those shots would, from one set of
    pair terms.

    ``q_parses``: :class:`Parse` with leading axis ``n_query``; ``q_images bool (n_query, 105,
    105)``. Pruned-away classes get finite scores below every kept class, ordered by the
    pruning score.
    """
    n_way, k_max = state.images.shape[:2]
    sweep = [k_max] if ks is None else sorted(set(ks))
    if sweep[0] < 1 or sweep[-1] > k_max:
        raise ValueError(f"ks must lie in 1..{k_max} (the support's shots), got {list(ks)}")
    n_query = q_images.shape[0]
    width = min(cfg.prune_width, n_way)
    cheap_shots = prune_scores(state, q_parses, q_images, cfg) if width < n_way else None

    needed = np.zeros((n_query, n_way, k_max), bool)
    plans = {}
    for k in sweep:
        if cheap_shots is None:
            cheap = np.zeros((n_query, n_way), np.float32)
        else:
            cheap = _log_mean_exp_over_shots(cheap_shots, k)
        kept = np.argsort(-cheap, axis=1, kind="stable")[:, :width]  # (n_query, width)
        needed[np.arange(n_query)[:, None], kept, :k] = True
        plans[k] = (cheap, kept)

    q_idx, c_idx, s_idx = np.nonzero(needed)
    shot = c_idx * k_max + s_idx
    c_parses = _flat(state.parses, n_way * k_max)
    terms = score_pairs(
        c_parses, state.images.reshape(n_way * k_max, IMAGE_SIZE, IMAGE_SIZE), q_parses,
        q_images, shot, q_idx, cfg, n_steps=cfg.refit_steps, n_coarse=cfg.refit_coarse_steps,
        two_way=cfg.two_way,
    )
    per_pair = pair_scores(
        terms, np.asarray(c_parses.log_weight)[shot], np.asarray(q_parses.log_weight)[q_idx],
        np.asarray(state.log_evidence).reshape(-1)[shot], cfg.two_way,
    )
    per_shot = np.full((n_query, n_way, k_max), -np.inf, np.float32)
    per_shot[q_idx, c_idx, s_idx] = per_pair

    out = {}
    for k in sweep:
        cheap, kept = plans[k]
        full = np.take_along_axis(_log_mean_exp_over_shots(per_shot, k), kept, axis=1)
        # pruned classes: below the worst kept score, in the order of the cheap score
        floor = full.min(axis=1, keepdims=True) - 1.0
        scores = floor - 1e-3 * (cheap.max(axis=1, keepdims=True) - cheap)
        np.put_along_axis(scores, kept, full, axis=1)
        out[k] = scores.astype(np.float32)
    return out[k_max] if ks is None else out


class BPLContender:
    """The ``bpl`` contender (see the module docstring). ``parse_cache``: a folder for the
    content-addressed parse cache (None: no cache)."""

    name = "bpl"

    def __init__(self, cfg: BPLConfig, seed: int = 0, library: str | None = None,
                 parse_cache: str | None = None):
        self._library = None
        if library is not None and (cfg.type_prior or cfg.learned_noise):
            from conceptlearn.model.library import load_library

            self._library = load_library(library)
            cfg = learned_noise(cfg, self._library)
        if cfg.proposer:
            from conceptlearn.inference.recognition import load_proposer

            load_proposer(cfg.proposer)  # a missing or corrupt checkpoint fails here, named
        self.cfg = cfg
        self.seed = seed
        self.library = library
        self.config = {**dataclasses.asdict(cfg), "library": library}
        self._store = None
        if parse_cache is not None:
            from conceptlearn.cache import ArrayStore

            self._store = ArrayStore(parse_cache)
            # what every cached parse of this contender depends on besides its image
            fields = {f: getattr(cfg, f) for f in PARSE_FIELDS}
            if cfg.proposer:  # the proposer's weights, not its folder's name
                fields["proposer"] = hashlib.sha256(
                    (Path(cfg.proposer) / "params.npz").read_bytes()).hexdigest()
            library_arrays = None if self._library is None else [np.asarray(x) for x in self._library]
            self._parse_context = ArrayStore.key(PARSE_CACHE_VERSION, fields, seed, library_arrays)

    def parse(self, images: np.ndarray) -> Parse:
        """The parses of ``images bool (n, 105, 105)`` (leading axis ``n``), from the parse
        cache where it has them; the rest are parsed in one batch and stored."""
        images = np.asarray(images, bool)
        if self._store is None:
            return parse_images(images, self.cfg, self.seed, self._library)
        keys = [self._store.key(self._parse_context, im) for im in images]
        found = [self._store.get(key) for key in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            fresh = parse_images(images[missing], self.cfg, self.seed, self._library)
            for j, i in enumerate(missing):
                found[i] = {f: np.asarray(getattr(fresh, f)[j]) for f in Parse._fields}
                self._store.put(keys[i], found[i])
        return Parse(*(jnp.asarray(np.stack([f[name] for f in found])) for name in Parse._fields))

    def fit(self, support: np.ndarray, *, key: Any = None) -> State:
        support = np.asarray(support)
        if support.ndim != 4:
            raise ValueError(f"support must be (n_way, k, H, W), got shape {support.shape}")
        n_way, k = support.shape[:2]
        flat = np.stack([as_image(im) for im in support.reshape(n_way * k, *support.shape[2:])])
        parses = self.parse(flat)
        if self.cfg.two_way:
            evidence = log_evidence(parses, flat, self.cfg).reshape(n_way, k)
        else:
            evidence = np.zeros((n_way, k), np.float32)
        parses = jax.tree.map(lambda x: x.reshape(n_way, k, *x.shape[1:]), parses)
        images = jnp.asarray(flat.reshape(n_way, k, IMAGE_SIZE, IMAGE_SIZE))
        return State(parses, images, jnp.asarray(evidence))

    def _queries(self, queries: np.ndarray):
        queries = np.asarray(queries)
        if queries.ndim != 3:
            raise ValueError(f"queries must be (n_query, H, W), got shape {queries.shape}")
        q_images = np.stack([as_image(im) for im in queries])
        return self.parse(q_images), jnp.asarray(q_images)

    def scores(self, state: State, queries: np.ndarray, *, key: Any = None) -> np.ndarray:
        return score_queries(state, *self._queries(queries), self.cfg)

    def scores_for_ks(self, state: State, queries: np.ndarray, ks: Sequence[int], *,
                      key: Any = None) -> dict[int, np.ndarray]:
        """``k -> scores f32 (n_query, n_way)`` using the first ``k`` shots of each class: the
        same numbers as ``scores`` on a state fitted to those shots, for the cost of the
        largest ``k``."""
        return score_queries(state, *self._queries(queries), self.cfg, ks=ks)


def make_contender(
    seed: int = 0,
    library: str | None = None,
    quick: bool = False,
    overrides: dict[str, Any] | None = None,
    parse_cache: str | None = None,
) -> BPLContender:
    """The ``bpl`` contender: ``QUICK`` or ``FULL`` preset, with ``overrides`` (field -> value).
    ``library``: a library ``.npz``; None: the shipped small1 library
    (:func:`conceptlearn.shipped.default_library_path`); ``"standin"``: the stand-in prior."""
    from conceptlearn.shipped import STANDIN, default_library_path

    if library is None:
        library = str(default_library_path())
    elif library == STANDIN:
        library = None
    return BPLContender(preset(quick, overrides), seed=seed, library=library,
                        parse_cache=parse_cache)
