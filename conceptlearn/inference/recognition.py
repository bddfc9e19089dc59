"""A learned proposer (amortised inference): image -> stroke-trajectory proposals.

A small convolutional network reads an image at half resolution (``coarse_target``, 53 x 53)
and predicts a set of ``S`` stroke slots, each with

- ``points f32 (P, 2)``: the stroke's trajectory in image coordinates ``(col, row)``;
- an existence logit (is there a stroke in this slot?);
- a flip logit (was the stroke drawn the other way round?);
- an order score (where the stroke comes in the drawing order, ``index / S``).

The slots are a set: training matches them to the true strokes by the permutation of least
cost (all ``S!`` permutations, enumerated in the jitted loss; 720 for ``S = 6``), taking each
stroke's direction that fits better, as DETR does with the Hungarian algorithm. Order and
direction are then learned as separate outputs, so an uncertain direction never averages a
stroke into a point.

Training data (:func:`training_pools`) are trajectories with known strokes, rendered on the fly
by the generative model's ink model and thresholded, like an Omniglot scan:

- the background drawings' pen strokes (image -> strokes pairs);
- unlimited samples of the generative model (type -> token, trajectories known).

:func:`propose_learned` turns the network's slots into up to ``n`` parse candidates of the
layout of :mod:`conceptlearn.inference.proposals` (existence thresholds give different stroke
counts; slots sorted by the order score; strokes shorter than 2 px become dots). They enter the
same refinement, ``log P(type)`` weighting and ranking as the skeleton walks' candidates
(:func:`conceptlearn.inference.fit.propose_batch`), so the model decides which parse wins.

Checkpoints are a folder of ``params.npz`` and ``config.json`` (no pickle).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from scipy import ndimage

from conceptlearn.baselines.vit.checkpoint import (
    CheckpointError,
    flatten_tree,
    read_npz,
    unflatten_like,
    write_folder,
    write_npz,
)
from conceptlearn.inference.proposals import _resample, thin
from conceptlearn.model.image import coarse_target
from conceptlearn.model.render import DEFAULT_INK, IMAGE_SIZE, InkParams, render

COARSE = 2  # the network reads images at this level (53 x 53)
DOT_PX = 2.0  # a predicted stroke shorter than this is proposed as a dot
THRESHOLDS = (0.5, 0.3, 0.7, 0.15, 0.85)  # existence thresholds of the candidates, in order


@dataclass(frozen=True)
class ProposerConfig:
    """The network: ``max_strokes`` slots of ``n_points`` points each."""

    max_strokes: int = 6
    n_points: int = 16
    channels: tuple[int, ...] = (32, 64, 128)  # stride-2 3x3 convolutions: 53 -> 27 -> 14 -> 7
    hidden: int = 512


@dataclass(frozen=True)
class ProposerTrainConfig:
    """Training: steps, batch, optimiser, data mix and augmentation."""

    steps: int = 10000
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 200
    model_share: float = 0.5  # share of each batch drawn from generative-model samples
    n_model_samples: int = 4000  # size of the pool of model samples
    scale_sd: float = 0.1  # log scale of the random affine applied before rendering
    rotate_sd: float = 0.1  # rad
    shear_sd: float = 0.05
    shift_sd: float = 4.0  # px
    width_sd: float = 0.25  # log pen width (gain) multiplier
    exist_weight: float = 4.0  # nats of existence loss per px of trajectory distance
    flip_weight: float = 1.0
    order_weight: float = 10.0
    ckpt_every: int = 500
    seed: int = 0


PRESETS: dict[str, ProposerTrainConfig] = {
    "cpu": ProposerTrainConfig(),  # 18 min of steps + 2 of model samples on 2 CPU cores
    "gpu": ProposerTrainConfig(steps=40000, batch=256, n_model_samples=50000),  # not yet run
    "tiny": ProposerTrainConfig(steps=30, batch=8, n_model_samples=64, warmup=5, ckpt_every=10),
}


class Slots(NamedTuple):
    """The network's output for a batch: ``points f32 (B, S, P, 2)``, ``exist``, ``flip`` and
    ``order`` logits / scores ``f32 (B, S)``."""

    points: jax.Array
    exist: jax.Array
    flip: jax.Array
    order: jax.Array


class Proposer(nnx.Module):
    """Image ``f32 (B, 53, 53)`` (ink share per 2 x 2 block) -> :class:`Slots`."""

    def __init__(self, cfg: ProposerConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        n_in = 3  # ink plus two coordinate channels
        convs = []
        for width in cfg.channels:
            convs.append(nnx.Conv(n_in, width, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs))
            n_in = width
        self.convs = nnx.List(convs)
        side = 53
        for _ in cfg.channels:
            side = -(-side // 2)
        self.hidden = nnx.Linear(side * side * n_in, cfg.hidden, rngs=rngs)
        S, P = cfg.max_strokes, cfg.n_points
        self.points = nnx.Linear(
            cfg.hidden, S * P * 2, kernel_init=nnx.initializers.normal(1e-3), rngs=rngs
        )
        self.heads = nnx.Linear(cfg.hidden, S * 3, rngs=rngs)

    def __call__(self, images: jax.Array) -> Slots:
        b, n = images.shape[0], images.shape[-1]
        grid = jnp.linspace(-1.0, 1.0, n, dtype=jnp.float32)
        cols = jnp.broadcast_to(grid[None, :], (n, n))
        coords = jnp.broadcast_to(jnp.stack([cols, cols.T], -1), (b, n, n, 2))
        x = jnp.concatenate([images[..., None], coords], axis=-1)
        for conv in self.convs:
            x = jax.nn.gelu(conv(x))
        x = jax.nn.gelu(self.hidden(x.reshape(b, -1)))
        S, P = self.cfg.max_strokes, self.cfg.n_points
        half = IMAGE_SIZE / 2
        points = half + half * self.points(x).reshape(b, S, P, 2)
        exist, flip, order = jnp.moveaxis(self.heads(x).reshape(b, S, 3), -1, 0)
        return Slots(points, exist, flip, order)


# --------------------------------------------------------------------------- training data


class StrokeSets(NamedTuple):
    """Drawings as fixed-size stroke sets: ``points f32 (N, S, P, 2)`` (each stroke resampled
    uniformly in arc length; a dot repeats its point), ``exists bool (N, S)`` (the first
    ``n_strokes`` slots, in drawing order)."""

    points: np.ndarray
    exists: np.ndarray


def stroke_set(strokes: Sequence[np.ndarray], max_strokes: int, n_points: int):
    """One drawing's strokes (``float (m_i, >=2)`` in ``(col, row)``) -> ``points f32 (S, P, 2)``,
    ``exists bool (S,)``; with more than ``S`` strokes, the ``S`` longest, in drawing order."""
    strokes = [np.asarray(s, np.float64)[:, :2] for s in strokes if len(s)]
    if len(strokes) > max_strokes:
        lengths = [np.linalg.norm(np.diff(s, axis=0), axis=1).sum() for s in strokes]
        keep = sorted(np.argsort(lengths)[::-1][:max_strokes])
        strokes = [strokes[i] for i in keep]
    points = np.zeros((max_strokes, n_points, 2), np.float32)
    exists = np.zeros(max_strokes, bool)
    for i, s in enumerate(strokes):
        points[i] = _resample(s, n_points)[0]
        exists[i] = True
    return points, exists


def background_stroke_sets(splits: Sequence[str], cfg: ProposerConfig, data=None) -> StrokeSets:
    """Every drawing of the background splits' stroke files as :class:`StrokeSets`."""
    from conceptlearn.datasets.omniglot import OmniglotStrokes

    sets, seen = [], set()
    for split in splits:
        strokes = OmniglotStrokes(split, data)
        for alphabet, character in strokes.all_characters():
            if (alphabet, character) in seen:  # small1 and small2 share two alphabets
                continue
            seen.add((alphabet, character))
            for key in strokes.keys(alphabet, character):
                sets.append(stroke_set(strokes.strokes(key), cfg.max_strokes, cfg.n_points))
    if not sets:
        raise ValueError(f"no drawings in the stroke splits {list(splits)}")
    points, exists = zip(*sets, strict=True)
    return StrokeSets(np.stack(points), np.stack(exists))


