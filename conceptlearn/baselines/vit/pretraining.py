"""Pretrain the ViT backbone on background characters (``conceptlearn pretrain-vit``).

Each character (optionally each of its four quarter-turn rotations, as a class of its own) is a
class. The default loss is prototypical (``loss="proto"``): a batch is ``ways`` classes x
``batch // ways`` drawings; ``shots`` per class give the class mean and the rest are classified
by cosine to the means, exactly how ``vit-proto`` classifies queries. ``loss="classify"`` is a
softmax over all classes (much slower to learn here; docs/results/vit.md). Every batch is drawn
and augmented inside one jitted step (random affine, stroke thickness, translation; see
:mod:`conceptlearn.baselines.vit.augmentation`) from ink levels precomputed once for the whole
background. AdamW with linear warmup and cosine decay.
The output folder holds ``params.npz`` + ``config.json`` (what the contenders read) and
``train_state.npz`` (parameters, optimizer state, step and key in one atomic file), from which an
interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from conceptlearn.baselines.vit.augmentation import AugmentConfig, augment, ink_levels
from conceptlearn.baselines.vit.checkpoint import (
    CheckpointError,
    flatten_tree,
    read_npz,
    save_checkpoint,
    unflatten_like,
    write_npz,
)
from conceptlearn.baselines.vit.model import PRESETS, ViTConfig, _normalize, init_classifier

BACKGROUNDS = {"small1": "small1", "small2": "small2", "full": "background"}
# The schedule grows with the background: TrainConfig's 1,200 steps for small1's 136 characters.
STEPS_PER_CHARACTER = 1200 / 136


def scaled_steps(n_chars: int) -> int:
    """Optimizer steps for a background of ``n_chars`` characters (1,200 for small1)."""
    return max(1, round(STEPS_PER_CHARACTER * n_chars))


@dataclass(frozen=True)
class TrainConfig:
    """Pretraining hyperparameters."""

    steps: int = 1200  # optimizer steps
    batch: int = 128  # images per step
    lr: float = 3e-3  # peak learning rate
    warmup_frac: float = 0.1  # fraction of steps with linear warmup
    weight_decay: float = 0.05
    clip: float = 1.0  # global gradient-norm clip
    label_smoothing: float = 0.0  # classify only
    rot_classes: bool = True  # each quarter-turn rotation of a character is a new class
    loss: str = "proto"  # "proto" (episodic, see below) | "classify" (softmax over classes)
    ways: int = 64  # proto: classes per batch (batch must be a multiple)
    shots: int = 1  # proto: support images per class; the other batch // ways - shots are queries
    head: str = "linear"  # classify head: "linear" (zero-init) or "cosine"
    head_scale: float = 10.0  # initial temperature of the cosine head (learned)
    augment: AugmentConfig = AugmentConfig()
    ckpt_every: int = 250  # steps between checkpoints
    seed: int = 0


def background_name(background: str | Sequence[str]) -> str:
    """One name for a background set or several (``"small1+small2"``)."""
    return background if isinstance(background, str) else "+".join(background)


def load_background(background: str | Sequence[str], root=None) -> np.ndarray:
    """Background characters ``bool (n_chars, 20, 105, 105)`` of ``small1``, ``small2`` or
    ``full``, or of several of them together (a sequence, e.g. ``["small1", "small2"]``; a
    character in more than one, as Greek and Latin are in both minimal splits, is taken once)."""
    from conceptlearn.datasets.omniglot import OmniglotImages

    names = [background] if isinstance(background, str) else list(background)
    unknown = [name for name in names if name not in BACKGROUNDS]
    if unknown or not names:
        raise ValueError(f"unknown --background {unknown}; choose from {sorted(BACKGROUNDS)}")
    arrays, seen = [], set()
    for name in names:
        images = OmniglotImages(BACKGROUNDS[name], root)
        new = [c for c in images.all_characters() if c not in seen]
        seen.update(new)
        if new:
            arrays.append(images.character_array(new)[0])
    return np.concatenate(arrays)


def make_optimizer(tcfg: TrainConfig) -> optax.GradientTransformation:
    warmup = max(1, int(tcfg.warmup_frac * tcfg.steps))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, tcfg.lr, warmup, max(tcfg.steps, warmup + 1), tcfg.lr * 0.01
    )
    return optax.chain(
        optax.clip_by_global_norm(tcfg.clip), optax.adamw(schedule, weight_decay=tcfg.weight_decay)
    )


def n_classes(n_chars: int, tcfg: TrainConfig) -> int:
    return n_chars * (4 if tcfg.rot_classes else 1)


def check_train_config(tcfg: TrainConfig) -> None:
    """Raise ``ValueError`` for an inconsistent :class:`TrainConfig`."""
    if tcfg.loss not in ("classify", "proto"):
        raise ValueError(f"unknown loss {tcfg.loss!r}; choose classify or proto")
    if tcfg.loss == "proto" and (tcfg.batch % tcfg.ways or tcfg.batch // tcfg.ways <= tcfg.shots):
        raise ValueError(
            f"proto batch {tcfg.batch} must be ways ({tcfg.ways}) x (shots ({tcfg.shots}) + >= 1 query)"
        )


def head_of(tcfg: TrainConfig, n_chars: int) -> tuple[str, int]:
    """The pretraining classifier's ``(head kind, n_classes)``: proto training only uses the
    cosine head's temperature."""
    return ("cosine", 1) if tcfg.loss == "proto" else (tcfg.head, n_classes(n_chars, tcfg))


