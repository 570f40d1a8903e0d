"""Many trainings as one compiled program, over seeds and hyperparameters.

Every configuration runs the same fused epochs (``train.run_epochs``); what differs
(the seed's key, the learning rate and the :class:`~mlp_jax.spec.Hyper`: reg,
dropout rate, input noise) are arrays with a leading configuration axis, so one
compilation serves them all. Configurations are sharded over a ``config`` mesh
axis (every device: GPUs, or on CPU one host device per core, which
:func:`mlp_jax.parallel.use_every_core` sets up before JAX's first operation), and
within a device run either batched (``vmap``) or one after another (``lax.map``).
Measured on a 2-core CPU, ``vmap`` runs the batched small products at 9-22 GFLOP/s,
so there ``lax.map`` is faster; on a GPU ``vmap`` is (:data:`BATCHING`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from . import programs
from .epochs import gradients, init_state, run_epochs
from .evaluation import evaluate
from .optim import GradientTransformation
from .parallel import axis_mesh
from .spec import Hyper, MLPSpec
from .train import check_run, diverged

HYPER_FIELDS = Hyper._fields  # ("reg", "dropout", "input_noise")
BATCHING = {"cpu": "map"}  # per backend; "vmap" elsewhere (measured, module docstring)


def config_mesh(num_devices: int | None = None):
    """A 1-D mesh named ``config`` over ``num_devices`` local devices (all by default)."""
    return axis_mesh("config", jax.local_devices(), num_devices)


class SweepResult(NamedTuple):
    configs: list[dict]  # one dict per configuration: seed, lr, reg, dropout, input_noise
    params: tuple  # final params, every leaf stacked: leading axis = configuration
    losses: np.ndarray  # (configs, epochs, steps_per_epoch) minibatch losses
    stats: tuple = ()  # batch norm's final running statistics, stacked like params

    def final_loss(self) -> np.ndarray:
        """Mean minibatch loss over each configuration's last epoch, ``(configs,)``."""
        return self.losses[:, -1, :].mean(axis=1)

    def diverged(self) -> np.ndarray:
        """Which configurations diverged (:func:`mlp_jax.train.diverged`), ``(configs,)``."""
        return np.array([diverged(losses) is not None for losses in self.losses], bool)

    def params_of(self, i: int):
        return jax.tree.map(lambda a: a[i], self.params)

    def stats_of(self, i: int):
        return jax.tree.map(lambda a: a[i], self.stats)


def grid(seeds=(0,), lrs=(1e-3,), regs=(None,), dropouts=(None,),
         input_noises=(None,)) -> list[dict]:
    """The Cartesian product, as a list of configuration dicts (None: the spec's value)."""
    return [dict(seed=s, lr=lr, reg=r, dropout=p, input_noise=n)
            for s, lr, r, p, n in itertools.product(seeds, lrs, regs, dropouts, input_noises)]


LOG_SCALE = ("lr", "reg")  # drawn log-uniformly by random_search; the rates uniformly


def random_search(n: int, seed: int = 0, *, seeds=(0,), digits: int = 3,
                  **ranges: tuple[float, float]) -> list[dict]:
    """``n`` random points, each run for every seed of ``seeds`` (CS231n's advice: random
    search over ranges, learning rate and reg on a log scale).

    ``ranges``: ``lr=(lo, hi)`` and optionally ``reg``, ``dropout``, ``input_noise``; a
    field absent or with ``lo == hi`` is fixed. :data:`LOG_SCALE` fields are drawn
    log-uniformly (``lo > 0``; a ``reg`` range from 0 starts at ``hi / 1e4``), the rates
    uniformly; values are rounded to ``digits`` significant digits, so that printing
    one gives back exactly the value used.
    """
    unknown = set(ranges) - {"lr", *HYPER_FIELDS}
    if unknown:
        raise ValueError(f"random_search ranges are lr, {', '.join(HYPER_FIELDS)}; got "
                         f"{sorted(unknown)}")
    if n < 1:
        raise ValueError(f"random_search needs n >= 1 points; got {n}")
    rng = np.random.default_rng(seed)
    points = []
    for _ in range(n):
        point = {}
        for field, (lo, hi) in ranges.items():
            lo, hi = float(min(lo, hi)), float(max(lo, hi))
            if lo == hi:
                point[field] = lo
                continue
            if field in LOG_SCALE:
                lo = lo if lo > 0 else hi / 1e4
                value = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            else:
                value = float(rng.uniform(lo, hi))
            point[field] = float(f"{value:.{digits}g}")
        points.append(point)
    return [dict(seed=s, lr=p.get("lr", 1e-3), reg=p.get("reg"), dropout=p.get("dropout"),
                 input_noise=p.get("input_noise")) for p in points for s in seeds]