def model_stroke_sets(library, n: int, cfg: ProposerConfig, seed: int = 0) -> StrokeSets:
    """``n`` tokens sampled from the generative model (new types, each token inside the
    canvas), as :class:`StrokeSets` of their true trajectories."""
    from conceptlearn.model.sample import sample_token_in_canvas, sample_type_in_canvas
    from conceptlearn.model.token import token_trajectories

    @jax.jit
    def draw(key):
        type_key, token_key = jax.random.split(key)
        type_ = sample_type_in_canvas(library, key=type_key)
        return token_trajectories(sample_token_in_canvas(library, type_, key=token_key))

    keys = jax.random.split(jax.random.key(seed), n)
    points, mask = jax.device_get(jax.lax.map(draw, keys, batch_size=256))
    sets = [
        stroke_set(
            [p[m] for p, m in zip(pts, msk, strict=True) if m.any()], cfg.max_strokes, cfg.n_points
        )
        for pts, msk in zip(points, mask, strict=True)
    ]
    out_points, exists = zip(*sets, strict=True)
    return StrokeSets(np.stack(out_points), np.stack(exists))


def _affine(key, tcfg: ProposerTrainConfig) -> jax.Array:
    """A random ``f32 (2, 3)`` map about the image centre (scale, rotation, shear, shift)."""
    k = jax.random.normal(key, (6,))
    scale = jnp.exp(tcfg.scale_sd * k[:2])
    angle, shear = tcfg.rotate_sd * k[2], tcfg.shear_sd * k[3]
    rot = jnp.array([[jnp.cos(angle), -jnp.sin(angle)], [jnp.sin(angle), jnp.cos(angle)]])
    linear = rot @ jnp.array([[1.0, shear], [0.0, 1.0]]) @ jnp.diag(scale)
    centre = jnp.full(2, (IMAGE_SIZE - 1) / 2)
    return jnp.concatenate([linear, (centre - linear @ centre + tcfg.shift_sd * k[4:])[:, None]], 1)


