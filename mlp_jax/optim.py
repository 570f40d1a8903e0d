"""Optimizers and learning-rate schedules, written by hand (no optax).

An optimizer is a :class:`GradientTransformation`: a pair of pure functions,
``init(params) -> state`` and ``update(grads, state, params) -> (updates, state)``;
``apply_updates(params, updates)`` adds the updates. States are named tuples.
Hyperparameters live in the factory's closure and may be Python numbers or
JAX arrays (so a ``vmap`` over them compiles once); a learning rate may also be
a schedule, a function of the step count (0 at the first update).

References: CS231n "Neural Networks Part 3" (SGD, momentum, Nesterov, RMSProp,
Adam and the annealing schedules); Kingma & Ba 2015 (Adam); Loshchilov &
Hutter 2019 (AdamW); Tieleman & Hinton 2012 (RMSProp).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Schedule = Callable[[jax.Array], jax.Array]
ScalarOrSchedule = float | jax.Array | Schedule


class GradientTransformation(NamedTuple):
    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]
    learning_rate: ScalarOrSchedule | None = None  # for reports (fit's history); not used here


def apply_updates(params, updates):
    """``params + updates``, leaf by leaf, keeping each parameter's dtype."""
    return jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)


def _check(name: str, value, low: float, high: float = float("inf"), *,
           low_open: bool = True, high_open: bool = True) -> None:
    """A factory's hyperparameter in its range, where it is concrete: a Python number or a
    concrete array (every entry); a traced value (a sweep under ``jit``) cannot be read, and
    a schedule is checked by its own factory."""
    if callable(value) or isinstance(value, jax.core.Tracer):
        return
    v = np.asarray(value, np.float64)
    bad = ~np.isfinite(v) | ((v <= low) if low_open else (v < low)) \
        | ((v >= high) if high_open else (v > high))
    if bad.any():
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be finite and in {lo}{low:g}, {high:g}{hi}; got {value!r}")


def _steps(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")


def _at(lr: ScalarOrSchedule, count, grads):
    """The learning rate at update ``count``, in the dtype of the gradients (so float64
    training is float64 throughout, and half precision is not upcast)."""
    return jnp.asarray(lr(count) if callable(lr) else lr, jax.tree.leaves(grads)[0].dtype)


def _zeros(params):
    return jax.tree.map(jnp.zeros_like, params)


def _zero_squares(params):
    """Zeros for squared-gradient averages, in float32 at least: in float16, Adam's
    eps = 1e-8 and the squares of small gradients underflow to 0 (NaN at update 2)."""
    return jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.promote_types(p.dtype, jnp.float32)),
                        params)


def _wide(g, like):
    """A gradient in its moment's dtype (float32 at least)."""
    return g.astype(like.dtype)


# --- Schedules: step -> learning rate, computed in the widest float enabled (float64 ---
# under jax_enable_x64), so a float64 run's rates are not float32's rounded.
def _float(step):
    return jnp.asarray(step, jax.dtypes.canonicalize_dtype(jnp.float64))


def constant(value) -> Schedule:
    _check("constant's value", value, 0.0, low_open=False)
    return lambda step: jnp.full(jnp.shape(step), value, _float(step).dtype)


