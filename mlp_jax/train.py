"""Training runs: :func:`fit` (CS231n's Solver: epochs, evaluation, the best params,
checkpoints, exact resume), its guards, and divergence.

The compiled program it runs (``TrainState``, the step, fused epochs, data parallel
forms) is :mod:`mlp_jax.epochs`; evaluation is :mod:`mlp_jax.evaluation`; an epoch's
minibatches and their rules are :mod:`mlp_jax.batches`. Their public names are
re-exported here, where a user looks for them (``train.TrainState``, ``train.evaluate``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from . import batches, parallel
from . import checkpoint as ckpt
from .batches import steps_per_epoch
from .epochs import (
    FORMS,
    GRAD_SOURCES,
    TrainState,
    epochs_program,
    gradients,
    hyper_arrays,
    init_state,
    init_state_from,
    make_epochs,
    make_train_step,
    train_step,
)
from .evaluation import EVAL_CHUNK, evaluate, evaluate_splits, splits_of
from .optim import GradientTransformation
from .spec import Hyper, MLPSpec
from .validate import check_data, check_finite, check_params

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


def check_run(spec: MLPSpec, data, *, epochs: int, batch_size: int, devices: int = 1,
              form: str = "shard_map") -> None:
    """What :func:`fit` and :func:`mlp_jax.sweep.sweep` check before any training: a
    dataset, counts >= 1, a training split, minibatches that meet their rules
    (:func:`mlp_jax.batches.check`; ``devices`` of data parallel in ``form``), and each
    split's features and labels (shape, label range, NaN/inf), named by split."""
    if not all(hasattr(data, k) for k in ("X_train", "y_train")):
        raise TypeError(f"data must be a data.Dataset (X_train, y_train, X_val, y_val); got "
                        f"{type(data).__name__}: wrap arrays with "
                        "mlp_jax.data.from_arrays(X, y)")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1; got {epochs}, {batch_size}")
    n = len(data.X_train)
    if n == 0:
        raise ValueError("the training split is empty: training needs at least one example")
    batches.check(n, batch_size, devices=devices, batchnorm=spec.batchnorm,
                  normalized_per_device=form == "shard_map")
    for split, (x, y) in splits_of(data, ("train", "val")).items():
        try:
            check_data(x, y, spec)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{split} split: {e}") from None


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
        checkpoint_path: str | None = None, resume=False, meta: dict | None = None,
        progress: bool | None = None, callbacks: Sequence[Callable] = (),
        on_start: Callable[[list], None] | None = None,
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
      resume: continue from ``checkpoint_path`` if it exists; or a ``checkpoint.Saved``
        (:func:`mlp_jax.checkpoint.read`) to continue from, already read.
      meta: extra JSON-able facts saved in the checkpoint (dataset, optimizer, ...).
      progress: a tqdm bar; None shows it only when stderr is a terminal.
      callbacks: each called as ``cb(state, row)`` after every evaluation.
      on_start: called as ``on_start(history)`` once every check has passed and the state
        is built (``history``: a resumed run's rows), before the first epoch.
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
    grads = gradients(spec, grad, mesh, form)  # built once: it checks grad and form
    check_run(spec, data, epochs=epochs, batch_size=batch_size, form=form,
              devices=1 if mesh is None else mesh.shape["data"])
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1; got {eval_every}")
    if checkpoint_path:  # a spec that cannot be saved fails now, not at the first save
        ckpt.spec_to_dict(spec)
    if state is None:
        if key is None:
            raise TypeError("fit needs key=jax.random.key(seed) (or state=...)")
        state = init_state(key, spec, optimizer)
    check_params(state.params, spec)
    check_finite("params", state.params)
    history, best_params, best_val, best_stats = [], state.params, None, state.stats
    if resume is True:  # the checkpoint, where there is one yet
        exists = checkpoint_path and os.path.exists(checkpoint_path)
        resume = ckpt.read(checkpoint_path) if exists else None
    if resume:  # a checkpoint.Saved: read once, here or by the caller
        loaded = resume.restore(template=state, spec=spec)
        state, history = loaded.state, loaded.history
        best_params, best_val, best_stats = (loaded.best_params, loaded.best_val_acc,
                                             loaded.best_stats)
    if on_start is not None:
        on_start(history)
    X, Y = jax.device_put(data.X_train), jax.device_put(data.y_train)  # one copy, not two
    evaluated = {"train": (X, Y) if train_eval_size is None
                 else (X[:train_eval_size], Y[:train_eval_size]), **splits_of(data, ("val",))}
    has_val = "val" in evaluated
    hyper = hyper_arrays(spec, state.params, hyper)
    # What the compiled epochs take: on one device as they are, else replicated on the mesh.
    placed = (state, X, Y, hyper) if mesh is None else parallel.replicate((state, X, Y, hyper),
                                                                          mesh)
    writer = jax.process_index() == 0

    per_epoch = steps_per_epoch(len(X), batch_size)
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
                compiled[n] = epochs_program(spec, optimizer, grads, batch_size, n, mesh)
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
            scores = evaluate_splits(state.params, spec, evaluated, hyper, state.stats)
            row.update({k: v for k, v in scores.items() if k != "train_loss"})  # minibatches'
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
    value = jax.jit(lr)(state.step) if callable(lr) else lr  # a schedule: one program
    value = float(value)
    return value if math.isfinite(value) else None


__all__ = ["DIVERGED", "EVAL_CHUNK", "FORMS", "GRAD_SOURCES", "FitResult", "TrainState",
           "TrainingDiverged", "check_run", "diverged", "evaluate", "evaluate_splits", "fit",
           "gradients", "init_state", "init_state_from", "make_epochs", "make_train_step",
           "splits_of", "steps_per_epoch", "train_step"]