def render_example(points, exists, key, tcfg: ProposerTrainConfig):
    """One training example: a stroke set moved by a random affine map, rendered by the ink
    model with a random pen and thresholded at 1/2, read at the network's level -> ``(image f32
    (53, 53), points f32 (S, P, 2))``."""
    affine_key, pen_key = jax.random.split(key)
    a = _affine(affine_key, tcfg)
    moved = points @ a[:, :2].T + a[None, None, :, 2]
    gain = DEFAULT_INK.gain * jnp.exp(tcfg.width_sd * jax.random.normal(pen_key))
    mask = jnp.broadcast_to(exists[:, None], points.shape[:2])
    ink = render(moved, mask, InkParams(DEFAULT_INK.spread, gain), n_samples=96)
    return coarse_target(ink > 0.5, COARSE), moved


# --------------------------------------------------------------------------- the set loss


@functools.lru_cache(maxsize=8)
def _permutations(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))), np.int32)  # (n!, n)


def set_loss(slots: Slots, points, exists, tcfg: ProposerTrainConfig) -> jax.Array:
    """The loss of one example: ``slots`` unbatched (``points f32 (S, P, 2)``, logits ``(S,)``),
    true ``points f32 (S, P, 2)``, ``exists bool (S,)``. Slot ``i`` is matched to true stroke
    ``perm[i]`` by the permutation of least cost (trajectory distance, the better direction, plus
    the existence loss); matched real strokes also pay the flip and order losses."""
    S = exists.shape[0]
    forward = jnp.linalg.norm(slots.points[:, None] - points[None], axis=-1).mean(-1)  # (S, S)
    backward = jnp.linalg.norm(slots.points[:, None] - points[None, :, ::-1], axis=-1).mean(-1)
    distance = jnp.minimum(forward, backward)
    flipped = backward < forward
    real = exists.astype(jnp.float32)
    exist_loss = optax.sigmoid_binary_cross_entropy(slots.exist[:, None], real[None, :])  # (S, S)
    cost = real[None, :] * distance + tcfg.exist_weight * exist_loss
    perms = jnp.asarray(_permutations(S))
    rows = jnp.arange(S)
    best = perms[jnp.argmin(jax.lax.stop_gradient(cost)[rows, perms].sum(-1))]  # (S,)
    matched_real = real[best]
    flip_loss = optax.sigmoid_binary_cross_entropy(
        slots.flip, flipped[rows, best].astype(jnp.float32)
    )
    order_loss = (slots.order - best / S) ** 2
    per_slot = cost[rows, best] + matched_real * (
        tcfg.flip_weight * flip_loss + tcfg.order_weight * order_loss
    )
    return per_slot.sum()


