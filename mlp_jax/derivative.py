"""Check any hand-written derivative in JAX: ``check_derivative(f, *args)``.

What is checked is what JAX uses when it differentiates ``f``: its ``jax.custom_vjp``
or ``jax.custom_jvp`` rule, the rules of everything inside it, or a VJP / JVP you
give (``vjp=``, ``jvp=``). At the inputs given, each entry ``<u, df/dx_i>`` of that
derivative, for cotangents ``u`` (every output entry in turn when the Jacobian is
small, else a few random ones), is compared with

* **autodiff of the rule-free function** (``f.fun`` of a custom rule, ``f`` itself
  beside a ``vjp=``/``jvp=``, or ``reference=``), in float64, reverse mode where it
  exists, else forward mode;
* **finite differences** of ``f`` in float64: centred (4-point, Richardson error from the
  stencil at 2h) and one-sided (left, right), on every input entry or a seeded sample,
  and along random directions. An entry whose left and right derivatives differ sits
  on a kink: there the rule must match one side (autodiff of the rule-free function,
  whose convention may differ, is not held against it);
* **forward against reverse mode** (``<u, J v>`` vs ``<J^T u, v>``) where both exist.

Pass rule (the same as :func:`mlp_jax.check_grads`, one per dtype): per entry
``|rule - ref| <= rtol (|rule| + |ref|) + noise + floor S``, S the block's largest
reference entry. In float64 rtol is CS231n's (1e-10 vs autodiff, 1e-7 vs finite
differences); at a lower precision it is ``RTOL_EPS`` times that dtype's epsilon. The
noise term is *measured*: the rule-free function's autodiff at the checked dtype
against float64 (at float64: float32's, scaled by the ratio of epsilons), and the
finite differences' own rounding (the primal's measured rounding over h) and
truncation (the Richardson estimate).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .gradcheck import FD_CHUNK_BYTES, TOL_AUTODIFF, TOL_FD, WEIGHTS_2H, WEIGHTS_H, Comparison
from .gradcheck import STENCIL as CENTRED

RTOL_EPS = 4.0  # below float64: the relative term, in units of the checked dtype's eps
NOISE = 4.0  # times the measured rounding of a correct derivative at the checked dtype
FLOOR_EPS = 1.0  # below float64: the floor, in units of eps * S
FLOOR_F64 = 1e-14  # float64: the floor in units of S (as check_grads)
FD_NOISE = 10.0  # the primal's rounding over h, times each estimate's weights
FD_TRUNC = 4.0  # times each estimate's Richardson error
FULL_LIMIT = 2**16  # Jacobian entries; above it, random projections
FD_ALL = 4096  # input entries; above it, a sample of FD_SAMPLE per leaf
FD_SAMPLE = 64
FD_CHUNK = 64  # probes per compiled chunk of the stencil (fewer where memory says so)
# check_grads' centred stencil (at h and at 2h) and the centre: the one-sided estimates
# need f(x) itself. Weights on STENCIL, divided by h, and each order's Richardson divisor:
# centred 4-point O(h^4) -> 15; one-sided 3-point O(h^2) -> 3.
STENCIL = np.array(sorted((*CENTRED, 0.0)))


def _on_stencil(weights, scale):
    at = dict(zip(CENTRED, weights))
    return tuple(at.get(t, 0.0) * scale for t in STENCIL)


ESTIMATES = {
    "centred": (_on_stencil(WEIGHTS_H, 1 / 12), _on_stencil(WEIGHTS_2H, 1 / 24), 15.0),
    "right": ((0, 0, 0, -3 / 2, 2, -1 / 2, 0), (0, 0, 0, -3 / 4, 0, 1, -1 / 4), 3.0),
    "left": ((0, 1 / 2, -2, 3 / 2, 0, 0, 0), (1 / 4, -1, 0, 3 / 4, 0, 0, 0), 3.0),
}


class DerivativeInputError(ValueError):
    """``check_derivative`` cannot check what it was given: the message says why."""


def _first_line(e: Exception) -> str:
    """An exception in one line: its first line, and its last where they differ."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()
             and not set(line.strip()) <= set("-")]
    text = " ".join(dict.fromkeys(lines[:1] + lines[-1:]))
    return f"{type(e).__name__}: {text}"


