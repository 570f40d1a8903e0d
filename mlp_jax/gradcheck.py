"""Gradient checking: hand backprop vs ``jax.grad`` vs finite differences, in float64.

``check_grads`` answers "is my derivation right?" for the built-in layers and
for any ``Activation`` or ``Loss`` a user puts in the spec.

* Metric: CS231n's relative error, ``max_i |a_i - b_i| / max(1e-8, |a_i| + |b_i|)``
  per leaf. An entry where both values are below ``1e-8 * scale`` (a
  near-zero entry, where two correct summation orders differ by roundoff the
  metric would inflate) is judged against ``scale`` instead; the report counts
  such entries. ``scale`` is the largest magnitude in the entry's layer (its
  ``W`` and ``b`` together): a one-entry bias leaf whose true gradient is
  exactly 0 has no scale of its own. The thresholds are never loosened.
* Finite differences: the centered 4-point stencil
  ``(f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h`` (error O(h^4)).
* Kinks: every stencil point records which side of every kink each
  pre-activation (and each hinge margin, each maxout winner) lies on. An entry
  whose stencil sees that state change straddles a kink: finite differences
  are meaningless there, so it is reported as such and left out of the
  finite-difference comparison. Hand vs ``jax.grad`` is compared everywhere,
  kinks included, where the two must agree exactly by the library's convention.
"""

from __future__ import annotations

import multiprocessing
import queue as _queue
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .backprop import backprop
from .network import forward_with_cache, loss, prepare_labels
from .spec import MLPSpec
from .validate import validate

TOL_AUTODIFF = 1e-10
TOL_FD = 1e-7
STENCIL = (-2.0, -1.0, 1.0, 2.0)
WEIGHTS = (1.0, -8.0, 8.0, -1.0)  # divided by 12 h