def batch_loss(model: Proposer, images, points, exists, tcfg: ProposerTrainConfig):
    """Mean :func:`set_loss` over a batch (``images f32 (B, 53, 53)``)."""
    slots = model(images)
    return jnp.mean(jax.vmap(lambda s, p, e: set_loss(s, p, e, tcfg))(slots, points, exists))


# --------------------------------------------------------------------------- checkpoints


def _template(cfg: ProposerConfig) -> tuple[nnx.GraphDef, nnx.State]:
    return nnx.split(Proposer(cfg, nnx.Rngs(0)))


def save_proposer(
    folder: str | os.PathLike, cfg: ProposerConfig, params: nnx.State, meta: dict[str, Any]
) -> None:
    """Write ``folder/params.npz`` and ``folder/config.json`` (atomically)."""
    write_folder(folder, params, {"model": dataclasses.asdict(cfg), **meta})


def read_proposer_config(folder: str | os.PathLike) -> tuple[ProposerConfig, dict[str, Any]]:
    path = Path(folder) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{path}: not found (is {folder} a train-proposer checkpoint?)")
    try:
        config = json.loads(path.read_text())
        model = config["model"]
        cfg = ProposerConfig(**{**model, "channels": tuple(model["channels"])})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path}: corrupt proposer config ({type(err).__name__}: {err})"
        ) from err
    return cfg, config


@functools.lru_cache(maxsize=4)
def load_proposer(folder: str | os.PathLike) -> tuple[ProposerConfig, nnx.GraphDef, nnx.State]:
    """A trained proposer from its folder -> ``(cfg, graphdef, params)``; errors name the file."""
    cfg, _ = read_proposer_config(folder)
    graphdef, template = _template(cfg)
    params = unflatten_like(
        template, read_npz(Path(folder) / "params.npz"), str(Path(folder) / "params.npz")
    )
    return cfg, graphdef, params


# --------------------------------------------------------------------------- training