def _eps(dtype) -> float:
    return float(jnp.finfo(dtype).eps)


def _cast(tree, dtype):
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)


@dataclass(frozen=True)
class Block:
    """One output leaf (or the random projections) against one input leaf."""

    output: str
    input: str
    shape: tuple[int, ...]  # (*output leaf shape, *input leaf shape); projections: (K, *input)
    autodiff: Comparison
    fd: Comparison
    kinks: int  # finite-difference entries on a kink (judged one-sided)
    fd_entries: int

    @property
    def passed(self) -> bool:
        return self.autodiff.passed and self.fd.passed


@dataclass(frozen=True)
class DerivativeReport:
    """Result of :func:`check_derivative`; ``str(report)`` is a readable table."""

    name: str
    dtype: str
    rule: str  # what was checked
    reference: str  # the rule-free function, or "none"
    mode: str  # "full Jacobian" or "N random projections"
    blocks: tuple[Block, ...]
    directions: Comparison  # along random directions: finite differences
    consistency: Comparison  # forward vs reverse mode
    noise_from: str
    error: float  # the largest |rule - reference| over its block's largest reference entry

    @property
    def passed(self) -> bool:
        return all(b.passed for b in self.blocks) and self.directions.passed \
            and self.consistency.passed

    @property
    def used(self) -> float:
        """The largest share of its allowance any entry used: PASS when <= 1."""
        return max([self.directions.used, self.consistency.used]
                   + [max(b.autodiff.used, b.fd.used) for b in self.blocks])

    @property
    def kinks(self) -> int:
        return sum(b.kinks for b in self.blocks)

    # pragma: no mutate start
    def __str__(self) -> str:
        lines = [f"derivative check: {self.name} at {self.dtype}; rule: {self.rule}; "
                 f"reference: {self.reference}; {self.mode}",
                 f"{'output':<10}{'input':<10}{'vs autodiff':^19}{'vs finite diff':^19}"
                 f"{'kink':>5}  worst entry (rule vs reference)",
                 f"{'':<20}{'rel err':>8} {'used':>6} {'by':<4}{'rel err':>8} {'used':>6} by"]
        for b in self.blocks:
            ad, fd = b.autodiff, b.fd
            worst, tag = (fd, "fd") if fd.used > ad.used else (ad, "ad")
            lines.append(
                f"{b.output:<10}{b.input:<10}{ad.rel_error:>8.1e} {ad.used:>6.2g} "
                f"{ad.decided:<4}{fd.rel_error:>8.1e} {fd.used:>6.2g} {fd.decided:<4}"
                f"{b.kinks:>5}  {tag} {list(worst.worst_index)} {worst.hand:.6g} vs "
                f"{worst.reference:.6g}{'' if b.passed else '  FAIL'}")
        for what, c in (("random directions vs finite differences", self.directions),
                        ("forward vs reverse mode", self.consistency)):
            if c.checked:
                lines.append(f"{what}: rel err {c.rel_error:.1e}, used {c.used:.2g}"
                             f"{'' if c.passed else '  FAIL'}")
        lines.append(f"rule per entry: |rule - ref| <= rtol (|rule| + |ref|) + noise + floor "
                     f"S; noise measured from {self.noise_from}; 'used' = the worst entry's "
                     "share of its allowance (PASS <= 1)")
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)
    # pragma: no mutate end


def _rule_free(f, vjp, jvp, reference):
    """The function autodiff can check the rule against, and how to name both."""
    if reference is not None:
        return reference, "reference="
    if vjp is not None or jvp is not None:
        return f, "autodiff of f"
    if isinstance(f, (jax.custom_vjp, jax.custom_jvp)):
        return f.fun, f"autodiff of {type(f).__name__}.fun"
    return None, "none"