def rel_error(a, b) -> float:
    """CS231n's relative error, ``max |a-b| / max(1e-8, |a|+|b|)``, elementwise then max."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)), initial=0.0))


def _leaf_ratios(a: np.ndarray, b: np.ndarray, scale: float) -> tuple[np.ndarray, int]:
    """Per-entry relative errors with the near-zero rule; and how many entries it touched."""
    denom = np.maximum(1e-8, np.abs(a) + np.abs(b))
    small = np.maximum(np.abs(a), np.abs(b)) < 1e-8 * scale
    denom = np.where(small, max(scale, 1e-8), denom)
    return np.abs(a - b) / denom, int(small.sum())


@dataclass(frozen=True)
class Comparison:
    """One leaf, hand-derived vs a reference."""

    rel_error: float
    worst_index: tuple[int, ...]
    hand: float  # value of the hand gradient at worst_index
    reference: float
    checked: int  # entries compared
    near_zero: int  # entries judged against max|leaf| (the near-zero rule)

    @staticmethod
    def of(hand: np.ndarray, ref: np.ndarray, scale: float,
           include: np.ndarray | None = None) -> Comparison:
        ratios, near_zero = _leaf_ratios(hand, ref, scale)
        if include is not None:
            ratios = np.where(include, ratios, -1.0)
        if ratios.size == 0 or ratios.max() < 0:
            return Comparison(0.0, (), float("nan"), float("nan"), 0, near_zero)
        i = np.unravel_index(int(np.argmax(ratios)), ratios.shape)
        checked = int(ratios.size if include is None else include.sum())
        return Comparison(float(ratios[i]), tuple(int(j) for j in i), float(hand[i]),
                          float(ref[i]), checked, near_zero)


@dataclass(frozen=True)
class LeafCheck:
    name: str  # "W1", "b2", ...
    shape: tuple[int, ...]
    autodiff: Comparison
    fd: Comparison
    kink_entries: int  # entries whose stencil straddles a kink (left out of fd)


@dataclass(frozen=True)
class GradCheckReport:
    """Result of :func:`check_grads`; ``str(report)`` is a readable table."""

    spec_summary: str
    leaves: tuple[LeafCheck, ...]
    loss_hand: float
    loss_autodiff: float
    tol_autodiff: float
    tol_fd: float
    h: float

    @property
    def worst_autodiff(self) -> float:
        return max((leaf.autodiff.rel_error for leaf in self.leaves), default=0.0)

    @property
    def worst_fd(self) -> float:
        return max((leaf.fd.rel_error for leaf in self.leaves), default=0.0)

    @property
    def kink_entries(self) -> int:
        return sum(leaf.kink_entries for leaf in self.leaves)

    @property
    def loss_rel_error(self) -> float:
        return rel_error(self.loss_hand, self.loss_autodiff)

    @property
    def passed(self) -> bool:
        return (self.worst_autodiff <= self.tol_autodiff and self.worst_fd <= self.tol_fd
                and self.loss_rel_error <= self.tol_autodiff)

    def __str__(self) -> str:
        lines = [
            f"gradient check: {self.spec_summary}",
            f"loss: hand {self.loss_hand:.12g}, jax.grad's forward {self.loss_autodiff:.12g}",
            f"{'leaf':<5} {'shape':<12} {'vs jax.grad':>11} {'vs finite diff':>14} "
            f"{'kink':>5}  worst entry (hand vs reference)",
        ]
        for leaf in self.leaves:
            ad, fd = leaf.autodiff, leaf.fd
            worst = fd if fd.rel_error / self.tol_fd > ad.rel_error / self.tol_autodiff else ad
            which = "fd" if worst is fd else "ad"
            flag = "" if (ad.rel_error <= self.tol_autodiff and fd.rel_error <= self.tol_fd) \
                else "  FAIL"
            lines.append(
                f"{leaf.name:<5} {str(leaf.shape):<12} {ad.rel_error:>11.2e} {fd.rel_error:>14.2e} "
                f"{leaf.kink_entries:>5}  {which} {list(worst.worst_index)} "
                f"{worst.hand:.6g} vs {worst.reference:.6g}{flag}"
            )
        near_zero = sum(leaf.autodiff.near_zero + leaf.fd.near_zero for leaf in self.leaves)
        lines.append(
            f"thresholds: jax.grad {self.tol_autodiff:g}, finite differences {self.tol_fd:g} "
            f"(4-point stencil, h={self.h:g}); {self.kink_entries} entries straddle a kink "
            f"(left out of the finite-difference column); {near_zero} near-zero entries "
            "judged against their layer's max"
        )
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)


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


def finite_differences(params, x, y, spec: MLPSpec, *, h: float = 1e-3, reg=None, key=None,
                       train: bool = False, entries=None, chunk: int = 256):
    """Centered 4-point finite differences of :func:`mlp_jax.loss`, and kink straddles.

    Call it with float64 params (inside ``jax.enable_x64``). Perturbs each flat
    parameter entry (or only ``entries``, flat indices) by ``-2h, -h, h, 2h``.
    Pure: fine under ``jit``.

    Returns:
      ``(grads, straddles)``: arrays over ``entries``; ``straddles[i]`` is True
      when the stencil of entry i crosses a kink.
    """
    flat, unravel = ravel_pytree(params)
    entries = jnp.arange(flat.size) if entries is None else jnp.asarray(entries)
    y = prepare_labels(y, spec, np.shape(x)[0], flat.dtype)

    def loss_and_state(theta):
        p = unravel(theta)
        scores, cache = forward_with_cache(p, x, spec, key=key, train=train)
        value = loss(p, x, y, spec, reg=reg, key=key, train=train)
        return value, _kink_state(scores, cache, y, spec)

    _, center_state = loss_and_state(flat)
    offsets = jnp.asarray(STENCIL, flat.dtype) * h
    weights = jnp.asarray(WEIGHTS, flat.dtype) / (12.0 * h)
    # Chunks have one fixed size (the last is padded), so eagerly compiled ops of
    # one call serve the next, whatever its number of entries.
    n = entries.shape[0]
    padded = jnp.concatenate([entries, jnp.repeat(entries[:1], -n % chunk)])
    grads, straddles = [], []
    for start in range(0, padded.shape[0], chunk):
        idx = padded[start:start + chunk]  # (B,)
        thetas = jnp.broadcast_to(flat, (len(STENCIL), idx.size, flat.size))
        thetas = thetas.at[:, jnp.arange(idx.size), idx].add(offsets[:, None])  # (4, B, P)
        values, states = jax.vmap(jax.vmap(loss_and_state))(thetas)  # (4, B), (4, B, K)
        grads.append(jnp.einsum("s,sb->b", weights, values))
        straddles.append(jnp.any(states != center_state, axis=(0, 2)))
    return jnp.concatenate(grads)[:n], jnp.concatenate(straddles)[:n]


def _all_three(params, x, y, spec, reg, key, train, h, entries):
    """Hand grads, jax.grad and finite differences: one function, to jit or run eagerly."""
    kw = dict(reg=reg, key=key, train=train)
    loss_hand, hand = backprop(params, x, y, spec, **kw)
    loss_ad, auto = jax.value_and_grad(loss)(params, x, y, spec, **kw)
    fd, straddles = finite_differences(params, x, y, spec, h=h, entries=entries, **kw)
    return loss_hand, hand, loss_ad, auto, fd, straddles


_all_three_jit = jax.jit(_all_three, static_argnames=("spec", "train", "h"))


def _leaf_names(params) -> list[str]:
    return [f"{name}{layer}" for layer, p in enumerate(params, start=1) for name in sorted(p)]


def check_grads(params, x, y, spec: MLPSpec, *, reg=None, key=None, train: bool | None = None,
                h: float = 1e-3, tol_autodiff: float = TOL_AUTODIFF, tol_fd: float = TOL_FD,
                fd_entries: int | None = None, seed: int = 0, jit: bool = True) -> GradCheckReport:
    """Hand backprop vs ``jax.grad(loss)`` vs finite differences, per leaf, in float64.

    Args:
      params, x, y, spec: as for :func:`mlp_jax.loss`; converted to float64
        for the check (x64 is enabled only inside this call).
      reg: overrides ``spec.reg``.
      key: dropout / input-noise key; the same masks are used by all three.
      train: training mode; defaults to True when ``key`` is given.
      h: finite-difference step.
      tol_autodiff, tol_fd: pass thresholds on the relative error.
      fd_entries: finite-difference only this many random entries per leaf
        (None: every entry). Hand vs ``jax.grad`` always covers every entry.
      seed: picks those entries.
      jit: compile the check as one program (fastest for a single check);
        False runs it op by op, which is faster for many small checks of the
        same shapes, whose compiled ops are then reused (the matrix does this).

    Returns:
      A :class:`GradCheckReport`; ``report.passed`` and ``print(report)``.
    """
    validate(params, x, y, spec)
    train = key is not None if train is None else train
    with jax.enable_x64(True):
        f64 = jnp.float64
        params = jax.tree.map(lambda a: jnp.asarray(a, f64), params)
        x = jnp.asarray(x, f64)
        sizes = [int(np.size(a)) for a in jax.tree.leaves(params)]
        starts = np.cumsum([0] + sizes[:-1])
        rng = np.random.default_rng(seed)
        picks = [np.arange(n) if fd_entries is None or fd_entries >= n
                 else np.sort(rng.choice(n, fd_entries, replace=False)) for n in sizes]
        entries = np.concatenate([s + p for s, p in zip(starts, picks)])
        run = _all_three_jit if jit else _all_three
        loss_hand, hand, loss_ad, auto, fd_flat, straddle_flat = run(
            params, x, y, spec, reg, key, train, h, entries)
        hand_leaves = [np.asarray(a) for a in jax.tree.leaves(hand)]
        auto_leaves = [np.asarray(a) for a in jax.tree.leaves(auto)]
        fd_flat, straddle_flat = np.asarray(fd_flat), np.asarray(straddle_flat)

    names = _leaf_names(params)
    layer_scale = {}  # the near-zero rule's scale: max magnitude over the layer's W and b
    for name, hl, al in zip(names, hand_leaves, auto_leaves):
        m = max(np.max(np.abs(hl), initial=0.0), np.max(np.abs(al), initial=0.0))
        layer_scale[name[1:]] = max(layer_scale.get(name[1:], 0.0), m)
    leaves, at = [], 0
    for name, hl, al, pick in zip(names, hand_leaves, auto_leaves, picks):
        scale = layer_scale[name[1:]]
        fd = hl.ravel().copy()  # entries not finite-differenced compare equal
        include = np.zeros(hl.size, bool)
        fd[pick] = fd_flat[at:at + pick.size]
        include[pick] = ~straddle_flat[at:at + pick.size]
        kinks = int(straddle_flat[at:at + pick.size].sum())
        at += pick.size
        leaves.append(LeafCheck(
            name, hl.shape, Comparison.of(hl, al, scale),
            Comparison.of(hl, fd.reshape(hl.shape), scale, include.reshape(hl.shape)),
            kinks,
        ))
    summary = (f"sizes={spec.sizes}, activation={spec.activation_name}, loss={spec.loss_fn.name}, "
               f"reg={spec.reg if reg is None else reg}, dropout={spec.dropout if train else 0}, "
               f"N={np.shape(x)[0]}")
    return GradCheckReport(summary, tuple(leaves), float(loss_hand), float(loss_ad),
                           tol_autodiff, tol_fd, h)


# --- The whole matrix: every activation x loss x depth x reg x dropout. --------
MATRIX_DEPTHS = (1, 2, 3, 4)
MATRIX_REGS = (0.0, 0.1)
MATRIX_DROPOUTS = (0.0, 0.3)
# One width for every layer, so cells share shapes and reuse each other's compiled ops.
_MATRIX_D, _MATRIX_H, _MATRIX_N, _MATRIX_C = 5, 5, 16, 3


def kink_problem(spec: MLPSpec, seed: int):
    """Params and a batch whose row 0 sits exactly on every kink.

    Row 0 of ``x`` is zero and hidden biases are zero, so every pre-activation
    of row 0 is exactly 0 (the ReLU family's kink; all maxout pieces tie), and
    the output bias puts row 0 exactly on a hinge margin (svm: ``s_0 - s_1 + 1
    = 0``; hinge: ``1 - y s = 0``). The other rows are random.
    """
    from .network import init_params

    rng = np.random.default_rng(seed)
    N, D, C = _MATRIX_N, spec.sizes[0], spec.sizes[-1]
    params = list(init_params(jax.random.key(seed), spec))
    x = rng.normal(size=(N, D))
    x[0] = 0.0
    loss_name = spec.loss_fn.name
    b_out = rng.normal(size=(C,))
    if loss_name == "svm":
        b_out[:2] = (0.0, 1.0)
    elif loss_name == "hinge":
        b_out[0] = 1.0
    if spec.bias:
        params[-1] = dict(params[-1], b=jnp.asarray(b_out, params[-1]["b"].dtype))
    y = {
        "class": lambda: np.concatenate([[1], rng.integers(0, C, N - 1)]),
        "binary01": lambda: rng.integers(0, 2, N),
        "binary_pm1": lambda: np.concatenate([[1], 2 * rng.integers(0, 2, N - 1) - 1]),
        "real": lambda: rng.normal(size=(N, C)),
    }[spec.loss_fn.labels]()
    return tuple(params), x, y


def matrix_cells():
    """Every cell of the matrix as ``(activation, loss, depth, reg, dropout)``."""
    from .activations import ACTIVATION_NAMES
    from .losses import LOSS_NAMES

    return [(act, name, depth, reg, p) for act in ACTIVATION_NAMES for name in LOSS_NAMES
            for depth in MATRIX_DEPTHS for reg in MATRIX_REGS for p in MATRIX_DROPOUTS]


def matrix_spec(act: str, loss_name: str, depth: int, reg: float, dropout: float) -> MLPSpec:
    from .losses import BINARY01, BINARY_PM1, get_loss

    C = 1 if get_loss(loss_name).labels in (BINARY01, BINARY_PM1) else _MATRIX_C
    sizes = (_MATRIX_D, *[_MATRIX_H] * (depth - 1), C)
    return MLPSpec(sizes, activation=act, loss=loss_name, reg=reg, dropout=dropout,
                   dtype="float64")


def _canonical(cell):
    """The cell actually computed: a depth-1 net (the linear classifier) has no
    hidden layer, so neither its activation nor dropout changes anything."""
    act, name, depth, reg, p = cell
    return ("relu", name, depth, reg, 0.0) if depth == 1 else cell


def _check_cell(cell) -> dict:
    seed = matrix_cells().index(cell)  # fixed, so every run checks the same problems
    spec = matrix_spec(*cell)
    with jax.enable_x64(True):
        params, x, y = kink_problem(spec, seed=seed)
    report = check_grads(params, x, y, spec, key=jax.random.key(seed) if cell[4] else None,
                         jit=False)
    return dict(autodiff=report.worst_autodiff, fd=report.worst_fd,
                kink_entries=report.kink_entries, passed=report.passed)


def _check_cells(cells, queue) -> None:
    for cell in cells:
        queue.put((cell, _check_cell(cell)))


def check_matrix(workers: int = 1, progress=None) -> list[dict]:
    """Run :func:`check_grads` on every cell of the matrix.

    Args:
      workers: processes to spread the cells over (each compiles its own ops).
      progress: called with the number of cells done, as they finish.

    Returns:
      One dict per cell of :func:`matrix_cells`: its coordinates, the worst
      relative errors vs ``jax.grad`` and vs finite differences, the number of
      kink entries and ``passed``.
    """
    cells = matrix_cells()
    unique = list(dict.fromkeys(_canonical(c) for c in cells))
    # Contiguous blocks (cells are ordered by activation), so each worker compiles
    # mostly its own activations' ops rather than every worker compiling them all.
    size = -(-len(unique) // workers)
    shards = [unique[w * size:(w + 1) * size] for w in range(workers)]
    done = {}
    if workers == 1:
        for c in unique:
            done[c] = _check_cell(c)
            if progress:
                progress(len(done), len(unique))
    else:
        ctx = multiprocessing.get_context("spawn")  # fork and XLA's threads don't mix
        queue = ctx.Queue()
        procs = [ctx.Process(target=_check_cells, args=(s, queue), daemon=True) for s in shards]
        for p in procs:
            p.start()
        try:
            while len(done) < len(unique):
                try:
                    cell, result = queue.get(timeout=5)
                except _queue.Empty:
                    if not all(p.is_alive() for p in procs):
                        raise RuntimeError("a gradcheck worker process died; rerun with "
                                           "--workers 1 to see its error") from None
                    continue
                done[cell] = result
                if progress:
                    progress(len(done), len(unique))
        finally:
            for p in procs:
                p.terminate()
    keys = ("activation", "loss", "depth", "reg", "dropout")
    return [dict(zip(keys, c), **done[_canonical(c)]) for c in cells]