@jax.jit
def background_levels(data: jax.Array) -> jax.Array:
    """``bool (n_chars, 20, 105, 105)`` -> ``float32 (n_chars, 20, 4, 35, 35)`` ink levels
    (:func:`~conceptlearn.baselines.vit.augmentation.ink_levels`), one character at a time."""
    return jax.lax.map(jax.vmap(ink_levels), data)


def sample_batch(
    key: jax.Array, data: jax.Array, tcfg: TrainConfig, size: int
) -> tuple[jax.Array, jax.Array]:
    """Draw and augment a batch: data = :func:`background_levels`
    ``float32 (n_chars, 20, 4, 35, 35)`` -> images ``float32 (batch, size, size)``, labels
    ``int (batch,)``."""
    n_chars, n_drawers = data.shape[:2]
    k_char, k_drawer, k_rot, k_aug = jax.random.split(key, 4)
    if tcfg.loss == "proto":  # ways distinct classes x m distinct drawers, class-major order
        m = tcfg.batch // tcfg.ways
        classes = jax.random.choice(k_char, n_classes(n_chars, tcfg), (tcfg.ways,), replace=False)
        per_class = jax.vmap(lambda k: jax.random.choice(k, n_drawers, (m,), replace=False))
        drawers = per_class(jax.random.split(k_drawer, tcfg.ways)).ravel()
        classes = classes.repeat(m)
        chars, rots = (classes // 4, classes % 4) if tcfg.rot_classes else (classes, 0 * classes)
        labels = jnp.arange(tcfg.ways).repeat(m)
    else:
        chars = jax.random.randint(k_char, (tcfg.batch,), 0, n_chars)
        drawers = jax.random.randint(k_drawer, (tcfg.batch,), 0, n_drawers)
        rots = (
            jax.random.randint(k_rot, (tcfg.batch,), 0, 4)
            if tcfg.rot_classes
            else jnp.zeros(tcfg.batch, jnp.int32)
        )
        labels = chars * 4 + rots if tcfg.rot_classes else chars
    images = jax.vmap(lambda k, im, r: augment(k, im, tcfg.augment, size, r))(
        jax.random.split(k_aug, tcfg.batch), data[chars, drawers], rots
    )
    return images, labels


def loss_fn(
    model, images: jax.Array, labels: jax.Array, *, n_out: int, smoothing: float, key=None
) -> jax.Array:
    """Mean label-smoothed cross-entropy of ``model`` on one batch."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, n_out), smoothing)
    return optax.softmax_cross_entropy(model(images, key=key), targets).mean()


def proto_loss_fn(model, images: jax.Array, *, ways: int, shots: int, key=None) -> jax.Array:
    """Prototypical loss on a class-major batch ``(ways * m, size, size)``: each class's first
    ``shots`` images give its mean feature; its other ``m - shots`` images are classified by
    ``scale * cos(feature, class mean)`` (the cosine head's learned temperature), as vit-proto
    classifies queries."""
    features = model.backbone(images, key=key)
    features = features.reshape(ways, -1, features.shape[-1])  # (ways, m, width)
    protos = _normalize(features[:, :shots].mean(axis=1))  # (ways, width)
    queries = _normalize(features[:, shots:])  # (ways, m - shots, width)
    logits = jnp.exp(model.head.log_scale[...]) * (queries @ protos.T)  # (ways, m - shots, ways)
    targets = jnp.broadcast_to(jnp.arange(ways)[:, None], logits.shape[:2])
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def batch_loss(
    model, images: jax.Array, labels: jax.Array, tcfg: TrainConfig, n_out: int, *, key=None
) -> jax.Array:
    """The training loss ``tcfg.loss`` of ``model`` on a batch from :func:`sample_batch`."""
    if tcfg.loss == "proto":
        return proto_loss_fn(model, images, ways=tcfg.ways, shots=tcfg.shots, key=key)
    return loss_fn(model, images, labels, n_out=n_out, smoothing=tcfg.label_smoothing, key=key)


@functools.lru_cache(maxsize=8)
def make_train_step(graphdef: nnx.GraphDef, cfg: ViTConfig, tcfg: TrainConfig, n_out: int):
    """A jitted ``step(params, opt_state, data, key) -> (params, opt_state, loss)`` and the
    optimizer; cached, so repeated runs with the same configs compile once."""
    opt = make_optimizer(tcfg)

    @jax.jit
    def step(params, opt_state, data, key):
        k_batch, k_drop = jax.random.split(key)
        images, labels = sample_batch(k_batch, data, tcfg, cfg.image_size)

        def loss(p):
            drop = k_drop if cfg.dropout > 0 else None
            return batch_loss(nnx.merge(graphdef, p), images, labels, tcfg, n_out, key=drop)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step, opt


def _meta(
    cfg: ViTConfig,
    tcfg: TrainConfig,
    background: str,
    step: int,
    seconds: float,
    loss: float | None = None,
    curve: list | None = None,
) -> dict[str, Any]:
    return json.loads(
        json.dumps(
            {
                "train": dataclasses.asdict(tcfg),
                "background": background,
                "step": step,
                "train_seconds": seconds,
                "train_loss": loss,  # running mean of the batch loss (EMA 0.9 every 10 steps)
                "loss_curve": curve or [],  # [step, running mean] every 10 steps
                "device": str(jax.devices()[0].device_kind),
            }
        )
    )


def pretrain(
    out: str | Path,
    *,
    background: str | Sequence[str] = "small1",
    cfg: ViTConfig = PRESETS["cpu"],
    tcfg: TrainConfig = TrainConfig(),
    root=None,
    data: np.ndarray | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) into folder ``out``; returns the final ``config.json`` dict.

    ``data`` (``bool (n_chars, 20, 105, 105)``) replaces loading ``background`` (for tests).
    Resuming requires the same model and training configs; a mismatch raises ``ValueError``.
    """
    out = Path(out)
    data = load_background(background, root) if data is None else np.asarray(data, bool)
    background = background_name(background)
    check_train_config(tcfg)
    head, n_out = head_of(tcfg, data.shape[0])
    graphdef, params = init_classifier(cfg, n_out, tcfg.seed, tcfg.head_scale, head)
    step_fn, opt = make_train_step(graphdef, cfg, tcfg, n_out)
    opt_state = opt.init(params)
    key = jax.random.key(tcfg.seed)
    start, seconds, curve = 0, 0.0, []
    meta = _meta(cfg, tcfg, background, 0, 0.0)

    state_path = out / "train_state.npz"
    if state_path.exists():
        previous = (
            json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
        )
        wanted = {
            "model": dataclasses.asdict(cfg),
            "train": meta["train"],
            "background": background,
        }
        if any(
            json.loads(json.dumps(previous.get(k))) != json.loads(json.dumps(v))
            for k, v in wanted.items()
        ):
            raise ValueError(
                f"{out} holds a run with a different config; choose another --out or delete it"
            )
        arrays = read_npz(state_path)
        template = {"params": params, "opt": opt_state}
        restored = unflatten_like(template, arrays, str(state_path))
        params, opt_state = restored["params"], restored["opt"]
        try:
            start, seconds = int(arrays["__step__"]), float(arrays["__seconds__"])
            key = jax.random.wrap_key_data(jnp.asarray(arrays["__key__"]))
            curve = np.asarray(arrays.get("__curve__", np.zeros((0, 2))), float).tolist()
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"{state_path}: corrupt training state ({err})") from err

    def checkpoint(step: int, elapsed: float) -> None:
        arrays = flatten_tree({"params": params, "opt": opt_state})
        arrays |= {
            "__step__": np.asarray(step),
            "__seconds__": np.asarray(elapsed),
            "__key__": np.asarray(jax.random.key_data(key)),
            "__curve__": np.asarray(curve, float).reshape(-1, 2),
        }
        out.mkdir(parents=True, exist_ok=True)
        write_npz(state_path, arrays)
        save_checkpoint(
            out, cfg, params, _meta(cfg, tcfg, background, step, elapsed, running, curve)
        )

    device_data = background_levels(jnp.asarray(data))
    bar = tqdm(
        total=tcfg.steps, initial=start, desc="pretrain-vit", unit="step", disable=not progress
    )
    t0 = time.perf_counter() - seconds
    running = curve[-1][1] if curve else None
    for step in range(start, tcfg.steps):
        key, sub = jax.random.split(key)
        params, opt_state, loss = step_fn(params, opt_state, device_data, sub)
        if (step + 1) % 10 == 0 or step + 1 == tcfg.steps:
            value = float(loss)
            running = value if running is None else 0.9 * running + 0.1 * value
            curve.append([step + 1, running])
            bar.set_postfix(loss=f"{running:.3f}")
        bar.update(1)
        if (step + 1) % tcfg.ckpt_every == 0 or step + 1 == tcfg.steps:
            checkpoint(step + 1, time.perf_counter() - t0)
    bar.close()
    if start >= tcfg.steps and not (out / "params.npz").exists():
        checkpoint(start, seconds)
    return json.loads((out / "config.json").read_text())


def configs_from_overrides(
    preset: str = "cpu", overrides: dict[str, Any] | None = None, *, seed: int = 0
) -> tuple[ViTConfig, TrainConfig]:
    """Model and training configs: architecture ``preset`` and ``TrainConfig(seed=seed)`` with
    ``overrides`` (``--set KEY=VALUE``, parsed) on top; a key reaches either dataclass, and
    ``aug_<field>`` the augmentation."""
    cfg = PRESETS[preset]
    tcfg = TrainConfig(seed=seed)
    model_fields = {f.name for f in dataclasses.fields(ViTConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    aug_fields = {f.name for f in dataclasses.fields(AugmentConfig)}
    for key, value in (overrides or {}).items():
        if key in model_fields:
            cfg = dataclasses.replace(cfg, **{key: value})
        elif key in train_fields and key != "augment":
            tcfg = dataclasses.replace(tcfg, **{key: value})
        elif key.startswith("aug_") and key[4:] in aug_fields:
            value = tuple(value) if isinstance(value, list) else value
            tcfg = dataclasses.replace(
                tcfg, augment=dataclasses.replace(tcfg.augment, **{key[4:]: value})
            )
        else:
            raise ValueError(
                f"--set {key}: unknown; choose from {sorted(model_fields | train_fields)} or aug_<field>"
            )
    return cfg, tcfg