def _names(f, args, static) -> list[str]:
    try:
        params = list(inspect.signature(f).parameters)
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) and params[i] not in ("args", "kwargs")
            else f"args[{i}]" for i in range(len(args)) if i not in static]


def _leaf_names(tree, top: str) -> list[str]:
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [top + jax.tree_util.keystr(p) for p, _ in paths]


class _Problem:
    """``f`` at the given inputs, seen as flat vectors: x (n,) -> y (m,)."""

    def __init__(self, f, args, static_argnums):
        self.static = set(static_argnums)
        self.args = args
        diff = tuple(a for i, a in enumerate(args) if i not in self.static)
        if not diff:
            raise DerivativeInputError("every argument is static: nothing to differentiate")
        self.names = _names(f, args, self.static)
        leaves = []
        for name, a in zip(self.names, diff):
            for leaf_name, leaf in zip(_leaf_names(a, name), jax.tree.leaves(a)):
                if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                    raise DerivativeInputError(
                        f"input {leaf_name} has dtype {jnp.result_type(leaf)}: only floating "
                        "inputs have a derivative; pass static_argnums with its position to "
                        "hold it fixed")
                leaves.append((leaf_name, np.shape(leaf)))
        self.in_leaves = leaves
        self.diff = diff
        self.x, self.unravel = ravel_pytree(diff)
        try:
            out = jax.eval_shape(self.full(f), *diff)
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                jax.errors.TracerIntegerConversionError) as e:
            raise DerivativeInputError(
                f"f cannot be traced by JAX ({type(e).__name__}): it must compute with "
                "jax.numpy on its inputs, with no Python branching on their values "
                "(use jnp.where or lax.cond)") from None
        except Exception as e:  # noqa: BLE001 (the user's function failed: say where)
            raise DerivativeInputError(f"f failed on inputs of shapes {self.shapes()}: "
                                       f"{_first_line(e)}") from None
        for name, leaf in zip(_leaf_names(out, "out"), jax.tree.leaves(out)):
            if not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise DerivativeInputError(f"output {name} has dtype {leaf.dtype}: only "
                                           "floating outputs have a derivative")
        self.out_tree = out
        self.out_leaves = [(n, leaf.shape) for n, leaf in
                           zip(_leaf_names(out, "out"), jax.tree.leaves(out))]
        self.out_dtype = jnp.result_type(*jax.tree.leaves(out))
        self.m = sum(int(np.prod(s)) for _, s in self.out_leaves)
        _, self.unravel_out = ravel_pytree(jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype), out))
        # the precision checked: the least precise of the inputs and outputs
        self.dtype = min((jnp.result_type(*jax.tree.leaves(diff)), self.out_dtype),
                         key=lambda d: -_eps(d))

    def shapes(self) -> str:
        return ", ".join(f"{n} {s}" for n, s in self.in_leaves)

    def call_args(self, diff) -> list:
        """Every argument, the differentiable ones taken from ``diff``."""
        it = iter(diff)
        return [a if i in self.static else next(it) for i, a in enumerate(self.args)]

    def full(self, f):
        """``f`` of the differentiable arguments only."""
        return lambda *diff: f(*self.call_args(diff))

    def flat(self, f, dtype):
        """``f`` as a map of flat vectors at ``dtype``: x (n,) -> y (m,)."""
        def g(x):
            diff = _cast(self.unravel(x), dtype)
            return ravel_pytree(_cast(f(*self.call_args(diff)), dtype))[0]
        return g