def train_proposer(
    out: str | os.PathLike,
    pools: Sequence[StrokeSets],
    tcfg: ProposerTrainConfig,
    cfg: ProposerConfig = ProposerConfig(),
    meta: dict[str, Any] | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train on ``pools`` = (background stroke sets, model stroke sets); ``tcfg.model_share``
    of each batch comes from the second. Saves to ``out`` every ``tcfg.ckpt_every`` steps
    (parameters, optimiser state and the loss curve) and resumes from a partial run there.
    Returns the checkpoint's config dict (with ``loss_curve``: ``[step, running mean]`` every
    10 steps)."""
    out = Path(out)
    real, samples = pools
    n_model = int(round(tcfg.batch * tcfg.model_share)) if len(samples.points) else 0
    n_real = tcfg.batch - n_model
    graphdef, params = nnx.split(Proposer(cfg, nnx.Rngs(tcfg.seed)))
    warmup = min(tcfg.warmup, tcfg.steps // 10)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, tcfg.lr, warmup, max(tcfg.steps, warmup + 1), tcfg.lr * 0.05
    )
    optimiser = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4)
    )
    opt_state = optimiser.init(params)
    start, curve, running, seconds_before = 0, [], None, 0.0
    state_file = out / "train_state.npz"
    if state_file.exists() and (out / "config.json").exists():
        _, config = read_proposer_config(out)
        arrays = read_npz(state_file)
        params = unflatten_like(
            params, {k[2:]: v for k, v in arrays.items() if k.startswith("p/")}, str(state_file)
        )
        opt_state = unflatten_like(
            opt_state, {k[2:]: v for k, v in arrays.items() if k.startswith("o/")}, str(state_file)
        )
        start, curve = int(config["step"]), list(config.get("loss_curve", []))
        running = curve[-1][1] if curve else None
        seconds_before = float(config.get("train_seconds", 0.0))
    real_points, real_exists = jnp.asarray(real.points), jnp.asarray(real.exists)
    sample_points, sample_exists = jnp.asarray(samples.points), jnp.asarray(samples.exists)

    @jax.jit
    def step(params, opt_state, key):
        real_key, sample_key, render_key = jax.random.split(key, 3)
        ri = jax.random.randint(real_key, (n_real,), 0, real_points.shape[0])
        points, exists = real_points[ri], real_exists[ri]
        if n_model:
            si = jax.random.randint(sample_key, (n_model,), 0, sample_points.shape[0])
            points = jnp.concatenate([points, sample_points[si]])
            exists = jnp.concatenate([exists, sample_exists[si]])
        keys = jax.random.split(render_key, tcfg.batch)
        images, moved = jax.vmap(lambda p, e, k: render_example(p, e, k, tcfg))(
            points, exists, keys
        )

        def loss_fn(p):
            return batch_loss(nnx.merge(graphdef, p), images, moved, exists, tcfg)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    began = time.perf_counter()
    base_key = jax.random.key(tcfg.seed)

    def save(step_done: int) -> dict[str, Any]:
        config = {
            **(meta or {}),
            "train": dataclasses.asdict(tcfg),
            "step": step_done,
            "train_seconds": seconds_before + time.perf_counter() - began,
            "loss_curve": curve,
        }
        save_proposer(out, cfg, params, config)
        arrays = {f"p/{k}": v for k, v in flatten_tree(params).items()}
        arrays.update({f"o/{k}": v for k, v in flatten_tree(opt_state).items()})
        write_npz(state_file, arrays)
        return config

    config: dict[str, Any] = {}
    for i in range(start, tcfg.steps):
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(base_key, i))
        if (i + 1) % 10 == 0 or i + 1 == tcfg.steps:
            value = float(loss)
            running = value if running is None else 0.9 * running + 0.1 * value
            curve.append([i + 1, round(running, 4)])
            if progress is not None:
                progress(i + 1, running)
        if (i + 1) % tcfg.ckpt_every == 0 or i + 1 == tcfg.steps:
            config = save(i + 1)
    if not config:  # nothing left to train
        config = read_proposer_config(out)[1]
    load_proposer.cache_clear()
    return config


# --------------------------------------------------------------------------- proposing


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, params, images) -> Slots:
    model = nnx.merge(graphdef, params)
    return model(jax.vmap(lambda im: coarse_target(im, COARSE))(images))


def _chunk() -> int:
    return 32 if jax.default_backend() == "cpu" else 512


def predict_slots(proposer, images: np.ndarray) -> Slots:
    """The network's slots of ``images bool (N, 105, 105)`` (fixed-size chunks: one compile)
    -> :class:`Slots` of numpy arrays with leading axis ``N``."""
    _, graphdef, params = proposer
    n, chunk = len(images), _chunk()
    out = []
    for start in range(0, n, chunk):
        part = np.asarray(images[start : start + chunk], bool)
        padded = np.concatenate([part, np.zeros((chunk - len(part), *part.shape[1:]), bool)])
        slots = _forward(graphdef, params, jnp.asarray(padded))
        out.append(Slots(*(np.asarray(x)[: len(part)] for x in slots)))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *out)


def snap_to_skeleton(strokes: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Move every point of ``strokes f32 (S, P, 2)`` to the nearest pixel of ``image bool (105,
    105)``'s skeleton (the walks' skeleton), then resample each stroke evenly in arc length:
    the network gives the strokes' number, order and rough course, the ink their place."""
    skeleton = thin(image)
    if not skeleton.any():
        return strokes
    _, (near_row, near_col) = ndimage.distance_transform_edt(~skeleton, return_indices=True)
    n = image.shape[0]
    cols = np.clip(np.rint(strokes[..., 0]), 0, n - 1).astype(int)
    rows = np.clip(np.rint(strokes[..., 1]), 0, n - 1).astype(int)
    snapped = np.stack([near_col[rows, cols], near_row[rows, cols]], -1).astype(np.float64)
    return np.stack([_resample(stroke, strokes.shape[1])[0] for stroke in snapped])


