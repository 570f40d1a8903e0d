"""Placement for data-parallel training: meshes, replication, jax.distributed start-up.

Training itself is :func:`mlp_jax.train.fit` with ``mesh=``: the same fused epochs,
each minibatch split along the mesh's ``data`` axis, params replicated (the two
forms of the gradient computation are described in :mod:`mlp_jax.train`). This
module makes the mesh, places pytrees on it and brings them back to the host.

Across hosts, :func:`initialize` starts ``jax.distributed`` (gloo collectives on
CPU); every process holds the dataset, and each device computes its shard of
every global batch.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P


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


def use_every_core() -> bool:
    """One CPU device per core, so that work split over devices (a sweep's configurations)
    runs on every core; a no-op on GPU/TPU backends. Only possible before JAX's first
    operation, and left alone when ``XLA_FLAGS`` or ``jax_num_cpu_devices`` already says
    how many: returns whether it set the count."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") or \
            jax.config.jax_num_cpu_devices != -1:
        return False
    try:
        jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    except RuntimeError:  # JAX already started: keep its devices
        return False
    return True


def axis_mesh(name: str, devices, num_devices: int | None = None):
    """A 1-D mesh with axis ``name`` over the first ``num_devices`` of ``devices`` (all)."""
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices but {len(devices)} are available "
                         f"({devices[0].platform}); on CPU, set XLA_FLAGS="
                         "--xla_force_host_platform_device_count=N before importing jax")
    return jax.make_mesh((n,), (name,), axis_types=(AxisType.Auto,), devices=devices[:n])


def data_mesh(num_devices: int | None = None):
    """A 1-D ``data`` mesh over ``num_devices`` devices (all, across every process, by
    default)."""
    return axis_mesh("data", jax.devices(), num_devices)


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


def host_copy(tree):
    """A replicated (possibly multi-process) pytree as numpy arrays on this host."""
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0))
                        if isinstance(a, jax.Array) else a, tree)


def host_state(state):
    """A replicated ``TrainState`` as single-device arrays on this host (key included)."""
    local = host_copy(state._replace(key=jax.random.key_data(state.key)))
    local = jax.tree.map(jnp.asarray, local)
    return local._replace(key=jax.random.wrap_key_data(local.key))