def make_sweep(spec: MLPSpec, make_optimizer: Callable[[jax.Array], GradientTransformation],
               *, epochs: int, batch_size: int, grad: str = "backprop", mesh=None,
               batching: str | None = None):
    """A jitted ``run(keys, lrs, hypers, X, Y) -> (states, losses)`` over configs: every
    leaf of ``keys``, ``lrs`` and ``hypers`` (a :class:`Hyper`) has a leading config axis.

    ``make_optimizer(lr)`` builds the optimizer from a traced learning rate,
    e.g. ``lambda lr: optim.momentum(lr, 0.9)``. ``mesh``: a :func:`config_mesh` to
    shard the configs over (their number a multiple of its size). ``batching``:
    ``"vmap"`` or ``"map"`` within a device; None picks :data:`BATCHING`'s. Built once
    per configuration (:mod:`mlp_jax.programs`): a second sweep compiles nothing.
    """
    batching = batching or BATCHING.get(jax.default_backend(), "vmap")
    if batching not in ("vmap", "map"):
        raise ValueError(f"batching must be 'vmap' or 'map'; got {batching!r}")
    return programs.cached(_make_sweep, spec, make_optimizer, epochs, batch_size,
                           gradients(spec, grad), mesh, batching)


def _make_sweep(spec, make_optimizer, epochs, batch_size, grads, mesh, batching):

    def one(key, lr, hyper, X, Y):
        opt = make_optimizer(lr)
        state = init_state(key, spec, opt)
        return run_epochs(spec, opt, grads, batch_size, epochs, state, X, Y, hyper)

    def many(keys, lrs, hypers, X, Y):
        if batching == "vmap":
            return jax.vmap(one, in_axes=(0, 0, 0, None, None))(keys, lrs, hypers, X, Y)
        return jax.lax.map(lambda c: one(*c, X, Y), (keys, lrs, hypers))

    if mesh is None:
        return jax.jit(many)
    # Each device's configs are independent trainings with no collectives, so there is no
    # replication to track (and a fresh init's zeros would otherwise need casting).
    return jax.jit(jax.shard_map(many, mesh=mesh, out_specs=P("config"),
                                 in_specs=(P("config"),) * 3 + (P(),) * 2, check_vma=False))


