"""Datasets: standardization, local MNIST-1D, optional extras, the CIFAR-10 loader."""

import os
import pickle
import sys

import numpy as np
import pytest
from conftest import write_cifar_batch

from mlp_jax import data


def test_standardization_fitted_on_train_only():
    ds = data.digits()
    np.testing.assert_allclose(ds.X_train.mean(0), 0, atol=1e-5)
    assert np.abs(ds.X_test.mean(0)).max() > 1e-3  # test is transformed, not refitted
    again = data.digits()
    assert np.array_equal(ds.X_test, again.X_test) and np.array_equal(ds.y_val, again.y_val)
    assert len(ds.X_train) + len(ds.X_val) + len(ds.X_test) == 1797


def test_digits_are_scikit_learns_without_importing_it():
    """The digits read from the file scikit-learn ships equal load_digits()'s arrays, and
    reading them imports no scikit-learn (its import took longer than the rest)."""
    import subprocess

    from sklearn.datasets import load_digits

    X, y = data.digits_arrays()
    reference = load_digits()
    assert np.array_equal(X, reference.data) and np.array_equal(y, reference.target)
    assert y.dtype == np.int32 and X.shape == (1797, 64)
    code = ("import sys; from mlp_jax import data; data.digits(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out


def test_mnist1d_is_generated_locally_and_leaves_numpy_global_state():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    ds = data.mnist1d()
    assert np.array_equal(np.random.get_state()[1], before)
    assert ds.X_train.shape == (4000, 40) and ds.X_test.shape == (1000, 40)


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'mlp_jax\[data\]'"):
        data.digits()


def test_cifar10_loader_on_official_format(tmp_path):
    batches = [write_cifar_batch(tmp_path / f"data_batch_{i}", 6, i) for i in range(1, 6)]
    test = write_cifar_batch(tmp_path / "test_batch", 4, 9)
    ds = data.cifar10(str(tmp_path), num_val=5)
    X = np.concatenate([b[b"data"] for b in batches]).astype(np.float32)
    mean = X[:-5].mean(0)
    np.testing.assert_allclose(ds.X_train, X[:-5] - mean, atol=1e-4)
    np.testing.assert_allclose(ds.X_test, test[b"data"].astype(np.float32) - mean, atol=1e-4)
    assert list(ds.y_val) == [v for b in batches for v in b[b"labels"]][-5:]


def test_cifar_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned > " + str(tmp_path / "owned"),))

    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match="refusing to load"):
        data.load_cifar_batch(str(path))
    assert not (tmp_path / "owned").exists()
    with pytest.raises(FileNotFoundError, match="never downloads"):
        data.cifar10(str(tmp_path / "nowhere"))