def _check_structure(got, prob: _Problem) -> tuple:
    """A user's VJP returned one cotangent per differentiable input, shaped like it."""
    got = tuple(got) if isinstance(got, (tuple, list)) and (
        len(prob.diff) > 1 or not isinstance(prob.diff[0], (tuple, list))) else (got,)
    if len(got) != len(prob.diff):
        raise DerivativeInputError(f"vjp returned {len(got)} cotangents for "
                                   f"{len(prob.diff)} differentiable inputs "
                                   f"({', '.join(prob.names)})")
    for name, want, have in zip(prob.names, prob.diff, got):
        if jax.tree.structure(want) != jax.tree.structure(have):
            raise DerivativeInputError(f"vjp's cotangent for {name} has structure "
                                       f"{jax.tree.structure(have)}; {name} has "
                                       f"{jax.tree.structure(want)}")
        for leaf_name, w, h in zip(_leaf_names(want, name), jax.tree.leaves(want),
                                   jax.tree.leaves(have)):
            if np.shape(w) != np.shape(h):
                raise DerivativeInputError(f"vjp's cotangent for {leaf_name} has shape "
                                           f"{np.shape(h)}; {leaf_name} has shape "
                                           f"{np.shape(w)}")
    return got


def _rule(prob: _Problem, f, vjp, jvp, dtype):
    """What JAX uses to differentiate ``f`` at ``dtype``, on flat vectors:
    ``(reverse, forward)``, u (m,) -> (n,) and t (n,) -> (m,); forward is None where
    the rule has no forward mode (a custom_vjp)."""
    x = jnp.asarray(prob.x, dtype)
    primals = _cast(prob.unravel(x), dtype)
    if vjp is not None:
        def reverse(u):
            got = vjp(*prob.call_args(primals), _cast(prob.unravel_out(u), dtype))
            return ravel_pytree(_cast(_check_structure(got, prob), dtype))[0]
        return reverse, None
    if jvp is not None:
        def forward(t):
            _, out = jvp(tuple(prob.call_args(primals)),
                         tuple(_cast(prob.unravel(t), dtype)))
            return ravel_pytree(_cast(out, dtype))[0]
        def reverse(u):  # JAX transposes a custom_jvp rule the same way
            try:
                return jax.linear_transpose(forward, x)(u)[0]
            except (NotImplementedError, TypeError, ValueError) as e:
                raise DerivativeInputError(
                    "jvp's tangent output is not linear in the input tangents, so it is no "
                    f"derivative ({_first_line(e)})") from None
        return reverse, forward
    g = prob.flat(f, dtype)
    _, pullback = jax.vjp(g, x)
    try:
        jax.jvp(g, (x,), (jnp.zeros_like(x),))
        forward = lambda t: jax.jvp(g, (x,), (t,))[1]  # noqa: E731
    except TypeError:  # a custom_vjp inside: reverse mode only
        forward = None
    return (lambda u: pullback(u)[0]), forward


def _autodiff(prob: _Problem, P, U, dtype, full: bool):
    """``U @ J`` by autodiff of the rule-free ``P`` at ``dtype``: reverse mode, or forward
    mode where reverse is not defined (a ``lax.while_loop``); None when only forward
    mode works and the Jacobian is too large to build."""
    g = prob.flat(P, dtype)
    x = jnp.asarray(prob.x, dtype)
    U = jnp.asarray(U, dtype)
    try:
        _, pullback = jax.vjp(g, x)
        return np.asarray(jax.vmap(lambda u: pullback(u)[0])(U), np.float64), "reverse"
    except (TypeError, ValueError, NotImplementedError):
        if not full:
            return None, "forward"
        J = jax.vmap(lambda t: jax.jvp(g, (x,), (t,))[1])(jnp.eye(x.size, dtype=dtype))
        return np.asarray(U, np.float64) @ np.asarray(J, np.float64).T, "forward"


