import os
import pickle

import jax
import numpy as np
import pytest

import mlp_jax as mj

# The tests compare float32 results of different paths (jit vs eager, vmap vs a loop,
# backprop vs jax.grad) at float32 rounding. On GPUs, JAX multiplies float32 matrices in
# TF32 by default (about 3 decimal digits), which those comparisons would measure instead:
# ask for float32 products. No effect on CPU.
jax.config.update("jax_default_matmul_precision", "float32")
# The command lines and experiments the tests start end with the test process, however
# it ends (mlp_jax.lifetime.end_with_starter).
os.environ["MLP_JAX_PARENT"] = str(os.getpid())
# Hermetic: no command the tests run reads or writes the user's compilation cache (the
# cache's own test names a directory of its own).
os.environ["MLP_JAX_COMPILE_CACHE"] = "0"


@pytest.fixture(autouse=os.environ.get("MUTANT_UNDER_TEST") == "stats")
def _fresh_traces():
    """Under mutmut's stats run, every test traces afresh, so every test that reaches a
    function inside jit is recorded as covering it (a cached trace would hide it)."""
    jax.clear_caches()
    yield


@pytest.fixture
def x64():
    """float64 for one test only (ARCHITECTURE.md: never globally at import)."""
    with jax.enable_x64(True):
        yield


def labels_for(spec: mj.MLPSpec, n: int, rng: np.random.Generator):
    """Valid labels of the kind spec's loss needs."""
    C = spec.sizes[-1]
    return {
        "class": lambda: rng.integers(0, C, n),
        "binary01": lambda: rng.integers(0, 2, n),
        "binary_pm1": lambda: 2 * rng.integers(0, 2, n) - 1,
        "real": lambda: rng.normal(size=(n, C)),
    }[spec.loss_fn.labels]()


def tree_equal(a, b):
    """Every leaf bitwise equal."""
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def write_cifar_batch(path, n, seed, labels=None):
    """A file in the official CIFAR-10 python format: n random images (labels random in
    0..9 unless given)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n) if labels is None else labels
    batch = {b"batch_label": b"testing batch 1 of 1",
             b"labels": [int(v) for v in labels],
             b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return batch
