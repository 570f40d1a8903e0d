"""Datasets by name: the bundled ones, and a file of your own (:func:`load`).

Every loader returns a :class:`~mlp_jax.dataset.Dataset` of float32 features and
integer labels, with deterministic splits and preprocessing fitted on the training
split only (standardization, or CIFAR's mean image). Nothing is downloaded: ``digits``
needs scikit-learn, ``mnist1d`` the ``mnist1d`` package's generator (both in the
``data`` extra), ``cifar10`` a local copy of the official python batches. Data of your
own: :func:`from_arrays` (:mod:`mlp_jax.owndata`), or :func:`load` of a file.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle

import numpy as np

from . import files
from .dataset import Dataset, Preprocessing
from .owndata import MAX_CLASSES_FLOOR, PREPROCESS, feature_mean_std, from_arrays
from .validate import check_features


def _need(module: str, extra: str = "data"):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise ImportError(f"this dataset needs the package {module.split('.')[0]!r}: "
                          f"pip install 'mlp_jax[{extra}]'") from e


def standardize(train: np.ndarray, *others):
    """Zero mean, unit variance per feature, with statistics of ``train`` only.

    Constant features (std 0, e.g. digits' always-blank corner pixels) are only centred.
    """
    mean, std = feature_mean_std(train)
    std = np.where(std > 0, std, 1.0)
    return tuple(None if a is None else ((a - mean) / std).astype(np.float32)
                 for a in (train, *others))


def split(X, y, fractions, seed: int):
    """Deterministic shuffled split into ``len(fractions) + 1`` parts (the rest is last)."""
    perm = np.random.default_rng(seed).permutation(len(X))
    cuts = np.cumsum([int(round(f * len(X))) for f in fractions])
    parts = np.split(perm, cuts)
    return [(X[p], y[p]) for p in parts]


def spiral(points_per_class: int = 100, num_classes: int = 3, seed: int = 0) -> Dataset:
    """CS231n's spiral ("Neural Networks Case Study"): 2-D, not linearly separable.

    All points are training data, as in the case study (which reports training accuracy).
    """
    rng = np.random.default_rng(seed)
    N, K = points_per_class, num_classes
    X = np.zeros((N * K, 2))
    y = np.zeros(N * K, dtype=np.int32)
    for j in range(K):
        ix = range(N * j, N * (j + 1))
        r = np.linspace(0.0, 1, N)  # radius
        t = np.linspace(j * 4, (j + 1) * 4, N) + rng.normal(size=N) * 0.2  # theta
        X[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    return Dataset("spiral", X.astype(np.float32), y, None, None, None, None, K)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as ``(X (1797, 64) float64, y (1797,) int32)``, read
    from the file scikit-learn ships (``datasets/data/digits.csv.gz``) without importing
    scikit-learn, whose import takes longer than the rest of loading them (about 0.5 s);
    through ``sklearn.datasets.load_digits`` where that file is not found."""
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], "datasets", "data",
                            "digits.csv.gz")
        if os.path.isfile(path):
            table = np.loadtxt(path, delimiter=",")  # 64 pixels, then the label
            return table[:, :-1], table[:, -1].astype(np.int32)
    ds = _need("sklearn.datasets").load_digits()
    return ds.data, ds.target.astype(np.int32)


def digits(val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 64 features), standardized."""
    X, y = digits_arrays()
    (Xv, yv), (Xt, yt), (Xtr, ytr) = split(X, y, [val_fraction, test_fraction], seed)
    Xtr, Xv, Xt = standardize(Xtr, Xv, Xt)
    return Dataset("digits", Xtr, ytr, Xv, yv, Xt, yt, 10)


def mnist1d(val_fraction: float = 0.0, seed: int = 0) -> Dataset:
    """MNIST-1D from the ``mnist1d`` package's generator with its default arguments
    (4000 train / 1000 test, 40 features); never its downloader.

    ``val_fraction`` carves a validation split out of the 4000 (default none, as in
    the MNIST-1D paper's table).
    """
    gen = _need("mnist1d.data")
    state = np.random.get_state()  # the generator seeds numpy's global RNG; put it back
    try:
        d = gen.make_dataset(gen.get_dataset_args())
    finally:
        np.random.set_state(state)
    X, y = d["x"], np.asarray(d["y"], np.int32)
    X_test, y_test = d["x_test"], np.asarray(d["y_test"], np.int32)
    X_val = y_val = None
    if val_fraction > 0:
        (X_val, y_val), (X, y) = split(X, y, [val_fraction], seed)
    X, X_val, X_test = standardize(X, X_val, X_test)
    return Dataset("mnist1d", X, y, X_val, y_val, X_test, y_test, 10)


class _BatchUnpickler(pickle.Unpickler):
    """Admits only what the CIFAR-10 python batches hold: dicts, lists, bytes, str,
    ints, and numpy arrays of plain dtypes. Anything else is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how a protocol-2 pickle written by Python 3 stores bytes
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a CIFAR-10 batch holds only dicts, lists, "
            "bytes and numpy arrays")


