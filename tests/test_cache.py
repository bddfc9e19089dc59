"""The on-disk caches: ArrayStore (round trips, keys, damaged files, two concurrent writers) and
JAX's persistent compilation cache (folder choice, off switch, reuse by a second process)."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conceptlearn.cache import ArrayStore, enable_compilation_cache, user_cache_dir

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
N_SHARED_KEYS = 20


def assert_bundles_equal(got: dict[str, np.ndarray] | None, expected: dict[str, np.ndarray]):
    """Same entry names, and per entry the same dtype, shape and values."""
    assert got is not None
    assert sorted(got) == sorted(expected)
    for name, array in expected.items():
        assert got[name].dtype == array.dtype, name
        assert got[name].shape == array.shape, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


# ---------------------------------------------------------------- round trips


def test_round_trip_keeps_dtypes_shapes_and_values(tmp_path):
    store = ArrayStore(tmp_path / "store")
    assert not store.root.exists()  # created by the first put, not before
    assert len(store) == 0
    rng = np.random.default_rng(0)
    bundle = {
        "mask": rng.random((3, 4)) < 0.5,  # bool (3, 4)
        "points": rng.normal(size=(2, 5, 2)).astype(np.float32),
        "counts": np.arange(-3, 3, dtype=np.int32),
        "scalar": np.array(2.5, dtype=np.float32),  # 0-d
        "empty": np.zeros((0, 7), dtype=np.int32),
        "file": np.array(True),  # names np.savez would take as its own arguments
        "allow_pickle": np.ones(1, np.float32),
    }
    key = ArrayStore.key("round trip")
    assert store.get(key) is None and key not in store
    store.put(key, bundle)
    assert key in store and len(store) == 1
    assert_bundles_equal(store.get(key), bundle)
    assert store.path(key) == store.root / key[:2] / f"{key}.npz"

    store.put(key, {})  # an empty bundle is a hit, not a miss
    assert store.get(key) == {}
    assert len(store) == 1


def test_get_or_compute_computes_once(tmp_path):
    store = ArrayStore(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"values": [1.0, 2.0], "flag": True}  # anything np.asarray takes

    expected = {"values": np.array([1.0, 2.0]), "flag": np.array(True)}
    key = ArrayStore.key("computed")
    assert_bundles_equal(store.get_or_compute(key, compute), expected)
    assert_bundles_equal(store.get_or_compute(key, compute), expected)
    assert len(calls) == 1


def test_object_arrays_and_bad_keys_are_refused(tmp_path):
    store = ArrayStore(tmp_path / "store")
    key = ArrayStore.key("objects")
    bundle = {"fine": np.zeros(2), "names": np.array(["a", None], dtype=object)}
    with pytest.raises(ValueError, match="'names'"):
        store.put(key, bundle)
    assert key not in store and not store.root.exists()
    with pytest.raises(TypeError, match="object"):
        ArrayStore.key(bundle["names"])
    for bad_key in ("../escape", "a/b", "x", ""):
        with pytest.raises(ValueError, match="key"):
            store.get(bad_key)


# ---------------------------------------------------------------- damaged files


def test_garbage_file_reads_as_miss_and_is_removed(tmp_path):
    store = ArrayStore(tmp_path)
    key = ArrayStore.key("garbage")
    path = store.path(key)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"definitely not an npz file")
    assert store.get(key) is None
    assert not path.exists()


@pytest.mark.parametrize("damage", ["truncate", "flip_data_byte", "empty"])
def test_damaged_npz_reads_as_miss_and_is_removed(tmp_path, damage):
    store = ArrayStore(tmp_path)
    key = ArrayStore.key("damaged", damage)
    store.put(key, {"values": np.arange(1000, dtype=np.float64)})
    path = store.path(key)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_data_byte":  # inside the array bytes: caught by the zip's CRC
        data[len(data) // 2] ^= 0xFF
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    assert store.get(key) is None
    assert not path.exists()
    assert_bundles_equal(
        store.get_or_compute(key, lambda: {"values": np.ones(2)}), {"values": np.ones(2)}
    )


# ---------------------------------------------------------------- keys


@dataclasses.dataclass(frozen=True)
class _Config:
    steps: int = 3
    lr: float = 0.1
    name: str = "fit"
    sizes: tuple[int, ...] = (2, 3)


def _parts_for_key():
    """A mix of every kind of part; also built in a subprocess by test_key_is_stable_across_processes."""
    return (
        b"raw",
        "text",
        7,
        -2.5,
        True,
        None,
        np.arange(6, dtype=np.int16).reshape(2, 3),
        {"zeta": [1, 2.0, "3"], "alpha": (None, b"x"), "mid": {"b": 1, "a": 2}},
        _Config(steps=5),
    )


def test_key_distinguishes_types_dtypes_and_shapes():
    ints = np.arange(6, dtype=np.int32)
    parts = [
        (b"1",),
        ("1",),
        (1,),
        (1.0,),
        (True,),
        (0,),
        (False,),
        (None,),
        ([1],),
        ((1,),),
        ({"1": 1},),
        ({1: "1"},),
        (np.array(1),),  # 0-d
        (np.array([1]),),  # (1,)
        (np.int32(1),),
        (ints,),
        (ints.view(np.uint8),),  # the same bytes as uint8
        (ints.view(np.float32),),  # the same bytes and shape, another dtype
        (ints.reshape(2, 3),),
        (ints.reshape(3, 2),),
        (np.zeros((0, 3)),),
        (np.zeros((3, 0)),),
        ("ab", "c"),  # concatenations must not collide
        ("a", "bc"),
        (["a"], "b"),
        (["a", "b"],),
        (("a", "b"),),
        ("a", "b"),
        (),
        ("",),
        (b"",),
        ([],),
        ({},),
        (_Config(),),
        (dataclasses.asdict(_Config()),),
    ]
    keys = [ArrayStore.key(*p) for p in parts]
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in keys)
    assert len(set(keys)) == len(parts)


def test_key_is_canonical():
    grid = np.arange(12.0).reshape(3, 4)
    assert ArrayStore.key({"a": 1, "b": [2, {"c": 3, "d": 4}]}) == ArrayStore.key(
        {"b": [2, {"d": 4, "c": 3}], "a": 1}
    )
    assert ArrayStore.key(grid[:, ::2]) == ArrayStore.key(np.ascontiguousarray(grid[:, ::2]))
    assert ArrayStore.key(np.asfortranarray(grid)) == ArrayStore.key(grid)
    assert ArrayStore.key(_Config()) == ArrayStore.key(_Config())
    assert ArrayStore.key(_Config()) != ArrayStore.key(_Config(lr=0.2))
    assert ArrayStore.key(_Config()) != ArrayStore.key(_Config(sizes=(3, 2)))
    for unsupported in ({1, 2}, object(), Path("x")):
        with pytest.raises(TypeError, match=type(unsupported).__name__):
            ArrayStore.key(unsupported)


def test_key_is_stable_across_processes():
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_cache; "
        "from conceptlearn.cache import ArrayStore; "
        "print(ArrayStore.key(*test_cache._parts_for_key()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a str hash unlike this process's
    child = subprocess.run(
        [sys.executable, "-c", script, str(TESTS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == ArrayStore.key(*_parts_for_key())


# ---------------------------------------------------------------- two processes, one store


def _shared_bundle(index: int) -> dict[str, np.ndarray]:
    """Key ``index``'s bundle; the larger entry (~32 KB) makes a torn write easy to see."""
    return {
        "index": np.array(index, dtype=np.int32),
        "values": np.arange(4096 + index, dtype=np.float64) * (index + 1),
        "mask": np.arange(64) % (index + 2) == 0,
    }


