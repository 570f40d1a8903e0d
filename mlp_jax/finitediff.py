"""Finite differences with error bars: the one stencil both checkers use, and its
application to the MLP's loss (:func:`finite_differences`, for ``check_grads``).

A *probe* is an input entry (a flat index) or a direction vector. Its stencil
evaluates ``f(x + t * step * probe)`` at the offsets ``t`` of ``STENCIL``; from those
values each estimate of the derivative along the probe, with its truncation error
estimated by Richardson (the same estimate at 2h):

* ``centred``, 4 points, O(h^4): ``(f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h``; the
  same at 2h, ``f(±4h)``, gives the error ``|d(2h) - d(h)| / 15``;
* ``right`` and ``left``, one-sided 3 points, O(h^2), error ``|d(2h) - d(h)| / 3``:
  on a kink, where the centred estimate means nothing, each side still has a
  derivative. Where the two sides disagree beyond their error bars the probe sits on
  a kink (:func:`candidates`).

Probes go through in chunks, one vmapped function per chunk, so memory is linear in
the input size: looped by ``lax.map`` (``traced=True``: fine under ``jit``) or by
Python (eager, each op compiled once per shape and reused by the next call). Which
entries to probe, all of them or a seeded sample per leaf, is :func:`pick_entries`'.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .network import forward_with_cache, loss, prepare_labels
from .passrule import judge
from .spec import MLPSpec

STENCIL = (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0)  # offsets, in units of the step
# name: (weights at h, weights at 2h) on STENCIL (then divided by the step), and the
# Richardson divisor 2^order - 1
ESTIMATES = {
    "centred": ((0, 1 / 12, -8 / 12, 0, 8 / 12, -1 / 12, 0),
                (1 / 24, -8 / 24, 0, 0, 0, 8 / 24, -1 / 24), 15.0),
    "right": ((0, 0, 0, -3 / 2, 2, -1 / 2, 0), (0, 0, 0, -3 / 4, 0, 1, -1 / 4), 3.0),
    "left": ((0, 1 / 2, -2, 3 / 2, 0, 0, 0), (1 / 4, -1, 0, 3 / 4, 0, 0, 0), 3.0),
}
CHUNK_BYTES = 32 * 2**20  # the perturbed input copies of one chunk
TRUNC = 4.0  # the allowance for truncation: times the Richardson estimate


def pick_entries(sizes: list[int], fd_entries, rng: np.random.Generator, limit: int,
                 sample: int) -> list[np.ndarray]:
    """Which entries of each leaf to finite-difference, as sorted indices into the leaf.

    ``fd_entries``: None, every entry; a positive int, that many per leaf (a seeded
    sample drawn by ``rng``; every entry of a smaller leaf); ``"auto"``, every entry
    where the leaves hold ``limit`` entries or fewer in all, else ``sample`` per leaf.
    Both checkers pick by this (each with its own ``limit`` and ``sample``)."""
    if isinstance(fd_entries, str) and fd_entries == "auto":
        fd_entries = None if sum(sizes) <= limit else sample
    elif fd_entries is not None and (isinstance(fd_entries, bool)
                                     or not isinstance(fd_entries, numbers.Integral)
                                     or fd_entries < 1):
        raise ValueError(f"fd_entries must be 'auto', None (every entry) or a positive int "
                         f"(entries per leaf); got {fd_entries!r}")
    return [np.arange(n) if fd_entries is None or fd_entries >= n
            else np.sort(rng.choice(n, int(fd_entries), replace=False)) for n in sizes]


def points(names=tuple(ESTIMATES)) -> tuple[float, ...]:
    """The offsets the named estimates need (the others are never evaluated)."""
    return tuple(t for i, t in enumerate(STENCIL)
                 if any(ESTIMATES[n][k][i] for n in names for k in (0, 1)))


def chunk_size(size: int, n_points: int, itemsize: int = 8, most: int = 256) -> int:
    """Probes per chunk: their ``n_points`` perturbed copies of ``size`` inputs fit
    ``CHUNK_BYTES`` (at least 1, at most ``most``)."""
    return int(max(1, min(most, CHUNK_BYTES // (n_points * size * itemsize))))


def stencil(fn, x, probes, steps, offsets, chunk: int, traced: bool = True):
    """``fn(x + t * step * probe)`` for every probe and every ``t`` in ``offsets``.

    ``fn`` maps a flat vector to a pytree of arrays; ``probes`` (P,) flat indices or
    (P, n) directions, ``steps`` (P,). Returns the pytree with leading axes
    ``(P, len(offsets))``. All chunks have ``chunk`` probes (the last is padded), so
    one compiled chunk serves every call with the same shapes.
    """
    t = jnp.asarray(offsets, x.dtype)

    def one(probe, step):
        if probe.ndim == 0:
            xs = jnp.broadcast_to(x, (t.size, x.size)).at[:, probe].add(t * step)
        else:
            xs = x + (t * step)[:, None] * probe
        return jax.vmap(fn)(xs)

    n = probes.shape[0]
    pad = -n % chunk
    probes = jnp.concatenate([probes, jnp.repeat(probes[:1], pad, axis=0)])
    steps = jnp.concatenate([steps, jnp.repeat(steps[:1], pad)])
    chunks = (probes.reshape(-1, chunk, *probes.shape[1:]), steps.reshape(-1, chunk))
    if chunks[1].shape[0] == 1:  # nothing to loop over
        out = jax.tree.map(lambda a: a[None], jax.vmap(one)(chunks[0][0], chunks[1][0]))
    elif traced:
        out = jax.lax.map(lambda c: jax.vmap(one)(*c), chunks)
    else:
        parts = [jax.vmap(one)(p, s) for p, s in zip(*chunks)]
        out = jax.tree.map(lambda *a: jnp.stack(a), *parts)
    return jax.tree.map(lambda a: a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])[:n], out)


def estimate(values, steps, name: str, offsets=STENCIL):
    """The named estimate from stencil ``values`` (P, len(offsets), ...): ``(derivative,
    truncation error)``, each (P, ...)."""
    w_h, w_2h, divisor = ESTIMATES[name]
    keep = [STENCIL.index(t) for t in offsets]
    steps = jnp.reshape(steps, (-1,) + (1,) * (values.ndim - 2))
    d_h, d_2h = (jnp.tensordot(jnp.asarray([w[i] for i in keep], values.dtype), values,
                               axes=([0], [1])) / steps for w in (w_h, w_2h))
    return d_h, jnp.abs(d_2h - d_h) / divisor


def weight_sum(name: str) -> float:
    """Sum of the estimate's absolute weights: how much it amplifies rounding in f."""
    return float(np.abs(ESTIMATES[name][0]).sum())


