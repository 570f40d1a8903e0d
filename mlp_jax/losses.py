"""Losses, each with its hand-derived gradient with respect to the scores.

A :class:`Loss` holds ``value(scores, y) -> (N,)`` (the per-example loss
``L_i``) and ``grad(scores, y) -> (N, C)`` (``dL_i/dscores_i``). The data loss
is their mean over the batch (ARCHITECTURE.md), so the network divides ``grad`` by N.

Kinks follow the same rule as the activations: each gradient equals
``jax.grad`` of the value beside it, exactly at the margin too (a hinge term
exactly at its margin contributes 0). ``kink_state`` returns the booleans that
flip when a score crosses a kink; the gradient checker compares them across
its finite-difference stencil.

References: CS231n "Linear classification" (softmax, multiclass SVM) and
"Neural Networks Part 2" (losses for binary and real-valued targets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

Array = jax.Array

# What each kind of label must look like; the checks in validate.py read it.
CLASS = "class"  # integer class index in [0, C), shape (N,)
BINARY01 = "binary01"  # 0 or 1, shape (N,), one output score
BINARY_PM1 = "binary_pm1"  # -1 or +1, shape (N,), one output score
REAL = "real"  # real-valued targets, shape (N, C)
LABEL_KINDS = (CLASS, BINARY01, BINARY_PM1, REAL)


@dataclass(frozen=True)
class Loss:
    """A per-example loss and its hand-derived gradient w.r.t. the scores.

    Attributes:
      name: shown in reports and error messages.
      value: ``(scores (N, C), y) -> (N,)``.
      grad: ``(scores (N, C), y) -> (N, C)``, the gradient of ``value[i]``
        with respect to ``scores[i]``.
      labels: one of ``LABEL_KINDS``; says what ``y`` must look like.
      kink_state: optional ``(scores, y) -> bool array`` that changes exactly
        when a score crosses a kink of ``value``.
    """

    name: str
    value: Callable[[Array, Array], Array]
    grad: Callable[[Array, Array], Array]
    labels: str = CLASS
    kink_state: Callable[[Array, Array], Array] | None = None


def _correct_class_score(scores, y):
    """``scores[i, y_i]`` as ``(N, 1)``, selected by comparison (no gather: cheaper on
    every backend, and exact: one score plus zeros)."""
    hit = y[:, None] == jnp.arange(scores.shape[1])[None, :]
    return jnp.sum(jnp.where(hit, scores, 0), axis=1, keepdims=True)  # (N, 1)


def _one_hot(y, num_classes, dtype):
    return (y[:, None] == jnp.arange(num_classes)[None, :]).astype(dtype)


# --- Softmax cross-entropy: L_i = log sum_j e^{s_j} - s_{y_i}. -----------------
# log-sum-exp shifted by a stop-gradient max, so autodiff yields exactly the
# softmax and no exp ever overflows.
def _logsumexp(scores):
    m = jax.lax.stop_gradient(jnp.max(scores, axis=1, keepdims=True))
    return (m + jnp.log(jnp.sum(jnp.exp(scores - m), axis=1, keepdims=True)))[:, 0]


def _softmax_value(scores, y):
    return _logsumexp(scores) - _correct_class_score(scores, y)[:, 0]


def _softmax_grad(scores, y):
    probs = jnp.exp(scores - _logsumexp(scores)[:, None])  # (N, C)
    return probs - _one_hot(y, scores.shape[1], scores.dtype)


# --- Multiclass SVM: L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + 1). -----------
def _svm_margins(scores, y):
    margins = scores - _correct_class_score(scores, y) + 1.0  # (N, C)
    return jnp.where(_one_hot(y, scores.shape[1], bool), 0.0, margins)


def _svm_value(scores, y):
    margins = _svm_margins(scores, y)
    return jnp.sum(jnp.where(margins <= 0, 0.0, margins), axis=1)  # NaN stays NaN


def _svm_grad(scores, y):
    active = (_svm_margins(scores, y) > 0).astype(scores.dtype)  # (N, C)
    return active - _one_hot(y, scores.shape[1], scores.dtype) * active.sum(1, keepdims=True)


def _svm_kinks(scores, y):
    return _svm_margins(scores, y) > 0


# --- Logistic (binary cross-entropy from one logit, labels 0/1): --------------
# L_i = log(1 + e^s) - y s, written with logaddexp so it is stable at any s.
def _logistic_value(scores, y):
    s = scores[:, 0]
    return jnp.logaddexp(s, 0.0) - y * s


def _logistic_grad(scores, y):
    return (jax.nn.sigmoid(scores[:, 0]) - y)[:, None]


# --- Binary hinge (SVM, labels -1/+1): L_i = max(0, 1 - y s). ------------------
def _hinge_value(scores, y):
    margin = 1.0 - y * scores[:, 0]
    return jnp.where(margin <= 0, 0.0, margin)  # NaN stays NaN


def _hinge_grad(scores, y):
    margin = 1.0 - y * scores[:, 0]
    return jnp.where(margin > 0, -y, 0.0).astype(scores.dtype)[:, None]


def _hinge_kinks(scores, y):
    return 1.0 - y * scores[:, 0] > 0


# --- Squared error, summed over outputs: L_i = sum_j (s_j - y_j)^2. ------------
def _squared_value(scores, y):
    return jnp.sum((scores - y) ** 2, axis=1)


def _squared_grad(scores, y):
    return 2.0 * (scores - y)


SOFTMAX = Loss("softmax", _softmax_value, _softmax_grad, CLASS)
SVM = Loss("svm", _svm_value, _svm_grad, CLASS, _svm_kinks)
LOGISTIC = Loss("logistic", _logistic_value, _logistic_grad, BINARY01)
HINGE = Loss("hinge", _hinge_value, _hinge_grad, BINARY_PM1, _hinge_kinks)
SQUARED = Loss("squared", _squared_value, _squared_grad, REAL)

LOSSES = {loss.name: loss for loss in (SOFTMAX, SVM, LOGISTIC, HINGE, SQUARED)}
LOSS_NAMES = tuple(LOSSES)


def get_loss(name: str | Loss) -> Loss:
    """The :class:`Loss` for a built-in name (or the object itself)."""
    if isinstance(name, Loss):
        return name
    if name not in LOSSES:
        raise ValueError(
            f"unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)}, "
            "or a Loss(name, value, grad, labels) of your own"
        )
    return LOSSES[name]


def predicted_labels(scores, kind: str):
    """The labels ``scores (N, C)`` predict, in the convention ``kind`` of a loss's labels
    (:attr:`Loss.labels`): the top class, or the sign of the one score (as 0/1 or -1/+1);
    None for real-valued targets (no classes)."""
    if kind == CLASS:
        return jnp.argmax(scores, axis=1)
    if kind == BINARY01:
        return (scores[:, 0] > 0).astype(jnp.int32)
    if kind == BINARY_PM1:
        return jnp.where(scores[:, 0] > 0, 1, -1)
    return None
