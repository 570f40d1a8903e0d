"""Training health, as CS231n "Neural Networks Part 3" teaches to watch it.

* :func:`initial_loss`: with small weights the first loss should be ln C (softmax),
  C - 1 (svm), ln 2 (logistic) or 1 (hinge).
* :func:`unit_stats`: per hidden layer, the fraction of *dead* units (the activation's
  derivative is 0 on every example: a ReLU that never fires) and of *saturated*
  pre-activations (0 < |f'(z)| < 0.01: a sigmoid or tanh in its flat tails). Both
  read the activation's own derivative, so they mean the same for every activation.
* :func:`grad_norms` and :func:`update_ratios`: per-layer ``||dW||`` and
  ``||update|| / ||W||`` (the lectures' rule of thumb: about 1e-3).
* :class:`Diagnostics`: all of the above as a ``fit`` callback, adding them to each
  history row.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .backprop import backprop
from .network import forward_with_cache
from .spec import MLPSpec

SATURATION = 1e-2


def expected_initial_loss(spec: MLPSpec) -> float | None:
    C = spec.sizes[-1]
    return {"softmax": math.log(C), "svm": C - 1.0, "logistic": math.log(2.0),
            "hinge": 1.0}.get(spec.loss_fn.name)


def initial_loss(params, x, y, spec: MLPSpec, rtol: float = 0.05, stats=None) -> dict:
    """The data loss (no penalty) against its small-weight value; ``ok`` within ``rtol``.
    ``stats``: batch norm's running statistics (here and below: evaluation mode)."""
    from .network import loss

    value = float(loss(params, x, y, spec, hyper=spec.hyper()._replace(reg=0.0), stats=stats))
    expected = expected_initial_loss(spec)
    ok = None if expected is None else abs(value - expected) <= rtol * expected
    return {"loss": value, "expected": expected, "ok": ok}


def unit_stats(params, x, spec: MLPSpec, stats=None) -> list[dict]:
    """Per hidden layer, over all of ``x`` (evaluation mode): dead and saturated fractions."""
    _, cache = forward_with_cache(params, x, spec, stats=stats)
    out = []
    for entry in cache[:-1]:
        act = spec.elementwise_activation
        if act is None:  # maxout: the winning piece always passes the gradient: never dead
            deriv = jnp.ones_like(entry["a"])
        else:
            deriv = jnp.abs(act.deriv(entry["z"], entry["a"]))  # (N, H)
        out.append({
            "dead": float(jnp.mean(jnp.all(deriv == 0, axis=0))),
            "saturated": float(jnp.mean((deriv > 0) & (deriv < SATURATION))),
            "mean_abs_activation": float(jnp.mean(jnp.abs(entry["a"]))),
        })
    return out


def grad_norms(grads) -> list[float]:
    """``||dW||`` per layer."""
    return [float(jnp.linalg.norm(g["W"])) for g in grads]


def update_ratios(params, updates) -> list[float]:
    """``||update_W|| / ||W||`` per layer (the lectures suggest about 1e-3)."""
    return [float(jnp.linalg.norm(u["W"]) / jnp.maximum(jnp.linalg.norm(p["W"]), 1e-30))
            for p, u in zip(params, updates)]


class Diagnostics:
    """A ``fit`` callback: adds per-layer diagnostics on a probe batch to every history row.

    Args:
      spec, optimizer: as given to ``fit``.
      x, y: the probe batch (e.g. 500 training examples).
    """

    def __init__(self, spec: MLPSpec, optimizer, x, y):
        self.spec, self.optimizer = spec, optimizer
        self.x, self.y = jnp.asarray(x), jnp.asarray(y)

    def __call__(self, state, row: dict) -> None:
        _, grads = backprop(state.params, self.x, self.y, self.spec, stats=state.stats)
        updates, _ = self.optimizer.update(grads, state.opt_state, state.params)
        stats = unit_stats(state.params, self.x, self.spec, state.stats)
        row["grad_norm"] = grad_norms(grads)
        row["update_ratio"] = update_ratios(state.params, updates)
        row["dead"] = [s["dead"] for s in stats]
        row["saturated"] = [s["saturated"] for s in stats]


def per_layer_grad_norms(params, x, y, spec: MLPSpec, stats=None) -> np.ndarray:
    """``||dW||`` per layer at ``params`` (layer 1 first)."""
    return np.array(grad_norms(backprop(params, x, y, spec, stats=stats)[1]))


__all__ = ["Diagnostics", "expected_initial_loss", "grad_norms", "initial_loss",
           "per_layer_grad_norms", "unit_stats", "update_ratios"]