def slots_to_candidates(
    slots: Slots, n_candidates: int, max_strokes: int, n_points: int, image=None
):
    """One image's slots (unbatched numpy) -> ``points f32 (C, S, P, 2)``, ``mask bool (C, S,
    P)``, ``valid bool (C,)``: one candidate per existence threshold of :data:`THRESHOLDS`
    (at least the most likely slot; repeats of an earlier candidate's slot set are invalid),
    strokes in the order of the order score, flipped where the flip logit is positive; with
    ``image bool (105, 105)``, snapped to its skeleton (:func:`snap_to_skeleton`)."""
    C, S, P = n_candidates, max_strokes, n_points
    points = np.zeros((C, S, P, 2), np.float32)
    mask = np.zeros((C, S, P), bool)
    valid = np.zeros(C, bool)
    if slots.points.shape[:2] != (S, P):
        raise ValueError(
            f"proposer slots {slots.points.shape[:2]} do not match the parse's "
            f"(max_strokes, n_points) = {(S, P)}"
        )
    prob = 1.0 / (1.0 + np.exp(-slots.exist))
    strokes = np.where((slots.flip > 0)[:, None, None], slots.points[:, ::-1], slots.points)
    if image is not None:
        strokes = snap_to_skeleton(strokes, np.asarray(image, bool))
    length = np.linalg.norm(np.diff(strokes, axis=1), axis=-1).sum(-1)
    seen = set()
    for c, threshold in enumerate(THRESHOLDS[:C]):
        chosen = np.nonzero(prob > threshold)[0]
        if len(chosen) == 0:
            chosen = np.array([int(np.argmax(prob))])
        chosen = chosen[np.argsort(slots.order[chosen], kind="stable")]
        if tuple(chosen) in seen:
            continue
        seen.add(tuple(chosen))
        for s, slot in enumerate(chosen):
            points[c, s] = strokes[slot]
            mask[c, s] = True if length[slot] >= DOT_PX else np.arange(P) == 0
        valid[c] = True
    return points, mask, valid


def propose_learned(
    proposer, images: np.ndarray, n_candidates: int, max_strokes: int, n_points: int
) -> list[np.ndarray]:
    """Learned candidates of ``images bool (N, 105, 105)``: ``points f32 (N, C, S, P, 2)``,
    ``mask bool (N, C, S, P)``, ``valid bool (N, C)`` (:func:`slots_to_candidates`, snapped to
    each image's skeleton)."""
    slots = predict_slots(proposer, images)
    per_image = [
        slots_to_candidates(
            jax.tree.map(lambda x, i=i: x[i], slots),
            n_candidates,
            max_strokes,
            n_points,
            images[i],
        )
        for i in range(len(images))
    ]
    return [np.stack(xs) for xs in zip(*per_image, strict=True)]
