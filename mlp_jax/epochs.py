"""The training program: TrainState, the step, and epochs fused with ``lax.scan``.

The step is a pure function ``(state, x, y, hyper) -> (state, loss)``; ``jit`` is
applied where it is built, once per spec. ``hyper`` (reg, dropout rate, input
noise: :class:`mlp_jax.spec.Hyper`) is an argument of arrays, so changing it
never recompiles. An epoch reshuffles the training set from the state's key (not a
full batch, where order cannot matter) and runs its minibatches
(:mod:`mlp_jax.batches`) in one ``lax.scan``, each gathered inside the scan, so the
dataset is never copied. The gradient function (:func:`gradients`) is built once per
program and passed down; :func:`mlp_jax.train.fit` runs these programs.

Data parallelism is placement, not another loop: given a ``mesh`` with a ``data``
axis, the same step and the same fused epochs run with each minibatch split along
``data`` and params replicated. Two forms of the gradient computation:

* ``"shard_map"``: each device computes the gradients of its shard inside
  ``jax.shard_map`` (hand backprop, or ``jax.grad`` of the local loss) and the
  per-shard means are averaged with ``lax.pmean``. Dropout masks are drawn per
  shard (the step's key folded with the shard index): statistically the same as
  one device's, not the same numbers.
* ``"gspmd"``: the ordinary computation with the minibatch constrained to
  ``P("data")``; XLA's partitioner inserts the collectives, and dropout draws the
  single-device masks.

Batch norm's statistics in data parallel: under ``"gspmd"`` they are the global
batch's (the partitioner reduces over the shards), so the run is the one-device run;
under ``"shard_map"`` each device normalizes by its own shard's statistics (as
PyTorch's ``BatchNorm`` under DistributedDataParallel: no collective in the forward
pass, and what every device computes is a one-device step on its shard), and the
running statistics are the shards' updated ones averaged with ``lax.pmean``, so every
device keeps the same.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import programs
from .backprop import backprop_and_stats
from .batches import minibatches
from .network import init_params, init_stats, loss_and_stats, resolve_hyper
from .optim import GradientTransformation, apply_updates
from .spec import Hyper, MLPSpec

GRAD_SOURCES = ("backprop", "autodiff")
FORMS = ("shard_map", "gspmd")


class TrainState(NamedTuple):
    params: tuple
    opt_state: object
    step: jax.Array  # updates taken so far
    key: jax.Array  # source of shuffles and dropout masks; split every use
    stats: tuple = ()  # batch norm's running statistics (network.init_stats); () without


def init_state(key, spec: MLPSpec, optimizer: GradientTransformation) -> TrainState:
    """Fresh parameters, optimizer state and running statistics; ``key`` is split once
    into init and training."""
    k_init, k_train = jax.random.split(key)
    params = init_params(k_init, spec)
    return TrainState(params, optimizer.init(params), jnp.zeros([], jnp.int32), k_train,
                      init_stats(spec))


def init_state_from(key, spec: MLPSpec, optimizer: GradientTransformation, params,
                    stats: tuple = ()) -> TrainState:
    """A new run starting from ``params`` (and batch norm's running ``stats``) of another:
    a fresh optimizer state, step count (so a fresh schedule) and key. ``ValueError``
    when their shapes are not ``spec``'s."""
    fresh = init_state(key, spec, optimizer)
    given, wanted = ([(a.shape, a.dtype) for a in jax.tree.leaves(tree)]
                     for tree in (params, fresh.params))
    if given != wanted:
        raise ValueError(f"its params have shapes {[s for s, _ in given]}, this network's "
                         f"are {[s for s, _ in wanted]}")
    return fresh._replace(params=params, opt_state=optimizer.init(params), stats=stats)


def hyper_arrays(spec: MLPSpec, params, hyper: Hyper | None = None) -> Hyper:
    """``hyper`` (``spec.hyper()`` when None) as arrays in the params' dtype, float32 at
    least: float64 training is float64 throughout, half precision keeps float32 rates."""
    dtype = jnp.promote_types(jax.tree.leaves(params)[0].dtype, jnp.float32)
    return jax.tree.map(lambda v: jnp.asarray(v, dtype), resolve_hyper(spec, hyper))


def loss_grads_stats(spec: MLPSpec, grad: str, params, x, y, *, hyper: Hyper, key=None,
                     stats=()):
    """In training mode: the loss, its gradients (from the hand backprop or from
    ``jax.grad``) and the running statistics updated (``()`` without batch norm)."""
    args = (x, y, spec, hyper, key, True, stats)
    if grad == "backprop":
        return backprop_and_stats(params, *args)
    if grad == "autodiff":
        (value, stats), grads = jax.value_and_grad(loss_and_stats, has_aux=True)(params, *args)
        return value, grads, stats
    raise ValueError(f"grad must be one of {GRAD_SOURCES}; got {grad!r}")


def gradients(spec: MLPSpec, grad: str, mesh=None, form: str = "shard_map"):
    """``(params, stats, x, y, hyper, key) -> (loss, grads, stats)`` in training mode: on
    one device, or data parallel over ``mesh``'s ``data`` axis in one of :data:`FORMS`
    (module docstring)."""
    if grad not in GRAD_SOURCES:
        raise ValueError(f"grad must be one of {GRAD_SOURCES}; got {grad!r}")

    def local(params, stats, x, y, hyper, key):
        return loss_grads_stats(spec, grad, params, x, y, hyper=hyper, key=key, stats=stats)

    if mesh is None:
        return local
    if form == "gspmd":
        batch = NamedSharding(mesh, P("data"))

        def partitioned(params, stats, x, y, hyper, key):
            constrain = jax.lax.with_sharding_constraint
            return local(params, stats, constrain(x, batch), constrain(y, batch), hyper, key)

        return partitioned
    if form == "shard_map":
        def per_shard(params, stats, x, y, hyper, key):
            if key is not None:  # each shard draws its own masks
                key = jax.random.fold_in(key, jax.lax.axis_index("data"))
            # Replicated params used with sharded data become "varying" implicitly, and
            # that cast's transpose is a psum: jax.grad would return gradients already
            # summed over the shards. Cast them here, outside the differentiated function,
            # so both gradient sources give this shard's own gradients.
            params = jax.tree.map(lambda a: jax.lax.pcast(a, "data", to="varying"), params)
            value, grads, stats = local(params, stats, x, y, hyper, key)
            # equal shards: the mean of the shard means is the global mean
            return jax.lax.pmean((value, grads, stats), "data")

        return jax.shard_map(per_shard, mesh=mesh,
                             in_specs=(P(), P(), P("data"), P("data"), P(), P()),
                             out_specs=(P(), P(), P()))
    raise ValueError(f"form must be one of {FORMS}; got {form!r}")


def update(spec: MLPSpec, optimizer: GradientTransformation, grads, state: TrainState, x, y,
           hyper: Hyper | None = None) -> tuple[TrainState, jax.Array]:
    """One update on the minibatch ``x (B, D)``, ``y`` with ``grads``, a function built by
    :func:`gradients`. Pure and un-jitted; ``hyper=None`` is the spec's values."""
    key, sub = jax.random.split(state.key) if spec.stochastic else (state.key, None)
    value, g, stats = grads(state.params, state.stats, x, y, resolve_hyper(spec, hyper), sub)
    updates, opt_state = optimizer.update(g, state.opt_state, state.params)
    return TrainState(apply_updates(state.params, updates), opt_state, state.step + 1, key,
                      stats), value


def train_step(spec: MLPSpec, optimizer: GradientTransformation, grad: str, state: TrainState,
               x, y, hyper: Hyper | None = None, mesh=None,
               form: str = "shard_map") -> tuple[TrainState, jax.Array]:
    """One update on the minibatch ``x (B, D)``, ``y``. Pure and un-jitted.

    ``hyper``: reg, dropout and input noise (``spec.hyper()`` when None); arrays, so a
    sweep over them compiles once. ``mesh``, ``form``: data parallel (:func:`gradients`).
    """
    return update(spec, optimizer, gradients(spec, grad, mesh, form), state, x, y, hyper)


def _jit(fn, mesh):
    """``jit``; over a mesh, with every output replicated (params, state, losses)."""
    return jax.jit(fn) if mesh is None else jax.jit(fn, out_shardings=NamedSharding(mesh, P()))


def make_train_step(spec: MLPSpec, optimizer: GradientTransformation, grad: str = "backprop",
                    mesh=None, form: str = "shard_map"):
    """``step(state, x, y, hyper=None) -> (state, loss)``, jit-compiled once for ``spec``;
    over ``mesh`` (params replicated, the batch split along ``data``) when given."""
    grads = gradients(spec, grad, mesh, form)
    return programs.cached(_step_program, spec, optimizer, grads, mesh)


def _step_program(spec, optimizer, grads, mesh):
    return _jit(partial(update, spec, optimizer, grads), mesh)


def run_epochs(spec: MLPSpec, optimizer: GradientTransformation, grads, batch_size: int,
               num_epochs: int, state: TrainState, X, Y, hyper: Hyper | None = None):
    """``num_epochs`` epochs over ``X (N, D)``, ``Y`` with ``grads`` (built by
    :func:`gradients`); pure. Returns ``(state, losses)``, losses of shape
    ``(num_epochs, steps per epoch)``."""
    N = X.shape[0]
    bs, full, rest = minibatches(N, batch_size)
    step = partial(update, spec, optimizer, grads)
    hyper = resolve_hyper(spec, hyper)

    def epoch(state, _):
        if bs == N:  # full batch: order cannot matter, so no shuffle (it would cost a sort)
            state, value = step(state, X, Y, hyper)
            return state, value[None]
        key, perm_key = jax.random.split(state.key)
        perm = jax.random.permutation(perm_key, N)  # (N,)
        state = state._replace(key=key)

        def minibatch(state, i):
            idx = jax.lax.dynamic_slice(perm, (i * bs,), (bs,))
            return step(state, X[idx], Y[idx], hyper)

        state, losses = jax.lax.scan(minibatch, state, jnp.arange(full))
        if rest:  # the leftover examples: one smaller, last minibatch
            idx = perm[full * bs:]
            state, last = step(state, X[idx], Y[idx], hyper)
            losses = jnp.concatenate([losses, last[None]])
        return state, losses

    return jax.lax.scan(epoch, state, None, length=num_epochs)


def make_epochs(spec: MLPSpec, optimizer: GradientTransformation, batch_size: int,
                num_epochs: int = 1, grad: str = "backprop", mesh=None,
                form: str = "shard_map"):
    """``epochs(state, X, Y, hyper=None) -> (state, losses)``: ``num_epochs`` fused, jitted;
    over ``mesh`` when given (``X``, ``Y`` and the state replicated on it)."""
    return epochs_program(spec, optimizer, gradients(spec, grad, mesh, form), batch_size,
                          num_epochs, mesh)


def epochs_program(spec: MLPSpec, optimizer: GradientTransformation, grads, batch_size: int,
                   num_epochs: int, mesh=None):
    """:func:`make_epochs` with the gradient function already built (:func:`gradients`)."""
    return programs.cached(_epochs_program, spec, optimizer, grads, batch_size, num_epochs,
                           mesh)


def _epochs_program(spec, optimizer, grads, batch_size, num_epochs, mesh):
    return _jit(partial(run_epochs, spec, optimizer, grads, batch_size, num_epochs), mesh)