def step_decay(init_value, decay: float, steps_per_epoch: int) -> Schedule:
    """CS231n's Solver: multiply by ``decay`` (its ``lr_decay``) after every epoch."""
    _check("step_decay's init_value", init_value, 0.0, low_open=False)
    _check("step_decay's decay", decay, 0.0, 1.0, high_open=False)
    _steps("step_decay's steps_per_epoch", steps_per_epoch)
    return lambda step: init_value * decay ** _float(step // steps_per_epoch)


def exponential(init_value, rate: float, decay_steps: int) -> Schedule:
    """``init_value * rate ** (step / decay_steps)`` (smooth exponential decay)."""
    _check("exponential's init_value", init_value, 0.0, low_open=False)
    _check("exponential's rate", rate, 0.0, 1.0, high_open=False)
    _steps("exponential's decay_steps", decay_steps)
    return lambda step: init_value * rate ** (_float(step) / decay_steps)


def cosine(init_value, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """Cosine from ``init_value`` to ``alpha * init_value`` over ``decay_steps``, then flat."""
    _check("cosine's init_value", init_value, 0.0, low_open=False)
    _steps("cosine's decay_steps", decay_steps)
    _check("cosine's alpha", alpha, 0.0, 1.0, low_open=False, high_open=False)
    def schedule(step):
        t = _float(jnp.minimum(step, decay_steps)) / decay_steps
        return init_value * ((1 - alpha) * 0.5 * (1 + jnp.cos(jnp.pi * t)) + alpha)
    return schedule


def linear_warmup(peak_value, warmup_steps: int, after: Schedule | None = None) -> Schedule:
    """Linear from ``peak/warmup_steps`` to ``peak`` over ``warmup_steps`` updates, then ``after``
    (counted from the end of warm-up; constant ``peak`` if None)."""
    _check("linear_warmup's peak_value", peak_value, 0.0, low_open=False)
    _steps("linear_warmup's warmup_steps", warmup_steps)
    def schedule(step):
        warm = peak_value * _float(jnp.minimum(step + 1, warmup_steps)) / warmup_steps
        if after is None:
            return warm
        return jnp.where(step < warmup_steps, warm, after(jnp.maximum(step - warmup_steps, 0)))
    return schedule


# --- Optimizers. ---------------------------------------------------------------
class SgdState(NamedTuple):
    count: jax.Array


def sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """Vanilla update: ``x += -lr * dx``."""
    _check("sgd's learning_rate", learning_rate, 0.0, low_open=False)
    def init(params):
        return SgdState(jnp.zeros([], jnp.int32))

    def update(grads, state, params=None):
        lr = _at(learning_rate, state.count, grads)
        return jax.tree.map(lambda g: -lr * g, grads), SgdState(state.count + 1)

    return GradientTransformation(init, update, learning_rate)


class MomentumState(NamedTuple):
    count: jax.Array
    velocity: Any


def momentum(learning_rate: ScalarOrSchedule, mu=0.9) -> GradientTransformation:
    """CS231n's momentum: ``v = mu * v - lr * dx; x += v``."""
    return _with_velocity("momentum", learning_rate, mu, lambda v_prev, v: v)


def nesterov(learning_rate: ScalarOrSchedule, mu=0.9) -> GradientTransformation:
    """CS231n's Nesterov momentum: ``v_prev = v; v = mu * v - lr * dx;
    x += -mu * v_prev + (1 + mu) * v``."""
    return _with_velocity("nesterov", learning_rate, mu,
                          lambda v_prev, v: -mu * v_prev + (1 + mu) * v)


def _with_velocity(name: str, learning_rate: ScalarOrSchedule, mu, step) -> GradientTransformation:
    """The momentum family: a velocity ``v = mu * v - lr * dx`` per leaf, and the update
    ``step(v_prev, v)`` made of it."""
    _check(f"{name}'s learning_rate", learning_rate, 0.0, low_open=False)
    _check(f"{name}'s mu", mu, 0.0, 1.0, low_open=False)
    def init(params):
        return MomentumState(jnp.zeros([], jnp.int32), _zeros(params))

    def update(grads, state, params=None):
        lr = _at(learning_rate, state.count, grads)
        v = jax.tree.map(lambda v, g: mu * v - lr * g, state.velocity, grads)
        return jax.tree.map(step, state.velocity, v), MomentumState(state.count + 1, v)

    return GradientTransformation(init, update, learning_rate)


class RmsPropState(NamedTuple):
    count: jax.Array
    cache: Any


def rmsprop(learning_rate: ScalarOrSchedule, decay_rate=0.99, eps=1e-8) -> GradientTransformation:
    """``cache = decay * cache + (1 - decay) * dx**2; x += -lr * dx / (sqrt(cache) + eps)``."""
    _check("rmsprop's learning_rate", learning_rate, 0.0, low_open=False)
    _check("rmsprop's decay_rate", decay_rate, 0.0, 1.0, low_open=False)
    _check("rmsprop's eps", eps, 0.0)
    def init(params):
        return RmsPropState(jnp.zeros([], jnp.int32), _zero_squares(params))

    def update(grads, state, params=None):
        lr = _at(learning_rate, state.count, state.cache)
        cache = jax.tree.map(lambda c, g: decay_rate * c + (1 - decay_rate) * _wide(g, c) ** 2,
                             state.cache, grads)
        updates = jax.tree.map(lambda g, c: (-lr * _wide(g, c) / (jnp.sqrt(c) + eps)
                                             ).astype(g.dtype), grads, cache)
        return updates, RmsPropState(state.count + 1, cache)

    return GradientTransformation(init, update, learning_rate)


class AdamState(NamedTuple):
    count: jax.Array
    mu: Any
    nu: Any


def adam(learning_rate: ScalarOrSchedule, b1=0.9, b2=0.999, eps=1e-8,
         weight_decay=0.0) -> GradientTransformation:
    """Adam with bias correction; ``weight_decay > 0`` is AdamW's decoupled decay.

    ``m = b1 m + (1-b1) dx; v = b2 v + (1-b2) dx**2; t += 1``
    ``x += -lr * (m / (1-b1**t)) / (sqrt(v / (1-b2**t)) + eps) - lr * weight_decay * x``
    """
    _check("adam's learning_rate", learning_rate, 0.0, low_open=False)
    for name, value in (("b1", b1), ("b2", b2)):
        _check(f"adam's {name}", value, 0.0, 1.0, low_open=False)
    _check("adam's eps", eps, 0.0)
    _check("adam's weight_decay", weight_decay, 0.0, low_open=False)
    def init(params):
        return AdamState(jnp.zeros([], jnp.int32), _zero_squares(params), _zero_squares(params))

    def update(grads, state, params=None):
        lr = _at(learning_rate, state.count, state.nu)
        t = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * _wide(g, m), state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * _wide(g, v) ** 2, state.nu, grads)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        updates = jax.tree.map(lambda m, v: -lr * (m / c1) / (jnp.sqrt(v / c2) + eps), mu, nu)
        if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):
            if params is None:
                raise ValueError("adamw's update needs params: update(grads, state, params)")
            updates = jax.tree.map(lambda u, p: u - lr * weight_decay * _wide(p, u), updates,
                                   params)
        updates = jax.tree.map(lambda u, g: u.astype(g.dtype), updates, grads)
        return updates, AdamState(t, mu, nu)

    return GradientTransformation(init, update, learning_rate)