def _hammer_store(root: str, keys: list[str], worker: int, barrier, n_steps: int = 200) -> None:
    """One of two processes: read, compute and overwrite the shared keys, checking every read."""
    store = ArrayStore(root)
    barrier.wait(timeout=60)
    for step in range(n_steps):
        index = (step * 7 + worker * 11) % len(keys)
        got = store.get_or_compute(keys[index], lambda index=index: _shared_bundle(index))
        assert_bundles_equal(got, _shared_bundle(index))
        if step % 2 == worker:
            other = (index + 5) % len(keys)
            store.put(keys[other], _shared_bundle(other))
            assert_bundles_equal(store.get(keys[other]), _shared_bundle(other))


def test_two_processes_sharing_a_store_stay_consistent(tmp_path):
    root = tmp_path / "shared"
    keys = [ArrayStore.key("shared", index) for index in range(N_SHARED_KEYS)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [
        context.Process(target=_hammer_store, args=(str(root), keys, worker, barrier))
        for worker in range(2)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
        if process.is_alive():
            process.kill()
            process.join()
    assert [p.exitcode for p in workers] == [0, 0], "a worker read a wrong or partial bundle"

    store = ArrayStore(root)
    assert len(store) == N_SHARED_KEYS
    for index, key in enumerate(keys):
        assert_bundles_equal(store.get(key), _shared_bundle(index))
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(Path(key[:2]) / f"{key}.npz" for key in keys)  # no temporaries left


# ---------------------------------------------------------------- cache folders


def test_user_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CONCEPTLEARN_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "conceptlearn"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "conceptlearn"
    monkeypatch.setenv("CONCEPTLEARN_CACHE", str(tmp_path / "mine"))
    assert user_cache_dir() == tmp_path / "mine"
    assert not any(tmp_path.iterdir())  # nothing created


@pytest.fixture
def jax_config(monkeypatch):
    """JAX's config with no compilation cache folder; the cache options are restored after."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    saved = {name: getattr(jax.config, name) for name in names}
    monkeypatch.delenv("CONCEPTLEARN_JAX_CACHE", raising=False)
    compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", None)
    yield jax.config
    compilation_cache.reset_cache()
    for name, value in saved.items():
        jax.config.update(name, value)


def test_enable_compilation_cache_sets_jax_config(tmp_path, jax_config):
    directory = enable_compilation_cache(tmp_path / "jax")
    assert directory == (tmp_path / "jax").resolve() and directory.is_dir()
    assert jax_config.jax_compilation_cache_dir == str(directory)
    assert jax_config.jax_persistent_cache_min_compile_time_secs == 0.0
    assert jax_config.jax_persistent_cache_min_entry_size_bytes == 0
    assert enable_compilation_cache(tmp_path / "jax") == directory  # idempotent
    assert jax_config.jax_compilation_cache_dir == str(directory)
    assert enable_compilation_cache() == directory  # no folder named: keep the one JAX has


def test_enable_compilation_cache_default_folders(tmp_path, monkeypatch, jax_config):
    monkeypatch.setenv("CONCEPTLEARN_CACHE", str(tmp_path / "user"))
    assert enable_compilation_cache() == (tmp_path / "user" / "jax").resolve()
    monkeypatch.setenv("CONCEPTLEARN_JAX_CACHE", str(tmp_path / "from_env"))
    assert enable_compilation_cache() == (tmp_path / "from_env").resolve()
    assert jax_config.jax_compilation_cache_dir == str((tmp_path / "from_env").resolve())


@pytest.mark.parametrize("value", ["off", "OFF", "0", ""])
def test_enable_compilation_cache_off(tmp_path, monkeypatch, jax_config, value):
    monkeypatch.setenv("CONCEPTLEARN_CACHE", str(tmp_path / "user"))
    monkeypatch.setenv("CONCEPTLEARN_JAX_CACHE", value)
    assert enable_compilation_cache() is None
    assert jax_config.jax_compilation_cache_dir is None
    assert not (tmp_path / "user").exists()
    assert enable_compilation_cache(tmp_path / "named") == (tmp_path / "named").resolve()


def test_enable_compilation_cache_unwritable_warns_once(tmp_path, jax_config):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder should be")
    with pytest.warns(UserWarning, match="cannot write"):
        assert enable_compilation_cache(blocker / "jax") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert enable_compilation_cache(blocker / "jax") is None
    assert jax_config.jax_compilation_cache_dir is None


_JIT_SCRIPT = """
import json, jax, jax.numpy as jnp
from conceptlearn.cache import enable_compilation_cache
hits = []
jax.monitoring.register_event_listener(
    lambda event, **_: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None
)
directory = enable_compilation_cache()
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # tiny compiles count too
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum(0) + 1.0)
f(jnp.ones((16, 16), jnp.float32)).block_until_ready()
print(json.dumps({"directory": str(directory), "hits": len(hits)}))
"""


def test_second_process_reuses_compilations(tmp_path):
    cache = tmp_path / "jax"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "CONCEPTLEARN_JAX_CACHE": str(cache)}

    def run_once() -> dict:
        child = subprocess.run(
            [sys.executable, "-c", _JIT_SCRIPT],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=120,
        )
        assert child.returncode == 0, child.stderr
        return json.loads(child.stdout.strip().splitlines()[-1])

    first = run_once()
    assert first["directory"] == str(cache.resolve())
    written = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert written, "the first process wrote no cache entries"
    second = run_once()
    assert second["hits"] >= 1, "the second process compiled instead of reading the cache"