def _stencil_values(g64, x, U, probes, steps):
    """phi_k(t) = <u_k, f(x + t probe)> at the stencil: (len(probes), 7, K).
    ``probes`` are flat indices (ints) or direction vectors. Chunks of probes go one at a
    time through the same eagerly run ops (memory linear in n; JAX caches each op by
    shape, so a second check of the same shapes compiles nothing)."""
    U = jnp.asarray(U, jnp.float64)
    offsets = jnp.asarray(STENCIL, jnp.float64)

    def one(probe, step):
        if probe.ndim == 0:
            points = jnp.broadcast_to(x, (7, x.size)).at[:, probe].add(offsets * step)
        else:
            points = x + (offsets * step)[:, None] * probe
        return jax.vmap(g64)(points) @ U.T  # (7, K)

    n = len(probes)
    per = max(1, min(n, FD_CHUNK, int(FD_CHUNK_BYTES // (7 * x.size * 8))))
    pad = -n % per  # one chunk shape for every chunk
    probes = jnp.concatenate([probes, jnp.repeat(probes[:1], pad, axis=0)])
    steps = jnp.concatenate([steps, jnp.repeat(steps[:1], pad)])
    out = [np.asarray(jax.vmap(one)(probes[i:i + per], steps[i:i + per]), np.float64)
           for i in range(0, n + pad, per)]
    return np.concatenate(out)[:n]


def _estimates(phi, steps, dphi):
    """Each finite-difference estimate of ``d phi / dt`` and its error bars, from the
    stencil values ``phi`` (P, 7, K): ``{name: (value, rounding, truncation)}`` (P, K)."""
    out = {}
    for name, (w_h, w_2h, divisor) in ESTIMATES.items():
        w_h, w_2h = np.asarray(w_h), np.asarray(w_2h)
        d_h = np.einsum("s,psk->pk", w_h, phi) / steps[:, None]
        d_2h = np.einsum("s,psk->pk", w_2h, phi) / steps[:, None]
        rounding = FD_NOISE * np.abs(w_h).sum() * dphi / steps[:, None]
        out[name] = (d_h, rounding, FD_TRUNC * np.abs(d_2h - d_h) / divisor)
    return out


def _fd_candidates(est, rtol, terms, ad=None):
    """The rule's finite-difference references, entry by entry: centred where the left
    and right derivatives agree, else (a kink) left or right, or autodiff's convention
    (``ad``, where there is one). ``terms``: the rule's own absolute allowance.
    Returns ``(candidates for Comparison.best, kink mask)``."""
    def cand(name):
        d, rnd, tr = est[name]
        return d, dict(terms, fd=rnd, trunc=tr)

    (dl, al), (dr, ar) = cand("left"), cand("right")
    kink = np.abs(dl - dr) > (sum(al.values()) + sum(ar.values())
                              + rtol * (np.abs(dl) + np.abs(dr)))
    dc, ac = cand("centred")
    d0 = np.where(kink, dl if ad is None else ad, dc)
    terms0 = {k: np.where(kink, al[k] if ad is None else (0.0 if k in ("fd", "trunc")
                                                          else al[k]), v)
              for k, v in ac.items()}
    return [(d0, rtol, terms0), (dl, rtol, al), (dr, rtol, ar)], kink


def _blocks(prob: _Problem, full: bool, K: int):
    """Row groups (output leaves, or the projections) and column groups (input leaves):
    ``[(name, slice)]`` each."""
    def groups(leaves):
        out, at = [], 0
        for name, shape in leaves:
            size = int(np.prod(shape))
            out.append((name, slice(at, at + size), tuple(shape)))
            at += size
        return out
    rows = groups(prob.out_leaves) if full else [(f"{K} u", slice(0, K), (K,))]
    return rows, groups(prob.in_leaves)


def check_derivative(f, *args, vjp=None, jvp=None, reference=None, static_argnums=(),
                     dtype=None, h: float = 1e-3, projections: int = 3, directions: int = 2,
                     fd_entries: int | str | None = "auto", seed: int = 0,
                     name: str | None = None) -> DerivativeReport:
    """Check the derivative JAX uses for ``f`` at ``args`` (see the module docstring).

    Args:
      f: a JAX-traceable function of pytrees of float arrays, returning a pytree of float
        arrays; a ``jax.custom_vjp`` / ``jax.custom_jvp`` object, or any function (the
        rules of what it calls are then what is checked).
      *args: where to check; their dtype is the precision checked (or ``dtype``).
      vjp: a hand VJP to check instead: ``vjp(*args, g)`` returns one cotangent per
        differentiable argument (a tuple, or the bare cotangent for one argument).
      jvp: a hand JVP to check instead, as ``custom_jvp.defjvp`` takes it:
        ``jvp(primals, tangents) -> (out, tangent_out)`` (tangents of the
        differentiable arguments only).
      reference: a rule-free function of the same arguments to compare autodiff with
        (default: ``f.fun`` of a custom rule; ``f`` beside ``vjp=`` or ``jvp=``).
      static_argnums: arguments held fixed (integers, labels, options).
      dtype: cast the differentiable float inputs to this dtype first.
      h: finite-difference step, relative to ``max(1, |x_i|)``.
      projections: random cotangents when the Jacobian has more than ``FULL_LIMIT``
        entries (else every output entry is a cotangent of its own).
      directions: random input directions finite-differenced as a whole.
      fd_entries: input entries finite-differenced: ``"auto"`` (all up to ``FD_ALL``,
        else ``FD_SAMPLE`` per input leaf), None (all) or a count per leaf.
      seed: the random cotangents, directions and sample.
      name: how the report names ``f``.

    Returns:
      A :class:`DerivativeReport`: ``.passed``, ``print(report)``.

    Raises:
      DerivativeInputError: one line on what cannot be checked and why.
    """
    if not callable(f):
        raise DerivativeInputError(f"f must be a function; got {type(f).__name__}")
    static = tuple(static_argnums) if isinstance(static_argnums, (tuple, list)) \
        else (static_argnums,)
    name = name or getattr(f, "__name__", None) or getattr(getattr(f, "fun", None),
                                                          "__name__", type(f).__name__)
    with jax.enable_x64(True):
        if dtype is not None:
            args = tuple(a if i in static else jax.tree.map(
                lambda v: jnp.asarray(v, dtype) if jnp.issubdtype(jnp.result_type(v),
                                                                  jnp.floating) else v, a)
                for i, a in enumerate(args))
        prob = _Problem(f, args, static)
        return _check(prob, f, vjp, jvp, reference, h, projections, directions, fd_entries,
                      seed, name)


def _check(prob, f, vjp, jvp, reference, h, projections, directions, fd_entries, seed, name):
    d, f64 = prob.dtype, jnp.float64
    eps, low = _eps(d), _eps(d) > _eps(f64)
    rng = np.random.default_rng(seed)
    n, m = prob.x.size, prob.m
    full = n * m <= FULL_LIMIT
    K = m if full else projections
    # cotangents and directions exactly representable at the checked dtype
    U = np.eye(m) if full else np.asarray(jnp.asarray(rng.normal(size=(K, m)), d), np.float64)
    V = rng.normal(size=(directions, n))
    V = np.asarray(jnp.asarray(V / np.abs(V).max(axis=1, keepdims=True), d), np.float64)
    P, ref_name = _rule_free(f, vjp, jvp, reference)
    try:
        reverse, forward = _rule(prob, f, vjp, jvp, d)
        reverse(jnp.asarray(U[0], d))  # errors named by leaf, outside any vmap
        G = np.asarray(jax.vmap(reverse)(jnp.asarray(U, d)), np.float64)  # (K, n)
    except DerivativeInputError:
        raise
    except Exception as e:  # noqa: BLE001 (the rule itself failed: say so, in one line)
        raise DerivativeInputError(f"the derivative rule failed on inputs of shapes "
                                   f"{prob.shapes()}: {_first_line(e)}") from None

    # The rounding a correct derivative carries at d: the rule-free autodiff at d against
    # float64 (at float64: float32's, scaled by the ratio of epsilons).
    lo = d if low else jnp.float32
    scale = 1.0 if low else _eps(f64) / _eps(jnp.float32)
    ad = None
    if P is not None:
        ad, mode = _autodiff(prob, P, U, f64, full)
        ad_lo, _ = _autodiff(prob, P, U, lo, full)
        noise_src = f"autodiff of the rule-free function at {jnp.dtype(lo).name}"
        if ad is not None:
            ref_name += f" ({mode} mode)"
    if ad is None or ad_lo is None:
        ref64 = np.asarray(jax.vmap(_rule(prob, f, vjp, jvp, f64)[0])(jnp.asarray(U, f64)))
        ref_lo = np.asarray(jax.vmap(_rule(prob, f, vjp, jvp, lo)[0])(jnp.asarray(U, lo)),
                            np.float64)
        noise_src = f"the rule itself at {jnp.dtype(lo).name}"
    else:
        ref64, ref_lo = ad, ad_lo
    noise = np.abs(ref_lo - ref64) * scale  # (K, n)

    # finite differences of f in float64; the rounding of <u, f>: measured (float32's,
    # scaled), at least eps times the output leaf's typical size (a cancellation inside f
    # that float32 rounds to 0 shows in neither measurement)
    g64 = prob.flat(f, f64)
    x64 = jnp.asarray(prob.x, f64)
    y64 = np.asarray(g64(x64))
    y_lo = np.asarray(prob.flat(f, jnp.float32)(jnp.asarray(prob.x, jnp.float32)),
                      np.float64)
    rows, cols = _blocks(prob, full, K)
    typical = np.concatenate([np.full(c.stop - c.start, np.sqrt(np.mean(y64[c] ** 2)))
                              for _, c, _ in _blocks(prob, True, K)[0]])
    dy = np.maximum(np.abs(y_lo - y64) * _eps(f64) / _eps(jnp.float32),
                    _eps(f64) * (np.abs(y64) + typical))
    dphi = np.abs(U) @ dy  # (K,)
    xs = np.abs(np.asarray(prob.x, np.float64))
    if fd_entries == "auto":
        fd_entries = None if n <= FD_ALL else FD_SAMPLE
    picks = np.concatenate([
        np.arange(c.start, c.stop) if fd_entries is None or fd_entries >= c.stop - c.start
        else np.sort(rng.choice(np.arange(c.start, c.stop), int(fd_entries), replace=False))
        for _, c, _ in cols])
    steps = h * np.maximum(1.0, xs[picks])
    phi = _stencil_values(g64, x64, U, jnp.asarray(picks), jnp.asarray(steps))
    est = {k: tuple(np.swapaxes(a, 0, 1) for a in v)  # (K, picks)
           for k, v in _estimates(phi, steps, dphi).items()}

    # the rule's own allowance, entry by entry: the noise and floor of its block
    rtol_ad, rtol_fd = (RTOL_EPS * eps,) * 2 if low else (TOL_AUTODIFF, TOL_FD)
    noise_of, scale_of = np.zeros((K, n)), np.zeros((K, n))  # per entry, of its block
    for _, rs, _ in rows:
        for _, cs, _ in cols:
            scale_of[rs, cs] = float(np.max(np.abs(ref64[rs, cs]), initial=0.0))  # S
            noise_of[rs, cs] = NOISE * float(np.max(noise[rs, cs], initial=0.0))
    floor_of = (FLOOR_EPS * eps if low else FLOOR_F64) * scale_of
    blocks, kink_all = [], np.zeros((K, n), bool)
    for rname, rs, rshape in rows:
        for cname, cs, cshape in cols:
            in_block = (picks >= cs.start) & (picks < cs.stop)
            at = picks[in_block]
            sub = {k: tuple(a[rs][:, in_block] for a in v) for k, v in est.items()}
            terms = {"noise": noise_of[rs][:, at], "floor": floor_of[rs][:, at]}
            cands, kink = _fd_candidates(sub, rtol_fd, terms,
                                         None if ad is None else ad[rs][:, at])
            kink_all[rs, at] = kink
            hand = G[rs, cs]
            vs_ad = Comparison.of(hand, ad[rs, cs], rtol_ad, {"noise": noise_of[rs, cs],
                                                              "floor": floor_of[rs, cs]},
                                  ~kink_all[rs, cs]) if ad is not None else \
                Comparison.of(hand, hand, 0.0, {}, np.zeros(hand.shape, bool))
            vs_fd = Comparison.best(G[rs][:, at], cands)

            def where(c, columns, rshape=rshape, cshape=cshape, cs=cs):  # (output, input)
                if not c.worst_index:
                    return c
                r, j = c.worst_index
                at = (*np.unravel_index(r, rshape),
                      *np.unravel_index(columns[j] - cs.start, cshape))
                return dataclasses.replace(c, worst_index=tuple(int(i) for i in at))
            blocks.append(Block(rname, cname, (*rshape, *cshape),
                                where(vs_ad, np.arange(cs.start, cs.stop)), where(vs_fd, at),
                                int(kink.sum()), int(in_block.sum())))

    # Along random directions: <G, v> vs finite differences of <u, f(x + t v)>, allowed
    # what the entries it sums were allowed (their relative terms too: a sum may cancel).
    absV = np.abs(V).T  # (n, directions)
    spread = {"noise": noise_of @ absV, "floor": floor_of @ absV,
              "spread": rtol_ad * ((np.abs(G) + np.abs(ref64)) @ absV)}
    vsteps = np.full(len(V), h * max(1.0, float(np.sqrt(np.mean(xs ** 2)))))
    vphi = _stencil_values(g64, x64, U, jnp.asarray(V), jnp.asarray(vsteps))
    vest = {k: tuple(np.swapaxes(a, 0, 1) for a in v)
            for k, v in _estimates(vphi, vsteps, dphi).items()}
    GV = G @ V.T  # (K, directions)
    along = Comparison.best(GV, _fd_candidates(vest, rtol_fd, spread)[0])

    # forward mode against reverse mode: <u, J v> vs <J^T u, v>, each side allowed that
    JV = None
    if forward is None and P is not None:  # the rule-free function's forward mode, if any
        fwd_of = prob.flat(P, d)
        xd = jnp.asarray(prob.x, d)
        forward = lambda t: jax.jvp(fwd_of, (xd,), (t,))[1]  # noqa: E731
        try:
            JV = np.asarray(jax.vmap(forward)(jnp.asarray(V, d)), np.float64)  # (dirs, m)
        except TypeError:  # a custom_vjp inside it: no forward mode anywhere
            forward = None
    if forward is not None:
        if JV is None:
            JV = np.asarray(jax.vmap(forward)(jnp.asarray(V, d)), np.float64)
        consistency = Comparison.of(GV, U @ JV.T, rtol_ad,
                                    {k: 2 * v for k, v in spread.items()})
    else:
        consistency = Comparison.of(GV, GV, 0.0, {}, np.zeros(GV.shape, bool))
    rule_name = ("vjp=" if vjp is not None else "jvp=" if jvp is not None else
                 type(f).__name__ if isinstance(f, (jax.custom_vjp, jax.custom_jvp))
                 else "jax.vjp of f")
    mode = "full Jacobian" if full else f"{K} random projections"
    # how wrong, at most, relative to each block's scale (autodiff's, else centred FD)
    ref = ad if ad is not None else np.full(G.shape, np.nan)
    if ad is None:
        ref[:, picks] = est["centred"][0]
    with np.errstate(divide="ignore", invalid="ignore"):
        error = float(np.nanmax(np.abs(G - ref) / scale_of, initial=0.0))
    return DerivativeReport(name, jnp.dtype(d).name, rule_name, ref_name, mode,
                            tuple(blocks), along, consistency, noise_src, error)


def assert_derivative(f, *args, **options) -> DerivativeReport:
    """:func:`check_derivative`, raising ``AssertionError`` with the report if it fails."""
    report = check_derivative(f, *args, **options)
    if not report.passed:
        raise AssertionError("\n" + str(report))
    return report