def load_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One file of the official python version: ``(X (N, 3072) uint8, y (N,) int32)``."""
    if not os.path.isfile(path):
        raise ValueError(f"{path} is not a file: expected a CIFAR-10 python batch")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from e
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
        X = np.asarray(batch[b"data"], dtype=np.uint8)
        y = np.asarray(batch[b"labels"], dtype=np.int32)
    except (pickle.UnpicklingError, KeyError, EOFError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a CIFAR-10 python batch: {e}") from e
    if X.ndim != 2 or X.shape[1] != 3072 or len(y) != len(X):
        raise ValueError(f"{path}: expected data of shape (N, 3072) and N labels; "
                         f"got {X.shape} and {len(y)}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{path}: CIFAR-10 labels are 0..9; found {y.min()}..{y.max()}")
    return X, y


def cifar10(data_dir: str, num_val: int = 1000) -> Dataset:
    """CIFAR-10 from ``data_dir`` (``data_batch_1..5``, ``test_batch``: the official
    python version, cifar-10-batches-py). The last ``num_val`` training images are the
    validation split (CS231n: 49000 / 1000); the mean image of the training split is
    subtracted from all three."""
    names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in names + ["test_batch"] if not os.path.exists(os.path.join(data_dir, n))]
    if missing:
        raise FileNotFoundError(
            f"{data_dir} lacks {', '.join(missing)}: put the extracted cifar-10-batches-py "
            "there (this tool never downloads)")
    parts = [load_cifar_batch(os.path.join(data_dir, n)) for n in names]
    X = np.concatenate([p[0] for p in parts]).astype(np.float32)
    y = np.concatenate([p[1] for p in parts])
    X_test, y_test = load_cifar_batch(os.path.join(data_dir, "test_batch"))
    if len(X) <= num_val or not len(X_test):
        raise ValueError(f"{data_dir}: the training batches hold {len(X)} images and the test "
                         f"batch {len(X_test)}; need more than {num_val} (the last {num_val} "
                         "are the validation split) and at least one")
    X_tr, y_tr, X_val, y_val = X[:-num_val], y[:-num_val], X[-num_val:], y[-num_val:]
    mean_image = X_tr.mean(0)
    return Dataset("cifar10", X_tr - mean_image, y_tr, X_val - mean_image, y_val,
                   X_test.astype(np.float32) - mean_image, y_test, 10)


def regression(N: int = 64, D_in: int = 1000, D_out: int = 10, seed: int = 0):
    """The lecture's numpy example data: ``x (N, D_in)``, ``y (N, D_out)``, both randn."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, D_in)), rng.normal(size=(N, D_out))


DATASETS = {"spiral": spiral, "digits": digits, "mnist1d": mnist1d, "cifar10": cifar10}


def load(name: str, data_dir: str | None = None, *, label_column: str | None = None,
         val_fraction: float = 0.15, seed: int = 0, preprocess: str = "standardize",
         many_classes: bool = False) -> Dataset:
    """A bundled dataset by name (``cifar10`` needs ``data_dir``), or a file of your own:
    a path (``.npz`` or ``.csv``: :mod:`mlp_jax.files`), made a dataset by
    :func:`from_arrays` with the other arguments."""
    if name not in DATASETS and (os.path.splitext(name)[1] or os.path.exists(name)):
        arrays = files.read(name, label_column=label_column)
        return from_arrays(**arrays, val_fraction=val_fraction, seed=seed,
                           preprocess=preprocess, name=os.path.basename(name),
                           many_classes=many_classes, copy=False)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}, "
                         "or a .npz or .csv file")
    if name == "cifar10":
        if not data_dir:
            raise ValueError("cifar10 needs --data-dir pointing at cifar-10-batches-py")
        return cifar10(data_dir)
    return DATASETS[name]()


__all__ = ["DATASETS", "MAX_CLASSES_FLOOR", "PREPROCESS", "Dataset", "Preprocessing",
           "check_features", "cifar10", "digits", "from_arrays", "load", "load_cifar_batch",
           "mnist1d", "regression", "spiral", "split", "standardize"]