def sweep(spec: MLPSpec, data, make_optimizer: Callable[[jax.Array], GradientTransformation],
          configs: list[dict], *, epochs: int, batch_size: int, grad: str = "backprop",
          mesh="all", batching: str | None = None, chunk: int | None = None,
          callback: Callable[[int, SweepResult], None] | None = None) -> SweepResult:
    """Train every configuration of ``configs`` (see :func:`grid`) at once.

    Args:
      spec: the network; its ``reg``, ``dropout`` and ``input_noise`` are the values of
        a config that leaves them out (or gives None). Dropout and input noise can be
        swept only where the spec has them (a nonzero default): they are architecture.
      data: a ``data.Dataset`` (its training split is used).
      make_optimizer: ``lr -> GradientTransformation``, called with a traced lr.
      configs: dicts with ``seed``, ``lr`` and optionally ``reg``, ``dropout``,
        ``input_noise``.
      mesh: ``"all"`` (default) shards the configs over every local device; None runs
        them on one; or a :func:`config_mesh`.
      batching: ``"vmap"`` or ``"map"`` within a device (see :func:`make_sweep`).
      chunk: configurations per compiled call (None: all in one), rounded up to a
        multiple of the mesh size. The last call is padded (repeating the last config,
        whose copies are dropped), so one compilation serves every chunk.
      callback: called as ``callback(start, part)`` after each chunk, ``part`` the
        :class:`SweepResult` of ``configs[start:start + len(part.configs)]``: to
        record results as they come (a sweep that stops keeps what it finished).

    Returns:
      A :class:`SweepResult` with stacked final params (and batch norm's running
      statistics) and every minibatch loss.
    """
    if not configs:
        raise ValueError("sweep needs at least one configuration")
    check_run(spec, data, epochs=epochs, batch_size=batch_size)  # as fit's
    for field, default in zip(HYPER_FIELDS, spec.hyper()):
        asked = [c[field] for c in configs if c.get(field) is not None]
        if field != "reg" and default == 0 and any(v != 0 for v in asked):
            raise ValueError(f"a config sets {field}={max(asked)} but the spec has no "
                             f"{field} (MLPSpec({field}=0)); give the spec a nonzero "
                             f"{field} so that its program has one, then sweep the value")
    dtype = jnp.promote_types(spec.dtype, jnp.float32)  # float64 sweeps stay float64
    keys = jnp.stack([jax.random.key(int(c["seed"])) for c in configs])
    lrs = jnp.asarray([c["lr"] for c in configs], dtype)
    hypers = jax.tree.map(lambda *v: jnp.asarray(v, dtype),
                          *[hyper_of(c, spec) for c in configs])
    if isinstance(mesh, str) and mesh == "all":
        mesh = config_mesh() if jax.local_device_count() > 1 else None
    n = len(configs)
    width = 1 if mesh is None else mesh.shape["config"]
    size = -(-min(chunk or n, n) // width) * width  # configs per call
    pad = -n % size
    if pad:  # repeat the last config; its copies are dropped below
        keys, lrs, hypers = jax.tree.map(lambda a: jnp.concatenate([a, *[a[-1:]] * pad]),
                                         (keys, lrs, hypers))
    run = make_sweep(spec, make_optimizer, epochs=epochs, batch_size=batch_size, grad=grad,
                     mesh=mesh, batching=batching)
    X, Y = jnp.asarray(data.X_train), jnp.asarray(data.y_train)
    parts = []
    for start in range(0, n, size):
        sl, kept = slice(start, start + size), slice(0, min(size, n - start))
        states, losses = run(*jax.tree.map(lambda a, sl=sl: a[sl], (keys, lrs, hypers)), X, Y)
        params, stats = jax.tree.map(lambda a, kept=kept: np.asarray(a)[kept],
                                     (states.params, states.stats))
        parts.append(SweepResult(configs[sl], params, np.asarray(losses)[kept], stats))
        if callback is not None:
            callback(start, parts[-1])
    joined = jax.tree.map(lambda *a: np.concatenate(a), *[(p.params, p.stats) for p in parts])
    return SweepResult(configs, joined[0], np.concatenate([p.losses for p in parts]), joined[1])


def hyper_of(config: dict, spec: MLPSpec) -> Hyper:
    """A configuration's :class:`Hyper`: its own values, the spec's where it has None."""
    return Hyper(*(default if config.get(field) is None else config[field]
                   for field, default in zip(HYPER_FIELDS, spec.hyper())))


def evaluate_all(result: SweepResult, X, Y, spec: MLPSpec) -> np.ndarray:
    """``(configs, 2)``: loss and accuracy of every configuration's final params, the loss
    with that configuration's own ``reg`` penalty."""
    return np.array([evaluate(result.params_of(i), X, Y, spec, hyper_of(c, spec),
                              stats=result.stats_of(i))
                     for i, c in enumerate(result.configs)])


__all__ = ["BATCHING", "LOG_SCALE", "SweepResult", "config_mesh", "evaluate_all", "grid",
           "hyper_of", "make_sweep", "random_search", "sweep"]
