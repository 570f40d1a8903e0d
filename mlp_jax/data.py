"""Datasets and minibatching.

Every loader returns a :class:`Dataset` of float32 features and integer labels,
with deterministic splits and preprocessing fitted on the training split only
(standardization, or CIFAR's mean image). Nothing is downloaded: ``digits``
needs scikit-learn, ``mnist1d`` the ``mnist1d`` package's generator (both in the
``data`` extra), ``cifar10`` a local copy of the official python batches.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import NamedTuple

import numpy as np

from . import files
from .validate import first_nonfinite


class Preprocessing(NamedTuple):
    """What a dataset of your own was fitted with on its training split, so that
    evaluation and prediction apply exactly the same (a checkpoint stores it).

    Attributes:
      classes: your label values in class order: class ``i`` is ``classes[i]`` (sorted
        ints or strings).
      mean, std: per-feature statistics of the training split, float32 ``(D,)`` (a
        constant feature's std is 1: only centred); None: features used as given.
      features: the feature columns' names (a CSV's header), or None.
      label_column: the CSV's label column, or None.
    """

    classes: tuple
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    features: tuple | None = None
    label_column: str | None = None

    def transform(self, X: np.ndarray, *, copy: bool = True) -> np.ndarray:
        """``X`` as the network saw its training data: float32, standardized when fitted.
        ``copy=False`` transforms a float32 ``X`` in place."""
        X = np.array(X, np.float32, copy=copy or None)
        if self.mean is not None:
            for rows in _row_blocks(len(X)):  # in place, a block at a time
                X[rows] -= self.mean
                X[rows] /= self.std
        return X

    def encode(self, y, what: str = "y") -> np.ndarray:
        """Your labels as class indices ``0..C-1``; a value unseen in training is an error."""
        y = _labels(y, what)
        classes = np.asarray(self.classes)
        if classes.dtype.kind == "U" and y.dtype.kind in "iu":  # '0', '1', 'three' trained;
            y = y.astype(str)  # a file whose labels happen to be all whole numbers
        if classes.dtype.kind != y.dtype.kind and not (y.dtype.kind in "iu" and
                                                        classes.dtype.kind in "iu"):
            raise ValueError(f"{what} holds labels like {y[0]!r}, training had labels like "
                             f"{self.classes[0]!r}")
        index = np.searchsorted(classes, y)
        index = np.minimum(index, len(classes) - 1)
        unseen = classes[index] != y
        if unseen.any():
            values = ", ".join(repr(v.item()) for v in np.unique(y[unseen])[:5])
            raise ValueError(f"{what} holds labels never seen in training: {values} "
                             f"(row {int(np.argmax(unseen))} first); training had "
                             f"{_some(self.classes)}")
        return index.astype(np.int32)

    def decode(self, index) -> np.ndarray:
        """Class indices back to your label values."""
        return np.asarray(self.classes)[np.asarray(index)]


class Dataset(NamedTuple):
    """Splits as numpy arrays; ``X_*`` of shape ``(N, D)`` float32, ``y_*`` ``(N,)``.
    ``preprocessing``: for data of your own (:func:`from_arrays`), what was fitted."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    X_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int
    preprocessing: Preprocessing | None = None

    def describe(self) -> str:
        n = lambda a: 0 if a is None else len(a)  # noqa: E731
        return (f"{self.name}: {n(self.X_train)} train / {n(self.X_val)} val / "
                f"{n(self.X_test)} test, {self.X_train.shape[1]} features, "
                f"{self.num_classes} classes")


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
    mean, std = _moments(train)
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


