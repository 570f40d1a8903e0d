"""The :class:`Dataset` every loader returns, and :class:`Preprocessing`: what data of
your own was fitted with on its training split, kept with a run so that evaluation and
prediction apply exactly the same."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


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
            for rows in row_blocks(len(X)):  # in place, a block at a time
                X[rows] -= self.mean
                X[rows] /= self.std
        return X

    def encode(self, y, what: str = "y") -> np.ndarray:
        """Your labels as class indices ``0..C-1``; a value unseen in training is an error."""
        y = class_labels(y, what)
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
                             f"{some_labels(self.classes)}")
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



def row_blocks(n: int, size: int = 1 << 16):
    return (slice(i, min(i + size, n)) for i in range(0, n, size))


def some_labels(values, most: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:most])
    return f"{len(values)} labels ({shown}{', ...' if len(values) > most else ''})"


def class_labels(y, what: str) -> np.ndarray:
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
