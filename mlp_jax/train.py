"""Training: TrainState, the jit-compiled step, epochs fused with lax.scan, evaluate, fit.

The step is a pure function ``(state, x, y, hyper) -> (state, loss)``; ``jit`` is
applied where it is built, once per spec. ``hyper`` (reg, dropout rate, input
noise: :class:`mlp_jax.spec.Hyper`) is an argument of arrays, so changing it
never recompiles. An epoch reshuffles the training set from the
state's key (not a full batch, where order cannot matter) and runs
``N // batch_size`` full minibatches in one ``lax.scan``; when ``batch_size``
does not divide N, the ``N % batch_size`` examples left over make one last,
smaller minibatch, so every example is used once per epoch.
Minibatches are gathered inside the scan, so the dataset is never copied.

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

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import programs
from .backprop import backprop
from .losses import BINARY01, BINARY_PM1, CLASS
from .network import forward, init_params, init_stats, l2_penalty, loss
from .optim import GradientTransformation, apply_updates
from .spec import Hyper, MLPSpec
from .validate import validate

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


def hyper_arrays(spec: MLPSpec, params, hyper: Hyper | None = None) -> Hyper:
    """``hyper`` (``spec.hyper()`` when None) as arrays in the params' dtype, float32 at
    least: float64 training is float64 throughout, half precision keeps float32 rates."""
    dtype = jnp.promote_types(jax.tree.leaves(params)[0].dtype, jnp.float32)
    return jax.tree.map(lambda v: jnp.asarray(v, dtype), spec.hyper() if hyper is None else hyper)


def value_and_grads(spec: MLPSpec, grad: str, params, x, y, *, hyper=None, key=None,
                    stats=()):
    """In training mode: the loss, its gradients (from the hand backprop or from
    ``jax.grad``) and the running statistics updated (``()`` without batch norm)."""
    kw = dict(hyper=hyper, key=key, train=True, stats=stats)
    if grad == "backprop":
        return backprop(params, x, y, spec, **kw)
    if grad == "autodiff":
        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params, x, y, spec, **kw)
        return value, grads, stats
    raise ValueError(f"grad must be one of {GRAD_SOURCES}; got {grad!r}")


def gradients(spec: MLPSpec, grad: str, mesh=None, form: str = "shard_map"):
    """``(params, stats, x, y, hyper, key) -> (loss, grads, stats)`` in training mode: on
    one device, or data parallel over ``mesh``'s ``data`` axis in one of :data:`FORMS`
    (module docstring)."""
    if grad not in GRAD_SOURCES:
        raise ValueError(f"grad must be one of {GRAD_SOURCES}; got {grad!r}")

    def local(params, stats, x, y, hyper, key):
        return value_and_grads(spec, grad, params, x, y, hyper=hyper, key=key, stats=stats)

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


def train_step(spec: MLPSpec, optimizer: GradientTransformation, grad: str, state: TrainState,
               x, y, hyper: Hyper | None = None, mesh=None,
               form: str = "shard_map") -> tuple[TrainState, jax.Array]:
    """One update on the minibatch ``x (B, D)``, ``y``. Pure and un-jitted.

    ``hyper``: reg, dropout and input noise (``spec.hyper()`` when None); arrays, so a
    sweep over them compiles once. ``mesh``, ``form``: data parallel (:func:`gradients`).
    """
    key, sub = jax.random.split(state.key) if spec.stochastic else (state.key, None)
    value, grads, stats = gradients(spec, grad, mesh, form)(state.params, state.stats, x, y,
                                                            hyper, sub)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(apply_updates(state.params, updates), opt_state, state.step + 1, key,
                      stats), value


def _jit(fn, mesh):
    """``jit``; over a mesh, with every output replicated (params, state, losses)."""
    return jax.jit(fn) if mesh is None else jax.jit(fn, out_shardings=NamedSharding(mesh, P()))


def make_train_step(spec: MLPSpec, optimizer: GradientTransformation, grad: str = "backprop",
                    mesh=None, form: str = "shard_map"):
    """``step(state, x, y, hyper=None) -> (state, loss)``, jit-compiled once for ``spec``;
    over ``mesh`` (params replicated, the batch split along ``data``) when given."""
    gradients(spec, grad, mesh, form)  # checks grad and form
    return programs.cached(_step_program, spec, optimizer, grad, mesh, form)


def _step_program(spec, optimizer, grad, mesh, form):
    return _jit(partial(train_step, spec, optimizer, grad, mesh=mesh, form=form), mesh)


def check_batchnorm_batches(num_examples: int, batch_size: int, mesh=None) -> None:
    """Batch norm's training mode needs 2 or more examples in every minibatch it normalizes
    (each shard's, under ``shard_map`` over ``mesh``): one example has variance 0."""
    shards = 1 if mesh is None else mesh.shape["data"]
    bs = min(batch_size, num_examples)
    rest = num_examples % bs  # the last, smaller minibatch (0: none)
    smallest = (rest or bs) // shards
    if smallest < 2:
        per = f"{smallest} per device under shard_map" if shards > 1 else ""
        which = (f"the last minibatch of each epoch ({num_examples} % {bs} = {rest} examples"
                 + (f", {per})" if per else ")") if rest
                 else f"a minibatch of {bs} examples" + (f" ({per})" if per else ""))
        raise ValueError(f"batch norm normalizes each minibatch by its own statistics, and "
                         f"{which} is a batch of {smallest}, whose variance is 0: choose "
                         "a batch size that leaves every minibatch 2 or more examples"
                         + (" per device" if shards > 1 else ""))


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // min(batch_size, n))


def run_epochs(spec: MLPSpec, optimizer: GradientTransformation, grad: str, batch_size: int,
               num_epochs: int, state: TrainState, X, Y, hyper: Hyper | None = None,
               mesh=None, form: str = "shard_map"):
    """``num_epochs`` epochs over ``X (N, D)``, ``Y``; pure. Returns ``(state, losses)``,
    losses of shape ``(num_epochs, steps_per_epoch)``."""
    N = X.shape[0]
    bs = min(batch_size, N)
    full, rest = divmod(N, bs)
    step = partial(train_step, spec, optimizer, grad, mesh=mesh, form=form)

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
    gradients(spec, grad, mesh, form)  # checks grad and form
    return programs.cached(_epochs_program, spec, optimizer, batch_size, num_epochs, grad,
                           mesh, form)


def _epochs_program(spec, optimizer, batch_size, num_epochs, grad, mesh, form):
    return _jit(partial(run_epochs, spec, optimizer, grad, batch_size, num_epochs, mesh=mesh,
                        form=form), mesh)


def predict(scores, spec: MLPSpec):
    """Predicted labels from scores, in the label convention of the spec's loss."""
    kind = spec.loss_fn.labels
    if kind == CLASS:
        return jnp.argmax(scores, axis=1)
    if kind == BINARY01:
        return (scores[:, 0] > 0).astype(jnp.int32)
    if kind == BINARY_PM1:
        return jnp.where(scores[:, 0] > 0, 1, -1)
    return None


EVAL_CHUNK = 1 << 14  # examples per compiled evaluation call: bounds its activations


@partial(jax.jit, static_argnames="spec")
def _evaluate(params, stats, X, Y, spec, hyper):
    scores = forward(params, X, spec, stats=stats)
    value = loss(params, X, Y, spec, hyper=hyper, stats=stats)
    pred = predict(scores, spec)
    correct = jnp.nan if pred is None else jnp.sum(pred == Y)  # a count: exact
    return value, correct


def evaluate(params, X, Y, spec: MLPSpec, hyper: Hyper | None = None,
             stats: tuple | None = None) -> tuple[float, float]:
    """``(loss, accuracy)`` on a whole split, in evaluation mode (no dropout; batch norm by
    its running statistics ``stats``); the loss
    includes ``hyper.reg``'s penalty. Accuracy is NaN for the squared loss (no classes).
    A split larger than ``EVAL_CHUNK`` is evaluated a chunk at a time (the chunks'
    means weighted by their sizes), so memory stays bounded."""
    hyper = hyper_arrays(spec, params, hyper)
    n = len(X)
    if n <= EVAL_CHUNK:
        value, correct = _evaluate(params, stats, jnp.asarray(X), jnp.asarray(Y), spec, hyper)
        return float(value), float(correct) / n
    data_only = hyper._replace(reg=jnp.zeros_like(hyper.reg))
    total = correct = 0.0
    for i in range(0, n, EVAL_CHUNK):
        Xc, Yc = jnp.asarray(X[i:i + EVAL_CHUNK]), jnp.asarray(Y[i:i + EVAL_CHUNK])
        value, right = _evaluate(params, stats, Xc, Yc, spec, data_only)
        total += float(value) * len(Xc)
        correct += float(right)
    return total / n + float(l2_penalty(params, hyper.reg)), correct / n


DIVERGED = 1e3  # an epoch's mean loss this many times max(1, the first minibatch's) diverged


class TrainingDiverged(RuntimeError):
    """The loss diverged (see :func:`diverged`); the message names where."""


def diverged(losses, first: float | None = None, epoch0: int = 0) -> str | None:
    """Why minibatch ``losses`` (epochs, steps) show a diverged run, or None: a loss that
    is NaN or infinite, or an epoch's mean above ``DIVERGED`` times ``max(1, first)``,
    ``first`` the loss of the run's first minibatch (before any update: the loss at
    initialization; default ``losses[0, 0]``). An exploding loss can stay finite for a
    long time (Adam at lr 1e9 ends at 1e18), which a NaN test alone does not see.
    ``epoch0``: the epochs done before ``losses`` (the message numbers from it)."""
    losses = np.asarray(losses, np.float64)
    first = float(losses.flat[0]) if first is None else first
    if not np.isfinite(losses).all():
        bad = int(np.argmax(~np.isfinite(losses.ravel())))
        e, s = divmod(bad, losses.shape[-1])
        return (f"loss became {losses.ravel()[bad]} at epoch {epoch0 + e + 1}, step {s + 1} "
                f"of {losses.shape[-1]}")
    means = losses.mean(axis=-1)
    limit = DIVERGED * max(1.0, abs(first))
    if (means > limit).any():
        e = int(np.argmax(means > limit))
        return (f"loss rose to {means[e]:.3g} in epoch {epoch0 + e + 1}, over {DIVERGED:g} x "
                f"max(1, its first value {first:.3g})")
    return None


@dataclasses.dataclass
class FitResult:
    state: TrainState  # the final state
    history: list[dict]  # one row per evaluation
    best_params: tuple  # best on validation (the final params when there is no val split)
    best_val_acc: float | None
    best_stats: tuple = ()  # the running statistics that go with best_params (batch norm)


def _progress_bar(enabled: bool | None, total: int, desc: str):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


def fit(spec: MLPSpec, data, optimizer: GradientTransformation, *, epochs: int,
        batch_size: int, key=None, grad: str = "backprop", hyper: Hyper | None = None,
        eval_every: int = 1, train_eval_size: int | None = None,
        checkpoint_path: str | None = None, resume: bool = False, meta: dict | None = None,
        progress: bool | None = None, callbacks: Sequence[Callable] = (),
        state: TrainState | None = None, mesh=None, form: str = "shard_map") -> FitResult:
    """Train for ``epochs`` epochs, evaluating every ``eval_every`` of them, as CS231n's Solver.

    Args:
      spec: the network.
      data: a ``data.Dataset`` (or any object with ``X_train, y_train, X_val, y_val``).
      optimizer: from ``mlp_jax.optim``.
      epochs, batch_size: epochs over the training split; minibatch size (the
        whole split when larger).
      key: a ``jax.random`` key (needed unless ``state`` or ``resume`` gives one).
      grad: ``"backprop"`` (hand-derived) or ``"autodiff"`` (``jax.grad``).
      hyper: reg, dropout and input noise (``spec.hyper()`` when None), as arrays in
        the params' dtype.
      eval_every: epochs fused into one compiled call between evaluations.
      train_eval_size: None (the default): training accuracy over the whole training
        split, as everywhere else; a number: over the first this-many examples only
        (CS231n's Solver samples 1000), to save time on large data.
      checkpoint_path: save a checkpoint there after every evaluation (process 0 only).
      resume: continue from ``checkpoint_path`` if it exists.
      meta: extra JSON-able facts saved in the checkpoint (dataset, optimizer, ...).
      progress: a tqdm bar; None shows it only when stderr is a terminal.
      callbacks: each called as ``cb(state, row)`` after every evaluation.
      mesh, form: data parallel over ``mesh``'s ``data`` axis (``parallel.data_mesh``),
        across every process of a ``jax.distributed`` job; ``form`` is one of
        :data:`FORMS`. Every process holds the dataset; the run is the one-device run
        (same keys, shuffles and minibatches) to float32 rounding, and its checkpoints
        load on any number of devices.

    Returns:
      A :class:`FitResult`. History rows hold ``epoch, step, train_loss`` (mean
      minibatch loss since the last row), ``train_acc, val_loss, val_acc, lr``
      (where the optimizer exposes one) and ``time`` (seconds since start).

    Raises:
      TrainingDiverged: the loss became non-finite or exploded (:func:`diverged`); the
        last good checkpoint stays.
      parallel.PeerFailure: another process of the job died or became unreachable.
      TypeError: ``data`` is not a dataset (a tuple ``(X, y)``, say).
    """
    from . import checkpoint as ckpt
    from . import parallel

    if not all(hasattr(data, k) for k in ("X_train", "y_train")):
        raise TypeError(f"data must be a data.Dataset (X_train, y_train, X_val, y_val); got "
                        f"{type(data).__name__}: wrap arrays with "
                        "mlp_jax.data.from_arrays(X, y)")

    if grad not in GRAD_SOURCES:
        raise ValueError(f"grad must be one of {GRAD_SOURCES}; got {grad!r}")
    if epochs < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError(f"epochs, batch_size and eval_every must be >= 1; got {epochs}, "
                         f"{batch_size}, {eval_every}")
    if len(data.X_train) == 0:
        raise ValueError("the training split is empty: fit needs at least one example")
    if checkpoint_path:  # a spec that cannot be saved fails now, not at the first save
        ckpt.spec_to_dict(spec)
    X, Y = jax.device_put(data.X_train), jax.device_put(data.y_train)  # one copy, not two
    if mesh is not None:
        parallel.check_batches(X.shape[0], batch_size, mesh)
    has_val = getattr(data, "X_val", None) is not None
    Xtr_eval = X if train_eval_size is None else X[:train_eval_size]
    Ytr_eval = Y if train_eval_size is None else Y[:train_eval_size]

    if spec.batchnorm:
        check_batchnorm_batches(X.shape[0], batch_size, mesh if form == "shard_map" else None)
    history, best_params, best_val, best_stats = [], None, None, None
    if state is None:
        if key is None:
            raise TypeError("fit needs key=jax.random.key(seed) (or state=...)")
        state = init_state(key, spec, optimizer)
    if resume and checkpoint_path and os.path.exists(checkpoint_path):
        loaded = ckpt.load(checkpoint_path, spec=spec, template=state)
        state, history = loaded.state, loaded.history
        best_params, best_val = loaded.best_params, loaded.best_val_acc
        best_stats = loaded.best_stats
    if best_params is None:
        best_params, best_stats = state.params, state.stats
    # The data is concrete here: check it once, before any training (label range and
    # count, shapes, NaN/inf), rather than let a bad label train silently or diverge.
    for split in ("train", "val"):
        x = getattr(data, f"X_{split}", None)
        if x is not None:
            try:
                validate(state.params, x, getattr(data, f"y_{split}"), spec)
            except (ValueError, TypeError) as e:
                raise type(e)(f"{split} split: {e}") from None
    hyper = hyper_arrays(spec, state.params, hyper)
    # What the compiled epochs take: on one device as they are, else replicated on the mesh.
    placed = (state, X, Y, hyper) if mesh is None else parallel.replicate((state, X, Y, hyper),
                                                                          mesh)
    writer = jax.process_index() == 0

    per_epoch = steps_per_epoch(X.shape[0], batch_size)
    compiled = {}
    epoch = int(state.step) // per_epoch
    t0 = time.perf_counter() - (history[-1]["time"] if history else 0.0)
    bar = _progress_bar(progress, epochs, spec.activation_name)
    first = None  # the first minibatch's loss: divergence is judged against it
    if bar is not None:
        bar.update(epoch)
    try:
        while epoch < epochs:
            n = min(eval_every, epochs - epoch)
            if n not in compiled:
                compiled[n] = make_epochs(spec, optimizer, batch_size, n, grad, mesh, form)
            try:
                new_placed, losses = compiled[n](*placed)
                losses = np.asarray(parallel.host_copy(losses))  # (n, per_epoch)
            except jax.errors.JaxRuntimeError as e:
                if jax.process_count() == 1:
                    raise
                raise parallel.PeerFailure(
                    f"process {jax.process_index()} of {jax.process_count()}: a collective "
                    f"failed after epoch {epoch} (a peer died or became unreachable): "
                    f"{str(e).splitlines()[0][:200]}") from e
            first = losses.flat[0] if first is None else first
            why = diverged(losses, first, epoch)
            if why is not None:
                where = f" ({checkpoint_path} holds epoch {epoch})" if checkpoint_path and \
                    os.path.exists(checkpoint_path) else ""
                raise TrainingDiverged(f"{why}; the last good state is kept{where}. Lower the "
                                       "learning rate or check the data.")
            placed = (new_placed, *placed[1:])
            state = new_placed if mesh is None else parallel.host_state(new_placed)
            epoch += n
            row = dict(epoch=epoch, step=int(state.step), train_loss=float(losses.mean()))
            row["train_acc"] = evaluate(state.params, Xtr_eval, Ytr_eval, spec, hyper,
                                        state.stats)[1]
            if has_val:
                row["val_loss"], row["val_acc"] = evaluate(state.params, data.X_val,
                                                           data.y_val, spec, hyper, state.stats)
            if not has_val or best_val is None or row["val_acc"] > best_val:
                best_val, best_params, best_stats = row.get("val_acc"), state.params, state.stats
            lr = _learning_rate(optimizer, state)
            if lr is not None:
                row["lr"] = lr
            row["time"] = time.perf_counter() - t0
            history.append(row)
            for cb in callbacks:
                cb(state, row)
            if checkpoint_path and writer:
                ckpt.save(checkpoint_path, state, spec=spec, history=history,
                          best_params=best_params, best_stats=best_stats,
                          best_val_acc=best_val, meta=meta,
                          preprocessing=getattr(data, "preprocessing", None))
            if bar is not None:
                bar.update(n)
                bar.set_postfix(loss=f"{row['train_loss']:.3g}",
                                **({"val_acc": f"{row['val_acc']:.3f}"} if has_val else {}))
    finally:
        if bar is not None:
            bar.close()
    return FitResult(state, history, best_params, best_val, best_stats)


def _learning_rate(optimizer, state) -> float | None:
    lr = getattr(optimizer, "learning_rate", None)
    if lr is None:
        return None
    value = lr(state.step) if callable(lr) else lr
    value = float(value)
    return value if math.isfinite(value) else None
