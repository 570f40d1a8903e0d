"""Many trainings as one compiled program: ``vmap`` over seeds and hyperparameters.

Every configuration runs the same fused epochs (``train.run_epochs``); the
hyperparameters that differ (learning rate, reg, dropout, the seed's key) are
arrays with a leading configuration axis, so one compilation serves them all.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .optim import GradientTransformation
from .spec import MLPSpec
from .train import evaluate, init_state, run_epochs


class SweepResult(NamedTuple):
    configs: list[dict]  # one dict per configuration: seed, lr, reg, dropout
    params: tuple  # final params, every leaf stacked: leading axis = configuration
    losses: np.ndarray  # (configs, epochs, steps_per_epoch) minibatch losses

    def final_loss(self) -> np.ndarray:
        """Mean minibatch loss over each configuration's last epoch, ``(configs,)``."""
        return self.losses[:, -1, :].mean(axis=1)

    def params_of(self, i: int):
        return jax.tree.map(lambda a: a[i], self.params)


def grid(seeds=(0,), lrs=(1e-3,), regs=(None,), dropouts=(None,)) -> list[dict]:
    """The Cartesian product, as a list of configuration dicts (None: the spec's value)."""
    return [dict(seed=s, lr=lr, reg=r, dropout=p)
            for s, lr, r, p in itertools.product(seeds, lrs, regs, dropouts)]


def make_sweep(spec: MLPSpec, make_optimizer: Callable[[jax.Array], GradientTransformation],
               *, epochs: int, batch_size: int, grad: str = "backprop",
               sweep_dropout: bool = False):
    """A jitted ``run(keys, lrs, regs, dropouts, X, Y) -> (states, losses)`` over configs.

    ``make_optimizer(lr)`` builds the optimizer from a traced learning rate,
    e.g. ``lambda lr: optim.momentum(lr, 0.9)``.
    """
    def one(key, lr, reg, dropout, X, Y):
        opt = make_optimizer(lr)
        state = init_state(key, spec, opt)
        return run_epochs(spec, opt, grad, batch_size, epochs, state, X, Y, reg,
                          dropout if sweep_dropout else None)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None, None)))


def sweep(spec: MLPSpec, data, make_optimizer: Callable[[jax.Array], GradientTransformation],
          configs: list[dict], *, epochs: int, batch_size: int,
          grad: str = "backprop") -> SweepResult:
    """Train every configuration of ``configs`` (see :func:`grid`) at once.

    Args:
      spec: the network (its ``reg``/``dropout`` are overridden per configuration;
        a config's ``dropout`` of None keeps the spec's).
      data: a ``data.Dataset`` (its training split is used).
      make_optimizer: ``lr -> GradientTransformation``, called with a traced lr.
      configs: dicts with ``seed``, ``lr``, ``reg`` and ``dropout``.

    Returns:
      A :class:`SweepResult` with stacked final params and every minibatch loss.
    """
    if not configs:
        raise ValueError("sweep needs at least one configuration")
    sweep_dropout = any(c.get("dropout") is not None for c in configs)
    keys = jnp.stack([jax.random.key(int(c["seed"])) for c in configs])
    lrs = jnp.asarray([c["lr"] for c in configs], jnp.float32)
    regs = jnp.asarray([spec.reg if c.get("reg") is None else c["reg"] for c in configs],
                       jnp.float32)
    drops = jnp.asarray([spec.dropout if c.get("dropout") is None else c["dropout"]
                         for c in configs], jnp.float32)
    run = make_sweep(spec, make_optimizer, epochs=epochs, batch_size=batch_size, grad=grad,
                     sweep_dropout=sweep_dropout)
    states, losses = run(keys, lrs, regs, drops, jnp.asarray(data.X_train),
                         jnp.asarray(data.y_train))
    return SweepResult(configs, states.params, np.asarray(losses))


def evaluate_all(result: SweepResult, X, Y, spec: MLPSpec) -> np.ndarray:
    """``(configs, 2)``: loss and accuracy of every configuration's final params."""
    return np.array([evaluate(result.params_of(i), X, Y, spec)
                     for i in range(len(result.configs))])


__all__ = ["SweepResult", "evaluate_all", "grid", "make_sweep", "sweep"]
