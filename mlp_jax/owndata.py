"""Data of your own as a :class:`~mlp_jax.dataset.Dataset` (:func:`from_arrays`): each
split checked (finite numeric features, class labels), a validation split drawn when
there is none, features standardized by the training split's statistics, labels mapped
to class indices; the :class:`~mlp_jax.dataset.Preprocessing` fitted is attached."""

from __future__ import annotations

import numpy as np

from . import files
from .dataset import Dataset, Preprocessing, class_labels, row_blocks
from .validate import check_features


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
    for rows in row_blocks(len(keep)):  # keep[i] >= i: each block reads rows not yet moved
        X[rows] = X[keep[rows]]
    return (X_val, y_val), (X[:len(keep)], y[keep])


def feature_mean_std(X: np.ndarray):
    """Per-feature mean and std in float64, a block of rows at a time (no copy of X)."""
    total = np.zeros(X.shape[1])
    for rows in row_blocks(len(X)):
        total += X[rows].sum(0, dtype=np.float64)
    mean = total / len(X)
    sq = np.zeros(X.shape[1])
    for rows in row_blocks(len(X)):
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
        ys = class_labels(ys, "y" if part == "train" else f"y_{part}")
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
        mean, std = feature_mean_std(X)
        prep = prep._replace(mean=mean.astype(np.float32),
                             std=np.where(std > 0, std, 1.0).astype(np.float32))
        splits["train"], owned["train"] = (X, y), True
    out = {}
    for part, (Xs, ys) in splits.items():
        labels = "y" if part == "train" else f"y_{part}"
        out[part] = (None, None) if Xs is None else \
            (prep.transform(Xs, copy=not owned[part]), prep.encode(ys, labels))
    return Dataset(name, *out["train"], *out["val"], *out["test"], len(classes), prep)