def adamw(learning_rate: ScalarOrSchedule, b1=0.9, b2=0.999, eps=1e-8,
          weight_decay=1e-4) -> GradientTransformation:
    """AdamW: Adam plus decoupled weight decay ``-lr * weight_decay * x``."""
    return adam(learning_rate, b1, b2, eps, weight_decay)


# --- Composition. ---------------------------------------------------------------
class EmptyState(NamedTuple):
    pass


def clip_by_global_norm(max_norm) -> GradientTransformation:
    """Scale all gradients by ``min(1, max_norm / ||g||)``, the norm over every leaf."""
    _check("clip_by_global_norm's max_norm", max_norm, 0.0)
    def update(grads, state, params=None):
        norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))
        scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-30))
        return jax.tree.map(lambda g: g * scale, grads), state

    return GradientTransformation(lambda params: EmptyState(), update)


class ChainState(NamedTuple):
    states: tuple


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply transformations in order, e.g. ``chain(clip_by_global_norm(5.0), adam(1e-3))``."""
    def init(params):
        return ChainState(tuple(t.init(params) for t in transforms))

    def update(grads, state, params=None):
        new = []
        for t, s in zip(transforms, state.states):
            grads, s = t.update(grads, s, params)
            new.append(s)
        return grads, ChainState(tuple(new))

    rates = [t.learning_rate for t in transforms if t.learning_rate is not None]
    return GradientTransformation(init, update, rates[-1] if rates else None)


OPTIMIZERS = {"sgd": sgd, "momentum": momentum, "nesterov": nesterov, "rmsprop": rmsprop,
              "adam": adam, "adamw": adamw}
