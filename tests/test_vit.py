"""The ViT comparator: model shapes, pretraining, checkpoints, per-episode fit (tiny configs)."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conceptlearn.baselines import vit
from conceptlearn.baselines.vit import pretraining as vt
from conceptlearn.baselines.vit.finetune import _embed_views
from conceptlearn.contenders import make_contender

TINY = vit.PRESETS["tiny"]
TINY_TRAIN = vt.TrainConfig(steps=20, batch=32, ckpt_every=10, lr=3e-3, loss="proto", ways=8)


@pytest.fixture(scope="module")
def chars(small1_images):
    """12 small1 characters: ``bool (12, 20, 105, 105)``."""
    first = small1_images.all_characters()[:12]
    return small1_images.character_array(first)[0]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, chars):
    out = tmp_path_factory.mktemp("vit_ckpt")
    vt.pretrain(out, cfg=TINY, tcfg=TINY_TRAIN, data=chars, progress=False)
    return out


def test_output_shapes():
    graphdef, params = vit.init_classifier(TINY, 7)

    @jax.jit
    def outputs(params, images):
        model = nnx.merge(graphdef, params)
        return model.backbone.embed(images), model.backbone(images), model(images)

    tokens, features, logits = outputs(params, jnp.zeros((3, TINY.image_size, TINY.image_size)))
    assert tokens.shape == (3, TINY.n_patches, TINY.width)
    assert features.shape == (3, TINY.width) and logits.shape == (3, 7)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        vit.ViTConfig(image_size=30, patch_size=4)


def test_blank_patches_add_only_the_embedding_bias():
    """Regression: the input used to be 2x-1, so every blank patch (~90% of an Omniglot image)
    became one large identical token that swamped the pooled feature and stalled pretraining."""
    graphdef, params = vit.init_classifier(TINY, 3)
    embed = jax.jit(lambda p, x: nnx.merge(graphdef, p).backbone.embed(x))
    image = jnp.zeros((1, TINY.image_size, TINY.image_size)).at[0, 0, 0].set(1.0)  # ink in patch 0
    tokens = np.asarray(embed(params, image))[0]
    backbone = params["backbone"]
    blank = np.asarray(backbone["pos"][...]) + np.asarray(backbone["patch"]["bias"][...])
    np.testing.assert_allclose(tokens[1:], blank[1:], atol=1e-6)
    assert not np.allclose(tokens[0], blank[0])
    stem = dataclasses.replace(TINY, stem=(4, 8))
    graphdef, params = vit.init_classifier(stem, 3)
    tokens = jax.jit(lambda p, x: nnx.merge(graphdef, p).backbone.embed(x))(params, image)
    assert tokens.shape == (1, stem.n_patches, stem.width)


def test_downsample_keeps_ink_and_position():
    image = np.zeros((105, 105), bool)
    image[30:45, 60:90] = True  # 15 x 30 block
    levels = jax.jit(vit.ink_levels)(jnp.asarray(image))
    assert levels.shape == (4, 35, 35)
    np.testing.assert_allclose(levels[1], image.reshape(35, 3, 35, 3).mean((1, 3)), atol=1e-6)
    render = jax.jit(vit.render, static_argnums=4)
    small = np.asarray(render(levels, jnp.eye(2), jnp.zeros(2), jnp.asarray(1), 35))
    assert small.shape == (35, 35) and small.min() >= 0.0 and small.max() <= 1.0
    assert small.sum() * 9 == pytest.approx(image.sum(), rel=0.02)  # coverage is area-preserving
    rows, cols = np.nonzero(small > 0.5)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 14, 20, 29)
    at28 = np.asarray(render(levels, jnp.eye(2), jnp.zeros(2), jnp.asarray(1), 28))
    assert at28.sum() * (105 / 28) ** 2 == pytest.approx(image.sum(), rel=0.03)
    # thickness variant 3 (+2 px) only adds ink; augmentation moves it but keeps it in frame.
    thick = render(levels, jnp.eye(2), jnp.zeros(2), jnp.asarray(3), 35)
    assert float(thick.sum()) > float(small.sum())
    view = jax.jit(vit.augment, static_argnums=(2, 3))(
        jax.random.key(1), levels, vit.AugmentConfig(), 35
    )
    assert view.shape == (35, 35) and 0.5 < float(view.sum()) / float(small.sum()) < 2.0


def test_quarter_turn_is_exact():
    image = np.zeros((105, 105), bool)
    image[10:20, 70:100] = True
    none = vit.AugmentConfig(strength=0.0)
    augment = jax.jit(vit.augment, static_argnums=(2, 3))
    levels = jax.jit(vit.ink_levels)
    turned = augment(jax.random.key(0), levels(jnp.asarray(image)), none, 28, 1)
    expected = augment(
        jax.random.key(0), levels(jnp.asarray(np.rot90(image, 1).copy())), none, 28, 0
    )
    np.testing.assert_allclose(np.asarray(turned), np.asarray(expected), atol=1e-5)


CLASSIFY = dataclasses.replace(TINY_TRAIN, loss="classify", rot_classes=False, lr=1e-2, steps=80)


@pytest.mark.parametrize(
    "tcfg",
    [TINY_TRAIN, pytest.param(CLASSIFY, marks=pytest.mark.slow)],
    ids=["proto", "classify"],
)
def test_training_steps_lower_the_loss(chars, tcfg):
    head, n_out = vt.head_of(tcfg, len(chars))
    graphdef, params = vit.init_classifier(TINY, n_out, tcfg.seed, head=head)
    step, opt = vt.make_train_step(graphdef, TINY, tcfg, n_out)  # cached: shared with pretrain
    data = vt.background_levels(jnp.asarray(chars))

    @jax.jit
    def loss(p):
        big = dataclasses.replace(tcfg, batch=4 * tcfg.batch)
        images, labels = vt.sample_batch(jax.random.key(99), data, big, TINY.image_size)
        return vt.batch_loss(nnx.merge(graphdef, p), images, labels, big, n_out)

    before, opt_state = float(loss(params)), opt.init(params)
    for i in range(tcfg.steps):
        params, opt_state, _ = step(params, opt_state, data, jax.random.key(i))
    assert float(loss(params)) < before - 0.2


def test_proto_batches_are_class_major_and_match_their_labels(chars):
    """Each class of a proto batch is ``batch // ways`` distinct drawings of one character in
    one quarter-turn; labels say which class; the loss is the nearest-class-mean softmax."""
    data = vt.background_levels(jnp.asarray(chars))
    tcfg = dataclasses.replace(TINY_TRAIN, augment=vit.AugmentConfig(strength=0.0))
    images, labels = jax.jit(lambda k: vt.sample_batch(k, data, tcfg, 28))(jax.random.key(5))
    m = tcfg.batch // tcfg.ways
    np.testing.assert_array_equal(labels, np.arange(tcfg.ways).repeat(m))
    clean = jax.jit(jax.vmap(lambda lv, r: vit.augment(jax.random.key(0), lv, tcfg.augment, 28, r)))
    views = np.asarray(clean(data.reshape(-1, 4, 35, 35), jnp.zeros(data.shape[0] * 20, int)))
    views = views.reshape(len(chars), 20, 28, 28)
    turned = np.stack([np.rot90(views, r, axes=(2, 3)) for r in range(4)])  # (4, n, 20, 28, 28)
    for c, group in enumerate(np.asarray(images).reshape(tcfg.ways, m, 28, 28)):
        found = set()
        for image in group:  # each image is some drawing of one character, turned
            hits = np.argwhere(np.abs(turned - image).max(axis=(3, 4)) < 1e-5)  # rows (r, i, j)
            assert len(hits) >= 1
            found.add(tuple(int(v) for v in hits[0]))
        assert len({(r, i) for r, i, _ in found}) == 1 and len(found) == m, c


def test_checkpoint_round_trip_and_corruption(tmp_path):
    graphdef, params = vit.init_classifier(TINY, 5, seed=3)
    vit.save_checkpoint(tmp_path, TINY, params, {"step": 7})
    cfg, _, loaded, config = vit.load_checkpoint(tmp_path)
    assert cfg == TINY and config["step"] == 7 and config["n_classes"] == 5
    for a, b in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    npz = tmp_path / "params.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])  # truncated file
    with pytest.raises(vit.CheckpointError, match="params.npz: corrupt checkpoint"):
        vit.load_checkpoint(tmp_path)
    np.savez(npz, **{"head/weight": np.zeros((5, TINY.width), np.float32)})  # arrays missing
    with pytest.raises(vit.CheckpointError, match="params.npz: missing array"):
        vit.load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(vit.CheckpointError, match="config.json: corrupt"):
        vit.load_checkpoint(tmp_path)
    with pytest.raises(vit.CheckpointError, match="not found"):
        vit.load_checkpoint(tmp_path / "nowhere")


def test_pretrain_resumes_to_the_same_parameters(tmp_path, chars, tiny_checkpoint, monkeypatch):
    calls = []
    original = vt.save_checkpoint

    def interrupt(*args, **kwargs):
        original(*args, **kwargs)
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(vt, "save_checkpoint", interrupt)
    with pytest.raises(KeyboardInterrupt):
        vt.pretrain(tmp_path, cfg=TINY, tcfg=TINY_TRAIN, data=chars, progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["step"] == TINY_TRAIN.ckpt_every
    monkeypatch.setattr(vt, "save_checkpoint", original)
    vt.pretrain(tmp_path, cfg=TINY, tcfg=TINY_TRAIN, data=chars, progress=False)
    resumed, straight = vit.load_checkpoint(tmp_path)[2], vit.load_checkpoint(tiny_checkpoint)[2]
    for a, b in zip(
        jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(straight), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # the loss curve survives the interruption: one point every 10 steps, as if never stopped
    curve = json.loads((tmp_path / "config.json").read_text())["loss_curve"]
    straight_curve = json.loads((tiny_checkpoint / "config.json").read_text())["loss_curve"]
    assert [step for step, _ in curve] == list(range(10, TINY_TRAIN.steps + 1, 10))
    np.testing.assert_allclose(curve, straight_curve, rtol=1e-4)
    with pytest.raises(ValueError, match="different config"):
        vt.pretrain(
            tmp_path,
            cfg=TINY,
            tcfg=dataclasses.replace(TINY_TRAIN, lr=1.0),
            data=chars,
            progress=False,
        )


def _support_accuracy(contender, state, support):
    n_way, k = support.shape[:2]
    scores = contender.scores(state, support.reshape(n_way * k, 105, 105), key=None)
    return float((scores.argmax(1) == np.repeat(np.arange(n_way), k)).mean())


# One fine-tuning config and one episode shape (6-way 3-shot) for every test: one compile.
FIT = {"steps": 30, "lr": 1e-2, "train_blocks": "all", "views": 2, "batch": 36, "aug_strength": 0.3}


def test_finetuning_raises_support_accuracy(chars, tiny_checkpoint):
    support = chars[6:12, 4:7]
    proto = make_contender("vit-proto", checkpoint=str(tiny_checkpoint))
    tuned = make_contender("vit", checkpoint=str(tiny_checkpoint), overrides=FIT)
    before = _support_accuracy(proto, proto.fit(support, key=jax.random.key(0)), support)
    state = tuned.fit(support, key=jax.random.key(0))
    after = _support_accuracy(tuned, state, support)
    assert before < 0.9 and after > before
    assert state.losses.shape == (FIT["steps"],) and state.losses[-1] < 0.7 * state.losses[0]


def test_proto_is_nearest_cosine_class_mean(chars, tiny_checkpoint):
    proto = make_contender("vit-proto", checkpoint=str(tiny_checkpoint))
    support, queries = chars[6:12, 4:7], chars[6:12, 10]
    scores = proto.scores(proto.fit(support, key=jax.random.key(0)), queries, key=None)

    graphdef = nnx.graphdef(vit.ViT(proto.cfg, rngs=nnx.Rngs(0)))

    @jax.jit
    def features(images):
        return nnx.merge(graphdef, proto.backbone)(_embed_views(proto.cfg, images))

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    means = np.asarray(features(support.reshape(18, 105, 105))).reshape(6, 3, -1).mean(1)
    cos = unit(np.asarray(features(queries))) @ unit(means).T
    np.testing.assert_allclose(scores, 10.0 * cos, rtol=1e-4, atol=1e-4)


def test_same_seed_same_scores_and_no_retrace(chars, tiny_checkpoint):
    tuned = make_contender("vit", checkpoint=str(tiny_checkpoint), overrides=FIT)
    episode_a, episode_b, queries = chars[:6, :3], chars[6:12, :3], chars[:6, 19]
    run = lambda c, support, k: c.scores(c.fit(support, key=jax.random.key(k)), queries, key=None)  # noqa: E731
    first = run(tuned, episode_a, 0)
    traces = vit.TRACE_COUNTS["fit_episode"]
    np.testing.assert_array_equal(first, run(tuned, episode_a, 0))
    assert not np.allclose(first, run(tuned, episode_a, 1))  # the key drives augmentation
    run(tuned, episode_b, 2)
    assert vit.TRACE_COUNTS["fit_episode"] == traces  # another episode, same shape: no retrace

    scratch = [
        make_contender("vit-scratch", seed=4, overrides=FIT | {"preset": "tiny"}) for _ in range(2)
    ]
    np.testing.assert_array_equal(run(scratch[0], episode_a, 0), run(scratch[1], episode_a, 0))
    assert vit.TRACE_COUNTS["fit_episode"] == traces  # the scratch model shares the compiled fit
    assert not np.allclose(first, run(scratch[0], episode_a, 0))


def test_contender_options_are_checked(tiny_checkpoint):
    with pytest.raises(ValueError, match="unknown vit override"):
        make_contender("vit", checkpoint=str(tiny_checkpoint), overrides={"stepz": 3})
    with pytest.raises(ValueError, match="train_blocks"):
        make_contender("vit", checkpoint=str(tiny_checkpoint), overrides={"train_blocks": 9})
    c = make_contender("vit", checkpoint=str(tiny_checkpoint), overrides={"aug_rotate_deg": 3.0})
    assert c.config["finetune"]["augment"]["rotate_deg"] == 3.0
    json.dumps(c.config)