def candidates(est, rtol, terms, convention=None):
    """A rule's finite-difference references, entry by entry, for ``Comparison.best``:
    centred where the left and right derivatives agree, else (a kink) left or right, or
    ``convention`` (autodiff's value there, where there is one).

    ``est``: ``{name: (derivative, rounding, truncation)}`` for centred, left and right;
    ``terms``: the rule's own absolute allowance. Returns ``(candidates, kink mask)``.
    """
    def cand(name):
        d, rounding, trunc = est[name]
        return d, dict(terms, fd=rounding, trunc=trunc)

    (dl, al), (dr, ar) = cand("left"), cand("right")
    kink = np.abs(dl - dr) > (sum(al.values()) + sum(ar.values())
                              + rtol * (np.abs(dl) + np.abs(dr)))
    dc, ac = cand("centred")
    if convention is None:
        d0 = np.where(kink, dl, dc)
        terms0 = {k: np.where(kink, al[k], v) for k, v in ac.items()}
    else:  # autodiff's value carries no finite-difference error
        d0 = np.where(kink, convention, dc)
        terms0 = {k: np.where(kink, 0.0 if k in ("fd", "trunc") else al[k], v)
                  for k, v in ac.items()}
    return [(d0, rtol, terms0), (dl, rtol, al), (dr, rtol, ar)], kink


# --- The MLP's loss (check_grads): every parameter entry by the centred stencil -------
POINTS = points(("centred",))  # +-h, +-2h, and +-4h for the estimate at 2h


def _kink_state(scores, cache, y, spec: MLPSpec) -> jax.Array:
    """Everything that flips when a point crosses a kink, flattened to int32."""
    parts = []
    act = spec.elementwise_activation
    for entry in cache[:-1]:
        if act is None:
            parts.append(entry["idx"].ravel())
        else:
            parts.extend((entry["z"] > k).ravel() for k in act.kinks)
    if spec.loss_fn.kink_state is not None:
        parts.append(spec.loss_fn.kink_state(scores, y).ravel())
    if not parts:
        return jnp.zeros((0,), jnp.int32)
    return jnp.concatenate([p.astype(jnp.int32) for p in parts])


