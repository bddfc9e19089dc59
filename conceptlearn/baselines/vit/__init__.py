"""The comparator: a Vision Transformer (flax.nnx) pretrained on background characters and
adapted per episode; three contenders for the harness (conceptlearn/contenders.py).

- ``vit``: pretrained backbone; a new cosine head whose class weights start at the class-mean
  support embeddings; then ``steps`` AdamW steps on augmented support views, moving all weights,
  the last ``train_blocks`` blocks + head, or the head alone.
- ``vit-proto``: pretrained backbone, nearest class mean (cosine), no fine-tuning.
- ``vit-scratch``: the same architecture from random initialisation, trained on the support alone.

Modules: :mod:`.model` (config, presets, flax modules), :mod:`.augmentation` (ink levels, clean
and augmented views), :mod:`.checkpoint` (``params.npz`` + ``config.json``, no pickle),
:mod:`.finetune` (the per-episode fit, scoring and the contenders) and :mod:`.pretraining`
(``conceptlearn pretrain-vit``). This package re-exports the public names of the first four.
"""

from conceptlearn.baselines.vit.augmentation import (
    LEVEL_SIZE,
    AugmentConfig,
    augment,
    downsample,
    ink_levels,
    random_transform,
    render,
)
from conceptlearn.baselines.vit.checkpoint import (
    CheckpointError,
    flatten_tree,
    load_checkpoint,
    read_config,
    read_npz,
    save_checkpoint,
    unflatten_like,
    write_npz,
)
from conceptlearn.baselines.vit.finetune import (
    FINETUNE_DEFAULT,
    SCRATCH_DEFAULT,
    TRACE_COUNTS,
    EpisodeState,
    FinetuneConfig,
    ViTContender,
    fit_episode,
    make_finetune_contender,
    make_proto_contender,
    make_scratch_contender,
    score_queries,
)
from conceptlearn.baselines.vit.model import (
    HEADS,
    PRESETS,
    Block,
    Classifier,
    CosineHead,
    LinearHead,
    ViT,
    ViTConfig,
    init_classifier,
)

__all__ = [
    "FINETUNE_DEFAULT",
    "HEADS",
    "LEVEL_SIZE",
    "PRESETS",
    "SCRATCH_DEFAULT",
    "TRACE_COUNTS",
    "AugmentConfig",
    "Block",
    "CheckpointError",
    "Classifier",
    "CosineHead",
    "EpisodeState",
    "FinetuneConfig",
    "LinearHead",
    "ViT",
    "ViTConfig",
    "ViTContender",
    "augment",
    "downsample",
    "fit_episode",
    "flatten_tree",
    "init_classifier",
    "ink_levels",
    "load_checkpoint",
    "make_finetune_contender",
    "make_proto_contender",
    "make_scratch_contender",
    "random_transform",
    "read_config",
    "read_npz",
    "render",
    "save_checkpoint",
    "score_queries",
    "unflatten_like",
    "write_npz",
]
