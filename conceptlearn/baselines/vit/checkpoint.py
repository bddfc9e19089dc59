"""ViT checkpoints without pickle: a folder of ``params.npz`` (the flat parameter pytree,
``"path/to/leaf" -> array``) and ``config.json`` (architecture, head, training provenance);
every unreadable or mismatched file raises :class:`CheckpointError` naming it."""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from conceptlearn.baselines.vit.model import HEADS, ViTConfig, init_classifier


class CheckpointError(ValueError):
    """A checkpoint folder is missing, corrupt, or does not match its config."""


def _path_name(path) -> str:
    parts = []
    for entry in path:
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def flatten_tree(tree) -> dict[str, np.ndarray]:
    """A pytree -> ``{"path/to/leaf": array}``."""
    return {_path_name(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten_like(template, arrays: dict[str, np.ndarray], where: str):
    """Fill ``template``'s structure from ``arrays`` (from :func:`flatten_tree`); a missing leaf
    or a shape/dtype mismatch raises :class:`CheckpointError` naming ``where``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for path, ref in leaves:
        name = _path_name(path)
        if name not in arrays:
            raise CheckpointError(
                f"{where}: missing array {name!r} (checkpoint does not match its config)"
            )
        value = arrays[name]
        if value.shape != np.shape(ref) or value.dtype != np.asarray(ref).dtype:
            raise CheckpointError(
                f"{where}: array {name!r} has shape {value.shape} {value.dtype}, "
                f"expected {np.shape(ref)} {np.asarray(ref).dtype}"
            )
        out.append(jnp.asarray(value))
    return jax.tree_util.tree_unflatten(treedef, out)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read an ``.npz`` without pickle; any unreadable file raises :class:`CheckpointError`."""
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise CheckpointError(
            f"{path}: corrupt checkpoint file ({type(err).__name__}: {err})"
        ) from err


def save_checkpoint(
    folder: str | os.PathLike, cfg: ViTConfig, params: nnx.State, meta: dict[str, Any]
) -> None:
    """Write ``folder/params.npz`` (classifier parameters) and ``folder/config.json``."""
    n_classes = int(np.shape(params["head"]["weight"][...])[0])
    head = "cosine" if "log_scale" in params["head"] else "linear"
    config = {"model": dataclasses.asdict(cfg), "n_classes": n_classes, "head": head, **meta}
    write_folder(folder, params, config)


def write_folder(folder: str | os.PathLike, params, config: dict[str, Any]) -> None:
    """Write a checkpoint folder: ``params.npz`` (the flat parameter pytree) and
    ``config.json``, each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_npz(folder / "params.npz", flatten_tree(params))
    tmp = folder / "config.json.tmp"
    tmp.write_text(json.dumps(config, indent=1))
    os.replace(tmp, folder / "config.json")


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """``folder/config.json`` as a dict, with clear errors."""
    path = Path(folder) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{path}: not found (is {folder} a pretrain-vit checkpoint folder?)")
    try:
        config = json.loads(path.read_text())
        ViTConfig(**config["model"])
        int(config["n_classes"])
        if config.get("head", "cosine") not in HEADS:
            raise ValueError(f"unknown head {config['head']!r}")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path}: corrupt checkpoint config ({type(err).__name__}: {err})"
        ) from err
    return config


def load_checkpoint(
    folder: str | os.PathLike,
) -> tuple[ViTConfig, nnx.GraphDef, nnx.State, dict[str, Any]]:
    """Read a checkpoint folder -> ``(cfg, graphdef, params, config dict)``."""
    config = read_config(folder)
    cfg = ViTConfig(**config["model"])
    graphdef, template = init_classifier(
        cfg, int(config["n_classes"]), head=config.get("head", "cosine")
    )
    path = Path(folder) / "params.npz"
    params = unflatten_like(template, read_npz(path), str(path))
    return cfg, graphdef, params, config