def fd_chunk_size(num_params: int, itemsize: int = 8) -> int:
    """Entries per finite-difference chunk: their perturbed parameter copies (one per
    point of the centred stencil) fit ``CHUNK_BYTES``."""
    return chunk_size(num_params, len(POINTS), itemsize)


def finite_differences(params, x, y, spec: MLPSpec, *, h: float = 1e-3, hyper=None, key=None,
                       train: bool = False, stats=None, entries=None, chunk: int | None = None):
    """Centered 4-point finite differences of :func:`mlp_jax.loss`, and kink straddles.

    Call it with float64 params (inside ``jax.enable_x64``). Perturbs each flat
    parameter entry (or only ``entries``, flat indices) by ``±h, ±2h, ±4h``.
    Entries go through in chunks of ``chunk`` (default: :func:`fd_chunk_size`),
    one compiled chunk looped over by ``lax.map``, so memory stays
    ``O(chunk * num_params)`` however many entries are asked for. Pure: fine
    under ``jit``.

    ``stats``: batch norm's running statistics, for evaluation mode.

    Returns:
      ``(grads, errors, straddles)``: arrays over ``entries``. ``errors[i]`` is the
      stencil's truncation error estimated from the same stencil at ``2h``
      (Richardson: ``|d(2h) - d(h)| / 15``); ``straddles[i]`` is True when the
      stencil of entry i (out to ``±4h``) crosses a kink.
    """
    flat, unravel = ravel_pytree(params)
    entries = jnp.arange(flat.size) if entries is None else jnp.asarray(entries)
    y = prepare_labels(y, spec, np.shape(x)[0], flat.dtype)

    def loss_and_state(theta):
        p = unravel(theta)
        kw = dict(hyper=hyper, key=key, train=train, stats=None if train else stats)
        scores, cache = forward_with_cache(p, x, spec, **kw)
        value = loss(p, x, y, spec, **kw)
        return value, _kink_state(scores, cache, y, spec)

    _, center_state = loss_and_state(flat)
    B = chunk or fd_chunk_size(flat.size, flat.dtype.itemsize)
    steps = jnp.full(entries.shape, h, flat.dtype)
    values, states = stencil(loss_and_state, flat, entries, steps, POINTS, B)
    grads, errors = estimate(values, steps, "centred", POINTS)
    return grads, errors, jnp.any(states != center_state, axis=(1, 2))


REFINE = (10.0, 100.0, 1000.0)  # an entry finite differences contradict is redone at h / these


def refine(fd_at, hand, entries, fd, err, straddles, rounding, h, tol, trunc):
    """Finite differences again, at smaller steps, for the entries they contradict: the
    hand derivative ``hand`` at flat ``entries`` against the estimates ``fd`` at ``h``
    (``err`` their Richardson estimates), judged by the relative tolerance ``tol``, the
    rounding allowance ``rounding / step`` and ``trunc`` times the Richardson estimate;
    ``fd_at(entries, step)`` computes ``(fd, err, straddles)`` at another step.

    Where the loss curves on a scale below ``h`` (batch norm on a tiny batch: a feature
    of small batch variance), the Richardson estimate is outside its asymptotic regime
    and understates the truncation error. Each contradicted entry is redone at
    ``h / REFINE`` (truncation falls as h^4, rounding grows as 1/h) and judged by the one
    of those estimates with the smallest error bar (rounding + truncation allowance): the
    most accurate, whatever it says, so a wrong derivative gains nothing from there
    being several. Returns ``(fd, err, noise, refined)``: per entry the estimate, its
    truncation estimate and its rounding allowance, and how many entries were redone."""
    fd, err, noise = np.array(fd), np.array(err), np.full(fd.shape, rounding / h)
    used = judge(hand, fd, tol, {"noise": noise, "trunc": trunc * err})[0]
    redo = np.flatnonzero((used > 1.0) & ~straddles)
    best = np.full(redo.size, np.inf)  # the smallest error bar among the smaller steps
    for factor in REFINE if redo.size else ():
        step = h / factor
        f2, e2, s2 = (np.asarray(a) for a in fd_at(entries[redo], step))
        bar = rounding / step + trunc * e2
        better = (bar < best) & ~s2
        at = redo[better]
        fd[at], err[at], noise[at], best[better] = (f2[better], e2[better], rounding / step,
                                                    bar[better])
    return fd, err, noise, int(redo.size)
