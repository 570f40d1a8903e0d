"""Data-parallel training over devices and hosts, with JAX's own sharding and runtime.

The batch is split along a mesh axis named ``"data"``; parameters and optimizer
state are replicated. Two forms of the step:

* ``"shard_map"``: each device runs the hand-derived :func:`mlp_jax.backprop` on
  its shard inside ``jax.shard_map`` and the per-shard gradients (means over
  equal shards) are averaged with ``lax.pmean``. No autodiff is involved, so the
  ``jax.grad``-under-``shard_map`` pitfall (gradients of replicated params
  arriving already summed) cannot arise.
* ``"gspmd"``: the plain single-device step with ``grad="autodiff"``, jitted with
  ``NamedSharding``s; XLA's partitioner inserts the collectives.

Across hosts, :func:`initialize` starts ``jax.distributed`` (gloo collectives on
CPU) and each process feeds its own slice of every global batch through
``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import os
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from .backprop import backprop
from .optim import GradientTransformation, apply_updates
from .spec import MLPSpec
from .train import (
    FitResult,
    TrainingDiverged,
    TrainState,
    evaluation_row,
    hyper_arrays,
    init_state,
    train_step,
)

FORMS = ("shard_map", "gspmd")


class PeerFailure(RuntimeError):
    """Another process of a multi-process job died or became unreachable."""
ENV = {"coordinator": "MLP_JAX_COORDINATOR", "num_processes": "MLP_JAX_NUM_PROCESSES",
       "process_id": "MLP_JAX_PROCESS_ID"}


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout: int = 60) -> bool:
    """Start ``jax.distributed`` from arguments or ``MLP_JAX_*`` environment variables.

    Returns False (and does nothing) for a single process. Call it before any
    other JAX work. Raises ``RuntimeError`` naming the coordinator when the
    processes cannot all connect within ``timeout`` seconds.
    """
    coordinator = coordinator or os.environ.get(ENV["coordinator"])
    num_processes = int(num_processes or os.environ.get(ENV["num_processes"], 1))
    if process_id is None and ENV["process_id"] in os.environ:
        process_id = int(os.environ[ENV["process_id"]])
    if num_processes <= 1:
        return False
    if not coordinator or process_id is None:
        raise ValueError(f"{num_processes} processes need a coordinator address (host:port) "
                         f"and this process's id (0..{num_processes - 1}): pass --coordinator "
                         f"and --process-id, or set {ENV['coordinator']} and {ENV['process_id']}")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process id must be in 0..{num_processes - 1}; got {process_id}")
    # CPU collectives across processes (no effect on GPU/TPU). Asking for the backend
    # first would initialise it, which jax.distributed.initialize forbids.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   initialization_timeout=timeout,
                                   heartbeat_timeout_seconds=max(timeout // 2, 5))
    except Exception as e:  # the runtime raises several types; say what it means
        raise PeerFailure(
            f"process {process_id} of {num_processes} could not join the coordinator at "
            f"{coordinator} within {timeout} s (a peer that never started or died?): {e}"
        ) from e
    return True


def data_mesh(num_devices: int | None = None):
    """A 1-D mesh over ``num_devices`` devices (all, across every process, by default)."""
    available = jax.device_count()
    n = available if num_devices is None else num_devices
    if not 1 <= n <= available:
        raise ValueError(f"asked for {n} devices but {available} are available "
                         f"({jax.devices()[0].platform}); on CPU, set XLA_FLAGS="
                         "--xla_force_host_platform_device_count=N before importing jax")
    devices = jax.devices()[:n]
    return jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def check_batches(num_examples: int, batch_size: int, mesh) -> None:
    """Every minibatch of an epoch, the last smaller one included, must split evenly."""
    n = mesh.shape["data"]
    bs = min(batch_size, num_examples)
    if bs % n:
        raise ValueError(f"the global batch of {bs} examples does not split evenly over {n} "
                         f"devices; choose a batch size that is a multiple of {n}")
    rest = num_examples % bs
    if rest % n:
        raise ValueError(f"the last minibatch of each epoch ({num_examples} % {bs} = {rest} "
                         f"examples) does not split evenly over {n} devices; choose a batch "
                         f"size that leaves a multiple of {n} (e.g. one that divides "
                         f"{num_examples})")


def replicate(tree, mesh):
    """Place every leaf on every device of the mesh (what params and optimizer state are)."""
    sharding = NamedSharding(mesh, P())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(a):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):  # keys travel as their raw data
            return jax.random.wrap_key_data(put(jax.random.key_data(a)))
        local = np.asarray(a.addressable_data(0) if isinstance(a, jax.Array) else a)
        return jax.make_array_from_process_local_data(sharding, local, local.shape)

    return jax.tree.map(put, tree)


def _local_step(spec, optimizer, state: TrainState, x, y, hyper):
    """The shard_map body: hand backprop on this device's shard, then pmean."""
    key, sub = jax.random.split(state.key)
    drop_key = jax.random.fold_in(sub, jax.lax.axis_index("data"))  # own masks per shard
    value, grads = backprop(state.params, x, y, spec, hyper=hyper,
                            key=drop_key if spec.stochastic else None, train=True)
    grads = jax.lax.pmean(grads, "data")  # mean of equal-size shard means = global mean
    value = jax.lax.pmean(value, "data")
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(apply_updates(state.params, updates), opt_state, state.step + 1, key), value


