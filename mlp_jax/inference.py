"""Predictions on new data, with the preprocessing the training run fitted.

``predict(params, X, spec, preprocessing)`` standardizes ``X`` as the training split
was, runs the network in evaluation mode a chunk at a time, and gives labels in your
own label values (``Preprocessing.classes``), with softmax probabilities for the
softmax loss and the raw scores always.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .dataset import Preprocessing
from .evaluation import EVAL_CHUNK
from .losses import BINARY_PM1, REAL, predicted_labels
from .network import forward
from .spec import MLPSpec
from .validate import check_features


class Predictions(NamedTuple):
    labels: np.ndarray | None  # your label values (None for the squared loss: no classes)
    probabilities: np.ndarray | None  # (N, C) softmax, for the softmax loss only
    scores: np.ndarray  # (N, C) the network's outputs


@partial(jax.jit, static_argnames="spec")
def _outputs(params, stats, X, spec):
    scores = forward(params, X, spec, stats=stats)
    probs = jax.nn.softmax(scores, axis=1) if spec.loss_fn.name == "softmax" else scores
    return scores, probs, predicted_labels(scores, spec.loss_fn.labels)


def predict(params, X, spec: MLPSpec, preprocessing: Preprocessing | None = None, *,
            stats: tuple | None = None) -> Predictions:
    """What the network says about ``X`` (raw features, as in your file).

    Args:
      params, spec: a trained network (e.g. ``checkpoint.load_params(path)``'s ``params``
        and ``spec``).
      X: ``(N, D)`` features, untransformed: ``preprocessing`` is applied here.
      preprocessing: the training run's (``Dataset.preprocessing``,
        ``load_params(path).preprocessing``); None: ``X`` is used as given and labels are class
        indices.
      stats: batch norm's running statistics (``load_params(path).stats``); a network
        without batch norm needs none.
    """
    X = check_features(X, "X")
    if not len(X):
        raise ValueError("X has no examples")
    if X.shape[1] != spec.sizes[0]:
        raise ValueError(f"X has {X.shape[1]} features; the network takes {spec.sizes[0]}")
    X = preprocessing.transform(X) if preprocessing is not None else np.asarray(X, np.float32)
    parts = [_outputs(params, stats, jnp.asarray(X[i:i + EVAL_CHUNK]), spec)
             for i in range(0, len(X), EVAL_CHUNK)]
    scores, probs, index = (np.concatenate([np.asarray(p[k]) for p in parts]) for k in range(3))
    kind = spec.loss_fn.labels
    if kind == REAL:
        return Predictions(None, None, scores)
    if kind == BINARY_PM1:
        index = (index + 1) // 2  # -1/+1 -> classes 0/1
    labels = index if preprocessing is None else preprocessing.decode(index)
    return Predictions(labels, probs if spec.loss_fn.name == "softmax" else None, scores)


__all__ = ["Predictions", "predict"]
