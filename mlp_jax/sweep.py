"""Many trainings as one compiled program: ``vmap`` over seeds and hyperparameters.

Every configuration runs the same fused epochs (``train.run_epochs``); what differs
(the seed's key, the learning rate and the :class:`~mlp_jax.spec.Hyper`: reg,
dropout rate, input noise) are arrays with a leading configuration axis, so one
compilation serves them all.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .optim import GradientTransformation
from .spec import Hyper, MLPSpec
from .train import evaluate, init_state, run_epochs

HYPER_FIELDS = Hyper._fields  # ("reg", "dropout", "input_noise")


class SweepResult(NamedTuple):
    configs: list[dict]  # one dict per configuration: seed, lr, reg, dropout, input_noise
    params: tuple  # final params, every leaf stacked: leading axis = configuration
    losses: np.ndarray  # (configs, epochs, steps_per_epoch) minibatch losses

    def final_loss(self) -> np.ndarray:
        """Mean minibatch loss over each configuration's last epoch, ``(configs,)``."""
        return self.losses[:, -1, :].mean(axis=1)

    def params_of(self, i: int):
        return jax.tree.map(lambda a: a[i], self.params)


def grid(seeds=(0,), lrs=(1e-3,), regs=(None,), dropouts=(None,),
         input_noises=(None,)) -> list[dict]:
    """The Cartesian product, as a list of configuration dicts (None: the spec's value)."""
    return [dict(seed=s, lr=lr, reg=r, dropout=p, input_noise=n)
            for s, lr, r, p, n in itertools.product(seeds, lrs, regs, dropouts, input_noises)]


def make_sweep(spec: MLPSpec, make_optimizer: Callable[[jax.Array], GradientTransformation],
               *, epochs: int, batch_size: int, grad: str = "backprop"):
    """A jitted ``run(keys, lrs, hypers, X, Y) -> (states, losses)`` over configs: every
    leaf of ``keys``, ``lrs`` and ``hypers`` (a :class:`Hyper`) has a leading config axis.

    ``make_optimizer(lr)`` builds the optimizer from a traced learning rate,
    e.g. ``lambda lr: optim.momentum(lr, 0.9)``.
    """
    def one(key, lr, hyper, X, Y):
        opt = make_optimizer(lr)
        state = init_state(key, spec, opt)
        return run_epochs(spec, opt, grad, batch_size, epochs, state, X, Y, hyper)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None, None)))


def sweep(spec: MLPSpec, data, make_optimizer: Callable[[jax.Array], GradientTransformation],
          configs: list[dict], *, epochs: int, batch_size: int,
          grad: str = "backprop") -> SweepResult:
    """Train every configuration of ``configs`` (see :func:`grid`) at once.

    Args:
      spec: the network; its ``reg``, ``dropout`` and ``input_noise`` are the values of
        a config that leaves them out (or gives None). Dropout and input noise can be
        swept only where the spec has them (a nonzero default): they are architecture.
      data: a ``data.Dataset`` (its training split is used).
      make_optimizer: ``lr -> GradientTransformation``, called with a traced lr.
      configs: dicts with ``seed``, ``lr`` and optionally ``reg``, ``dropout``,
        ``input_noise``.

    Returns:
      A :class:`SweepResult` with stacked final params and every minibatch loss.
    """
    if not configs:
        raise ValueError("sweep needs at least one configuration")
    for field, default in zip(HYPER_FIELDS, spec.hyper()):
        asked = [c[field] for c in configs if c.get(field) is not None]
        if field != "reg" and default == 0 and any(v != 0 for v in asked):
            raise ValueError(f"a config sets {field}={max(asked)} but the spec has no "
                             f"{field} (MLPSpec({field}=0)); give the spec a nonzero "
                             f"{field} so that its program has one, then sweep the value")
    dtype = jnp.promote_types(spec.dtype, jnp.float32)  # float64 sweeps stay float64
    keys = jnp.stack([jax.random.key(int(c["seed"])) for c in configs])
    lrs = jnp.asarray([c["lr"] for c in configs], dtype)
    hypers = Hyper(*(jnp.asarray([default if c.get(field) is None else c[field]
                                  for c in configs], dtype)
                     for field, default in zip(HYPER_FIELDS, spec.hyper())))
    run = make_sweep(spec, make_optimizer, epochs=epochs, batch_size=batch_size, grad=grad)
    states, losses = run(keys, lrs, hypers, jnp.asarray(data.X_train),
                         jnp.asarray(data.y_train))
    return SweepResult(configs, states.params, np.asarray(losses))


def evaluate_all(result: SweepResult, X, Y, spec: MLPSpec) -> np.ndarray:
    """``(configs, 2)``: loss and accuracy of every configuration's final params."""
    return np.array([evaluate(result.params_of(i), X, Y, spec)
                     for i in range(len(result.configs))])


__all__ = ["SweepResult", "evaluate_all", "grid", "make_sweep", "sweep"]