def make_sharded_step(spec: MLPSpec, optimizer: GradientTransformation, mesh,
                      form: str = "shard_map"):
    """``step(state, x, y, hyper) -> (state, loss)`` over the mesh; x and y sharded on
    ``data``.

    With dropout, the ``shard_map`` form draws each shard's masks from its own key
    (statistically the same, not the single-device stream); ``gspmd`` draws the
    single-device masks.
    """
    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    if form == "shard_map":
        body = jax.shard_map(partial(_local_step, spec, optimizer), mesh=mesh,
                             in_specs=(P(), P("data"), P("data"), P()), out_specs=(P(), P()))
        return jax.jit(body, in_shardings=(replicated, batch, batch, replicated),
                       out_shardings=(replicated, replicated))
    if form == "gspmd":
        return jax.jit(partial(train_step, spec, optimizer, "autodiff"),
                       in_shardings=(replicated, batch, batch, replicated),
                       out_shardings=(replicated, replicated))
    raise ValueError(f"form must be one of {FORMS}; got {form!r}")


def global_batch(mesh, x_local, y_local):
    """This process's slice of a global batch -> global arrays sharded on ``data``."""
    sharding = NamedSharding(mesh, P("data"))
    n = jax.process_count()
    return (jax.make_array_from_process_local_data(sharding, x_local,
                                                   (x_local.shape[0] * n, *x_local.shape[1:])),
            jax.make_array_from_process_local_data(sharding, y_local, (y_local.shape[0] * n,)))


def host_copy(tree):
    """A replicated (possibly multi-process) pytree as numpy arrays on this host."""
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0))
                        if isinstance(a, jax.Array) else a, tree)


def host_state(state: TrainState) -> TrainState:
    """A replicated TrainState as single-device arrays on this host (key included)."""
    local = host_copy(state._replace(key=jax.random.key_data(state.key)))
    local = jax.tree.map(jnp.asarray, local)
    return local._replace(key=jax.random.wrap_key_data(local.key))


def fit(spec: MLPSpec, data, optimizer: GradientTransformation, *, epochs: int,
        batch_size: int, key, mesh, form: str = "shard_map", hyper=None,
        checkpoint_path: str | None = None, resume: bool = False, meta: dict | None = None,
        callbacks=()) -> FitResult:
    """Data-parallel :func:`mlp_jax.train.fit`, one evaluation per epoch.

    It follows the single-device run exactly: the same key splits, the same
    reshuffle per epoch, the same minibatches (the last, smaller one included),
    so it matches ``train.fit`` to float32 rounding. Every process holds the
    dataset and feeds its slice of each global batch. Only process 0 writes
    the checkpoint, which a single-device run can load (and vice versa).
    """
    from . import checkpoint as ckpt

    X, Y = np.asarray(data.X_train), np.asarray(data.y_train)
    N = len(X)
    bs = min(batch_size, N)
    full, rest = divmod(N, bs)
    check_batches(N, batch_size, mesh)
    nproc, pid = jax.process_count(), jax.process_index()
    step = make_sharded_step(spec, optimizer, mesh, form)

    state = init_state(key, spec, optimizer)
    hyper = hyper_arrays(spec, state.params, hyper)
    history, best_params, best_val = [], state.params, None
    if resume and checkpoint_path and os.path.exists(checkpoint_path):
        loaded = ckpt.load(checkpoint_path, spec=spec, template=state)
        state, history = loaded.state, loaded.history
        best_params, best_val = loaded.best_params, loaded.best_val_acc
    state = replicate(state, mesh)
    epoch = int(host_copy(state.step)) // (full + (1 if rest else 0))
    t0 = time.perf_counter() - (history[-1]["time"] if history else 0.0)
    while epoch < epochs:
        if bs == N:  # as train.run_epochs: a full batch is not shuffled
            perm = np.arange(N)
        else:
            k = host_copy(jax.random.key_data(state.key))
            key_now, perm_key = jax.random.split(jax.random.wrap_key_data(k))
            perm = np.asarray(jax.random.permutation(perm_key, N))  # as run_epochs draws it
            state = state._replace(key=replicate(key_now, mesh))
        losses = []
        for start in list(range(0, full * bs, bs)) + ([full * bs] if rest else []):
            idx = perm[start:start + bs]
            share = len(idx) // nproc  # this process's rows of the global batch
            mine = idx[pid * share:(pid + 1) * share]
            xb, yb = global_batch(mesh, X[mine], Y[mine])
            try:
                state, value = step(state, xb, yb, hyper)
                losses.append(float(host_copy(value)))  # blocks every step (see ARCHITECTURE.md)
            except jax.errors.JaxRuntimeError as e:
                if nproc == 1:
                    raise
                raise PeerFailure(
                    f"process {pid} of {nproc}: a collective failed in epoch {epoch + 1} "
                    f"(a peer died or became unreachable): {str(e).splitlines()[0][:200]}"
                ) from e
        if not np.isfinite(losses).all():
            raise TrainingDiverged(f"loss became non-finite in epoch {epoch + 1}")
        epoch += 1
        row, best_val, best_params = evaluation_row(
            host_copy(state.params), data, spec, hyper, X[:1000], Y[:1000], best_val,
            best_params, epoch=epoch, step=int(host_copy(state.step)),
            train_loss=float(np.mean(losses)))
        row["time"] = time.perf_counter() - t0
        history.append(row)
        for cb in callbacks:
            cb(state, row)
        if checkpoint_path and pid == 0:
            ckpt.save(checkpoint_path, host_state(state), spec=spec, history=history,
                      best_params=best_params, best_val_acc=best_val, meta=meta)
    return FitResult(host_state(state), history, best_params, best_val)