def digits(val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 64 features), standardized."""
    ds = _need("sklearn.datasets").load_digits()
    (Xv, yv), (Xt, yt), (Xtr, ytr) = split(ds.data, ds.target.astype(np.int32),
                                           [val_fraction, test_fraction], seed)
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


def _row_blocks(n: int, size: int = 1 << 16):
    return (slice(i, min(i + size, n)) for i in range(0, n, size))


def _some(values, most: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:most])
    return f"{len(values)} labels ({shown}{', ...' if len(values) > most else ''})"


def _labels(y, what: str) -> np.ndarray:
    """Labels as a 1-D array of ints or strings (floats only where whole numbers)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{what} must be one label per example, shape (N,); got {y.shape}")
    if y.dtype.kind in "iub":  # booleans as 0 and 1
        return y.astype(np.int64)
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        return y.astype(np.int64)
    if y.dtype.kind in "US" or (y.dtype.kind == "O" and all(isinstance(v, str) for v in y)):
        return y.astype(str)
    raise ValueError(f"{what} must hold class labels (integers or strings); got {y.dtype} "
                     f"values like {y[:3].tolist()}")


def check_features(X, what: str = "X", columns=None) -> np.ndarray:
    """``X`` as a 2-D numeric array whose every value is finite, or a ValueError naming
    the first bad row and column."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] == 0:
        raise ValueError(f"{what} must be a 2-D array (examples, features); got shape {X.shape}")
    if X.dtype.kind not in "fiub":
        raise ValueError(f"{what} must be numeric; got {X.dtype}")
    where = first_nonfinite(X) if X.dtype.kind == "f" else None
    if where is not None:
        r, c = where
        name = f" ({columns[c]!r})" if columns is not None else ""
        raise ValueError(f"{what} row {r}, column {c}{name} is {X[r, c]}: features must be "
                         "finite numbers")
    if X.dtype.itemsize > 4 or X.dtype.kind in "iu":  # float64, int64: beyond float32?
        for rows in _row_blocks(len(X)):  # a block at a time: no full-size temporary
            big = np.abs(X[rows]) > files.F32_MAX
            if big.any():
                r, c = (int(i) for i in np.argwhere(big)[0])
                r += rows.start
                name = f" ({columns[c]!r})" if columns is not None else ""
                raise ValueError(f"{what} row {r}, column {c}{name} is {X[r, c]}: beyond "
                                 f"float32's range ({files.F32_MAX:.3g}), which the network "
                                 "computes in; rescale it")
    return X


def _draw_validation(X, y, n_val: int, seed: int, *, in_place: bool):
    """``n_val`` examples drawn by ``seed`` as the validation split, the rest (in their
    order) as training. ``in_place``: the training rows are moved up within ``X``'s own
    memory (and returned as a view of its first rows), so a large array is never held
    twice."""
    val = np.zeros(len(y), bool)
    val[np.random.default_rng(seed).permutation(len(y))[:n_val]] = True
    keep = np.flatnonzero(~val)
    X_val = files.aligned_empty((n_val, X.shape[1]), X.dtype)
    X_val[:], y_val = X[val], y[val]
    if not in_place:
        return (X_val, y_val), (X[keep], y[keep])
    for rows in _row_blocks(len(keep)):  # keep[i] >= i: each block reads rows not yet moved
        X[rows] = X[keep[rows]]
    return (X_val, y_val), (X[:len(keep)], y[keep])


def _moments(X: np.ndarray):
    """Per-feature mean and std in float64, a block of rows at a time (no copy of X)."""
    total = np.zeros(X.shape[1])
    for rows in _row_blocks(len(X)):
        total += X[rows].sum(0, dtype=np.float64)
    mean = total / len(X)
    sq = np.zeros(X.shape[1])
    for rows in _row_blocks(len(X)):
        sq += ((X[rows] - mean) ** 2).sum(0)
    return mean, np.sqrt(sq / len(X))


PREPROCESS = ("standardize", "none")
MAX_CLASSES_FLOOR = 20  # more classes than max(this, N/10): not class labels


def from_arrays(X, y, X_val=None, y_val=None, X_test=None, y_test=None, *,
                val_fraction: float = 0.15, seed: int = 0, preprocess: str = "standardize",
                name: str = "arrays", features=None, label_column=None,
                many_classes: bool = False, copy: bool = True) -> Dataset:
    """A :class:`Dataset` of your own arrays, with its preprocessing fitted and attached.

    Args:
      X, y: training examples ``(N, D)`` (numeric, finite) and labels ``(N,)`` (any
        integers or strings: mapped to ``0..C-1`` in sorted order, ``C >= 2``).
      X_val, y_val, X_test, y_test: optional further splits, labels among y's.
      val_fraction: without ``X_val``, this share of the examples (shuffled by ``seed``)
        becomes the validation split; 0 for none.
      preprocess: ``"standardize"`` (zero mean, unit variance per feature, statistics
        of the training split only) or ``"none"``.
      features, label_column: names kept for prediction files (a CSV's header).
      many_classes: train even when ``y`` has more than ``max(20, N/10)`` distinct labels
        (refused by default: that many looks like a regression target, not classes).
      copy: False lets the float32 arrays given be transformed in place (a loader's own
        arrays: no second copy of a large file).

    The returned dataset's ``preprocessing`` holds the label values and the statistics;
    ``Preprocessing.transform`` and ``encode`` apply them to new data.
    """
    if preprocess not in PREPROCESS:
        raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS)}; got {preprocess!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    splits = {"train": (X, y), "val": (X_val, y_val), "test": (X_test, y_test)}
    for part, (Xs, ys) in splits.items():
        if (Xs is None) != (ys is None):
            raise ValueError(f"the {part} split needs both X_{part} and y_{part}")
        if Xs is None:
            continue
        what = "X" if part == "train" else f"X_{part}"
        Xs = check_features(Xs, what, features)
        ys = _labels(ys, "y" if part == "train" else f"y_{part}")
        if len(Xs) != len(ys):
            raise ValueError(f"{what} has {len(Xs)} examples but its labels {len(ys)}")
        if len(Xs) == 0:
            raise ValueError(f"{what} has no examples")
        if Xs.shape[1] != np.shape(X)[1]:
            raise ValueError(f"{what} has {Xs.shape[1]} features, X has {np.shape(X)[1]}")
        splits[part] = (Xs, ys)
    X, y = splits["train"]
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"y has a single class ({classes[0].item()!r}): a classifier needs "
                         "at least two")
    if len(classes) > max(MAX_CLASSES_FLOOR, len(y) / 10) and not many_classes:
        raise ValueError(f"y has {len(classes)} distinct labels among {len(y)} examples (a "
                         "regression target?): a classifier needs several examples of each "
                         f"class (at most max({MAX_CLASSES_FLOOR}, N/10) classes); give class "
                         "labels, pick the label column with --label-column, or pass "
                         "--many-classes (many_classes=True) if these are classes")
    owned = dict.fromkeys(splits, not copy)  # which arrays may be transformed in place
    if splits["val"][0] is None and val_fraction > 0:
        n_val = int(round(val_fraction * len(y)))
        if not 0 < n_val < len(y):
            raise ValueError(f"{len(y)} examples are too few to split {val_fraction} of "
                             "them off for validation")
        splits["val"], splits["train"] = _draw_validation(X, y, n_val, seed,
                                                          in_place=owned["train"])
        owned["val"] = owned["train"] = True
    prep = Preprocessing(tuple(c.item() for c in classes), features=None if features is None
                         else tuple(features), label_column=label_column)
    if preprocess == "standardize":
        X, y = splits["train"]
        X = np.array(X, np.float32, copy=not owned["train"] or None)
        mean, std = _moments(X)
        prep = prep._replace(mean=mean.astype(np.float32),
                             std=np.where(std > 0, std, 1.0).astype(np.float32))
        splits["train"], owned["train"] = (X, y), True
    out = {}
    for part, (Xs, ys) in splits.items():
        labels = "y" if part == "train" else f"y_{part}"
        out[part] = (None, None) if Xs is None else \
            (prep.transform(Xs, copy=not owned[part]), prep.encode(ys, labels))
    return Dataset(name, *out["train"], *out["val"], *out["test"], len(classes), prep)


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
