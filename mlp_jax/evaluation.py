"""Trained params on data: loss and accuracy over a split, or over a dataset's splits.

Evaluation mode: no dropout or input noise, batch norm by its running statistics. The
loss includes the ``reg`` penalty of the :class:`~mlp_jax.spec.Hyper` given (the
spec's when None), so a sweep's configuration is scored with its own ``reg``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .epochs import hyper_arrays
from .losses import predicted_labels
from .network import forward, l2_penalty, loss
from .spec import Hyper, MLPSpec

EVAL_CHUNK = 1 << 14  # examples per compiled evaluation call: bounds its activations
SPLITS = ("train", "val", "test")


@partial(jax.jit, static_argnames="spec")
def _evaluate(params, stats, X, Y, spec, hyper):
    scores = forward(params, X, spec, stats=stats)
    value = loss(params, X, Y, spec, hyper=hyper, stats=stats)
    pred = predicted_labels(scores, spec.loss_fn.labels)
    correct = jnp.nan if pred is None else jnp.sum(pred == Y)  # a count: exact
    return value, correct


def evaluate(params, X, Y, spec: MLPSpec, hyper: Hyper | None = None,
             stats: tuple | None = None) -> tuple[float, float]:
    """``(loss, accuracy)`` on a whole split, in evaluation mode (batch norm by its
    running statistics ``stats``); the loss includes ``hyper.reg``'s penalty. Accuracy
    is NaN for the squared loss (no classes). A split larger than ``EVAL_CHUNK`` is
    evaluated a chunk at a time (the chunks' means weighted by their sizes), so memory
    stays bounded."""
    hyper = hyper_arrays(spec, params, hyper)
    n = len(X)
    if n <= EVAL_CHUNK:
        value, correct = _evaluate(params, stats, jnp.asarray(X), jnp.asarray(Y), spec, hyper)
        return float(value), float(correct) / n
    data_only = hyper._replace(reg=jnp.zeros_like(hyper.reg))
    total = correct = 0.0
    for i in range(0, n, EVAL_CHUNK):
        Xc, Yc = jnp.asarray(X[i:i + EVAL_CHUNK]), jnp.asarray(Y[i:i + EVAL_CHUNK])
        value, right = _evaluate(params, stats, Xc, Yc, spec, data_only)
        total += float(value) * len(Xc)
        correct += float(right)
    return total / n + float(l2_penalty(params, hyper.reg)), correct / n


def splits_of(data, names=SPLITS) -> dict[str, tuple]:
    """``{name: (X, y)}`` for each of ``names`` that ``data`` (a ``data.Dataset``, or any
    object with ``X_train, y_train, ...``) has."""
    return {name: (getattr(data, f"X_{name}"), getattr(data, f"y_{name}")) for name in names
            if getattr(data, f"X_{name}", None) is not None}


def evaluate_splits(params, spec: MLPSpec, splits: dict[str, tuple], hyper: Hyper | None = None,
                    stats: tuple | None = None) -> dict[str, float]:
    """``{"train_loss": ..., "train_acc": ..., "val_loss": ...}``: :func:`evaluate` on each
    ``(X, y)`` of ``splits`` (:func:`splits_of`), with the same ``hyper`` and ``stats``."""
    out = {}
    for name, (X, Y) in splits.items():
        out[f"{name}_loss"], out[f"{name}_acc"] = evaluate(params, X, Y, spec, hyper, stats)
    return out


__all__ = ["EVAL_CHUNK", "evaluate", "evaluate_splits", "splits_of"]
