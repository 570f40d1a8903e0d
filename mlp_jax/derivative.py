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
* **forward against reverse mode** (``<u, J v>`` vs ``<J^T u, v>``) where both exist;
* **the same rule under ``jax.vmap`` and ``jax.jit``** (:mod:`mlp_jax.transformed`).

Complex leaves are checked as their real and imaginary parts, in JAX's cotangent
convention (:class:`mlp_jax.jacobian.RealView`). ``order=N`` checks the rule's own
derivatives (:mod:`mlp_jax.higher`); ``rtol=`` / ``atol=`` state the accuracy of a rule
approximate by design (see :func:`check_derivative`); ``repeats=`` measures a
nondeterministic rule's spread and allows for it. The verdict is PASS, FAIL or
UNDECIDED (:mod:`mlp_jax.derivative_report`).

Pass rule (the form of :func:`mlp_jax.check_grads`', :mod:`mlp_jax.passrule`): per entry
``|rule - ref| <= rtol (|rule| + |ref|) + noise + floor S``, S the block's largest
reference entry: rtol is ``RTOL_EPS`` times the checked dtype's epsilon (in float64,
9e-16: far inside CS231n's 1e-10 and 1e-7; ``RTOL_EPS_BY_DTYPE`` where calibration left
room for less), the floor ``FLOOR_EPS`` eps S. The noise term is *measured*: the
rule-free function's autodiff at the checked dtype against float64 (at float64:
float32's, scaled by the ratio of epsilons), and the finite differences' own rounding
(the primal's measured rounding over h) and truncation (the Richardson estimate).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from . import finitediff, higher, transformed
from .derivative_report import Block, DerivativeReport
from .jacobian import (
    DerivativeInputError,
    Problem,
    at_dtype,
    eps_of,
    forward_products,
    perturbed,
    references,
    rule_free,
    rule_products,
)
from .passrule import Comparison

RTOL_EPS = 4.0  # the relative term, in units of the checked dtype's eps (float64, others)
# Smaller where the calibration of `python -m experiments.derivatives` (2,074 correct
# draws, all at 4 eps) left headroom: worst share used float64 0.82, float32 0.57,
# float16 0.38, bfloat16 0.22. A smaller rtol catches a smaller error.
RTOL_EPS_BY_DTYPE = {"float32": 3.0, "float16": 2.0, "bfloat16": 2.0}
NOISE = 4.0  # times the measured rounding of a correct derivative at the checked dtype
FLOOR_EPS = 1.0  # the floor, in units of eps * S
FD_NOISE = 10.0  # the primal's rounding over h, times each estimate's weights
FULL_LIMIT = 2**16  # Jacobian entries; above it, random projections
FD_ALL = 4096  # input entries; above it, a sample of FD_SAMPLE per leaf
FD_SAMPLE = 64
FD_CHUNK = 64  # probes per compiled chunk of the stencil (fewer where memory says so)
WIDE = 10.0  # with a stated tolerance, finite differences also at this times h
BARS = ("fd", "trunc", "nonsmooth")  # the terms that are finite differences' own error
ROUGH = 2.0  # where f is not smooth: times the spread of the estimates at h .. 20 h
SPREAD = 2.0  # times the run-to-run spread of the rule measured over `repeats` runs
MAX_ORDER = 4


def _blocks(prob: Problem, full: bool, K: int):
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


def _positive(name, value, zero_ok=False):
    if value is None:
        return 0.0
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(
        value) and (value >= 0 if zero_ok else value > 0)
    if not ok:
        raise DerivativeInputError(f"{name} must be a {'non-negative' if zero_ok else 'positive'}"
                                   f" finite number (the rule's stated accuracy); got "
                                   f"{value!r}")
    return float(value)


def _count(name, value, least, most):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not (
            least <= value <= most):
        raise DerivativeInputError(f"{name} must be an integer from {least} to {most}; "
                                   f"got {value!r}")
    return int(value)


def check_derivative(f, *args, vjp=None, jvp=None, reference=None, static_argnums=(),
                     dtype=None, h: float = 1e-3, rtol: float | None = None,
                     atol: float | None = None, order: int = 1, batched: bool = True,
                     repeats: int = 1, projections: int = 3, directions: int = 2,
                     fd_entries: int | str | None = "auto", seed: int = 0,
                     name: str | None = None) -> DerivativeReport:
    """Check the derivative JAX uses for ``f`` at ``args`` (see the module docstring).

    Args:
      f: a JAX-traceable function of pytrees of float or complex arrays, returning a
        pytree of float or complex arrays; a ``jax.custom_vjp`` / ``jax.custom_jvp``
        object, or any function (the rules of what it calls are then what is checked).
      *args: where to check; their dtype is the precision checked (or ``dtype``).
      vjp: a hand VJP to check instead: ``vjp(*args, g)`` returns one cotangent per
        differentiable argument (a tuple, or the bare cotangent for one argument);
        complex cotangents in JAX's convention (what ``jax.vjp`` takes and returns).
      jvp: a hand JVP to check instead, as ``custom_jvp.defjvp`` takes it:
        ``jvp(primals, tangents) -> (out, tangent_out)`` (tangents of the
        differentiable arguments only).
      reference: a rule-free function of the same arguments: autodiff and finite
        differences are taken of it (default: ``f.fun`` of a custom rule; ``f``
        beside ``vjp=`` or ``jvp=``; finite differences of ``f``). For a rule that
        approximates an ideal (a solver's adjoint), a more accurate forward.
      static_argnums: arguments held fixed (integers, labels, options).
      dtype: cast the differentiable float inputs to this dtype first.
      h: finite-difference step, relative to ``max(1, |x_i|)``.
      rtol, atol: the rule's stated accuracy, for rules approximate by design: each
        entry may then differ from a reference by ``rtol (|rule| + |ref| + S) + atol``
        (S the block's largest entry: a tolerance is normwise) beyond the references'
        own measured error. Finite differences are then also taken at ``10 h``; where
        the two disagree beyond their error bars ``f`` is not smooth there and both
        carry the disagreement; an entry that only such finite differences judge, with
        more error than the rule's allowance, is UNDECIDED.
      order: check every derivative up to this one: 2 is the derivative of the rule's
        derivative (JAX's autodiff of the rule) against finite differences of the rule
        and autodiff of the rule-free function's derivative.
      batched: also check the rule under ``jax.vmap`` (over 3 nearby inputs) and
        ``jax.jit`` against the eager, unbatched rule (False: skip, for speed).
      repeats: run the rule this many times; their spread (a nondeterministic rule's)
        is allowed for, and reported.
      projections: random cotangents when the Jacobian has more than ``FULL_LIMIT``
        entries (else every output entry is a cotangent of its own).
      directions: random input directions finite-differenced as a whole.
      fd_entries: input entries finite-differenced: ``"auto"`` (all up to ``FD_ALL``,
        else ``FD_SAMPLE`` per input leaf), None (all) or a count per leaf.
      seed: the random cotangents, directions and sample.
      name: how the report names ``f``.

    Returns:
      A :class:`DerivativeReport`: ``.passed``, ``.verdict``, ``print(report)``.

    Raises:
      DerivativeInputError: one line on what cannot be checked and why.

    Example::

        @jax.custom_vjp
        def softplus(x):
            return jnp.logaddexp(x, 0.0)
        softplus.defvjp(lambda x: (softplus(x), x), lambda x, g: (g * jax.nn.sigmoid(x),))
        mj.check_derivative(softplus, jnp.linspace(-3.0, 3.0, 7), order=2).passed  # True
    """
    if not callable(f):
        raise DerivativeInputError(f"f must be a function; got {type(f).__name__}")
    opts = Options(h=h, rtol=_positive("rtol", rtol), atol=_positive("atol", atol, True),
                   batched=bool(batched), repeats=_count("repeats", repeats, 1, 100),
                   projections=projections, directions=directions, fd_entries=fd_entries,
                   seed=seed)
    order = _count("order", order, 1, MAX_ORDER)
    static = tuple(static_argnums) if isinstance(static_argnums, (tuple, list)) \
        else (static_argnums,)
    name = name or getattr(f, "__name__", None) or getattr(getattr(f, "fun", None),
                                                          "__name__", type(f).__name__)
    with jax.enable_x64(True):
        if dtype is not None:
            args = tuple(a if i in static else jax.tree.map(
                lambda v: _to(v, dtype), a) for i, a in enumerate(args))
        prob = Problem(f, args, static)
        report = _check(prob, f, vjp, jvp, *rule_free(f, vjp, jvp, reference),
                        reference if reference is not None else f, opts, name)
        if order > 1:
            report = dataclasses.replace(report, higher=tuple(
                higher.reports(prob, f, vjp, jvp, reference, order, opts, name, _check)))
        return report


def _to(v, dtype):
    """A float leaf cast to ``dtype``, a complex one to its complex precision; others as
    they are."""
    return at_dtype(v, dtype) if jnp.issubdtype(jnp.result_type(v), jnp.inexact) else v


@dataclass(frozen=True)
class Options:
    """How to check, the same at every order."""

    h: float
    rtol: float  # stated, 0 where none
    atol: float
    batched: bool
    repeats: int
    projections: int
    directions: int
    fd_entries: object
    seed: int


def _check(prob, f, vjp, jvp, P, ref_name, fd_fun, opts: Options, name, order=1):
    """One order's check: the rule of ``f`` (or ``vjp=`` / ``jvp=``) against autodiff of
    ``P`` and finite differences of ``fd_fun``."""
    d, eps = prob.dtype, eps_of(prob.dtype)
    rng = np.random.default_rng(opts.seed)
    n, m = prob.x.size, prob.m
    full = n * m <= FULL_LIMIT
    K = m if full else opts.projections
    # cotangents and directions exactly representable at the checked dtype
    U = np.eye(m) if full else np.asarray(jnp.asarray(rng.normal(size=(K, m)), d), np.float64)
    V = rng.normal(size=(opts.directions, n))
    V = np.asarray(jnp.asarray(V / np.abs(V).max(axis=1, keepdims=True), d), np.float64)
    runs = [rule_products(prob, f, vjp, jvp, U) for _ in range(opts.repeats)]
    G, forward = runs[0]
    ad, ref64, noise, noise_src, mode = references(prob, f, vjp, jvp, P, U, full)
    if mode:
        ref_name += f" ({mode} mode)"
    fd = _Stencil(prob, fd_fun, U)
    xs = np.abs(np.asarray(prob.x, np.float64))
    rows, cols = _blocks(prob, full, K)
    picks = np.concatenate([c.start + p for (_, c, _), p in zip(cols, finitediff.pick_entries(
        [c.stop - c.start for _, c, _ in cols], opts.fd_entries, rng, FD_ALL, FD_SAMPLE))])
    steps = opts.h * np.maximum(1.0, xs[picks])
    est = fd.estimates(jnp.asarray(picks), steps)
    stated = bool(opts.rtol or opts.atol)
    wide = fd.estimates(jnp.asarray(picks), WIDE * steps) if stated else None

    # the rule's own allowance, entry by entry: the noise and floor of its block, the
    # stated tolerance, the run-to-run spread
    rtol = max(RTOL_EPS_BY_DTYPE.get(jnp.dtype(d).name, RTOL_EPS) * eps, opts.rtol)
    spread = np.max([np.abs(g - G) for g, _ in runs], axis=0)  # (K, n)
    noise_of, scale_of = np.zeros((K, n)), np.zeros((K, n))  # per entry, of its block
    spread_of = np.zeros((K, n))
    for _, rs, _ in rows:
        for _, cs, _ in cols:
            scale_of[rs, cs] = float(np.max(np.abs(ref64[rs, cs]), initial=0.0))  # S
            noise_of[rs, cs] = NOISE * float(np.max(noise[rs, cs], initial=0.0))
            spread_of[rs, cs] = SPREAD * float(np.max(spread[rs, cs], initial=0.0))
    own = {"noise": noise_of, "floor": FLOOR_EPS * eps * scale_of}
    if stated:
        own["stated"] = opts.rtol * scale_of + opts.atol
    if opts.repeats > 1:
        own["nondet"] = spread_of
    blocks = []
    for rname, rs, rshape in rows:
        for cname, cs, cshape in cols:
            in_block = (picks >= cs.start) & (picks < cs.stop)
            at = picks[in_block]
            terms = {k: v[rs][:, at] for k, v in own.items()}
            conv = None if ad is None else ad[rs][:, at]
            cands, kink, rough = _references(est, wide, rs, in_block, rtol, terms, conv)
            smooth = np.ones((rs.stop - rs.start, cs.stop - cs.start), bool)
            smooth[:, at - cs.start] = ~kink  # autodiff's convention may differ on a kink
            vs_ad = Comparison.none() if ad is None else Comparison.of(
                G[rs, cs], ad[rs, cs], rtol, {k: v[rs, cs] for k, v in own.items()}, smooth)

            def where(c, columns, rshape=rshape, cshape=cshape, cs=cs):  # (output, input)
                if not c.worst_index:
                    return c
                r, j = c.worst_index
                at = (*np.unravel_index(r, rshape),
                      *np.unravel_index(columns[j] - cs.start, cshape))
                return dataclasses.replace(c, worst_index=tuple(int(i) for i in at))
            vs_fd = Comparison.best(G[rs][:, at], cands, bars=BARS if stated else ())
            # how wrong, at most, relative to the block's scale (autodiff's, else the
            # finite-difference estimate the pass rule chose first)
            rule, ref, S = (G[rs, cs], ad[rs, cs], scale_of[rs, cs]) if ad is not None \
                else (G[rs][:, at], cands[0][0], scale_of[rs][:, at])
            with np.errstate(divide="ignore", invalid="ignore"):
                error = float(np.nanmax(np.abs(rule - ref) / S, initial=0.0))
            blocks.append(Block(output=rname, input=cname, shape=(*rshape, *cshape),
                                autodiff=where(vs_ad, np.arange(cs.start, cs.stop)),
                                fd=where(vs_fd, at), kinks=int(kink.sum()),
                                fd_entries=int(in_block.sum()), error=error,
                                nonsmooth=int(rough.sum())))

    # Along random directions: <G, v> vs finite differences of <u, f(x + t v)>, allowed
    # what the entries it sums were allowed (their relative terms too: a sum may cancel).
    absV = np.abs(V).T  # (n, directions)
    spread_terms = {k: v @ absV for k, v in own.items()}
    spread_terms["spread"] = rtol * ((np.abs(G) + np.abs(ref64)) @ absV)
    GV = G @ V.T  # (K, directions)
    vest = fd.estimates(jnp.asarray(V), np.full(len(V), opts.h * max(1.0, float(
        np.sqrt(np.mean(xs ** 2))))))
    along = Comparison.best(GV, finitediff.candidates(vest, rtol, spread_terms)[0])
    JV = forward_products(prob, forward, P, V)
    consistency = Comparison.none() if JV is None else Comparison.of(
        GV, U @ JV.T, rtol, {k: 2 * v for k, v in spread_terms.items()})
    vmapped, jitted = transformed.compare(prob, f, vjp, jvp, U, rtol, own, rng) \
        if opts.batched else (Comparison.none(), Comparison.none())
    rule_name = ("vjp=" if vjp is not None else "jvp=" if jvp is not None else
                 type(f).__name__ if isinstance(f, (jax.custom_vjp, jax.custom_jvp))
                 else "jax.vjp of f")
    with np.errstate(divide="ignore", invalid="ignore"):
        spread_rel = float(np.nanmax(spread / scale_of, initial=0.0))
    return DerivativeReport(name, jnp.dtype(d).name, rule_name, ref_name,
                            "full Jacobian" if full else f"{K} random projections",
                            tuple(blocks), along, consistency, noise_src,
                            max([b.error for b in blocks], default=0.0), order=order,
                            stated=(opts.rtol, opts.atol), vmapped=vmapped, jitted=jitted,
                            repeats=opts.repeats, spread=spread_rel)


def _references(est, wide, rs, in_block, rtol, terms, conv):
    """A block's finite-difference references (``finitediff.candidates``), its kink mask,
    and where ``f`` is not smooth: estimates at ``h`` and (given ``wide``) at ``10 h``
    that disagree beyond their error bars. There the estimates at h, 2 h, 10 h and 20 h
    are outside the asymptotic regime that the Richardson bars assume (a jump moves each
    by its size over the step), so every estimate carries ``ROUGH`` times their spread
    (the term ``nonsmooth``: the gaps between neighbours, summed) and both steps are
    candidates; elsewhere only ``h``'s."""
    def of(e):
        sub = {k: tuple(a[rs][:, in_block] for a in v) for k, v in e.items()}
        return finitediff.candidates(sub, rtol, terms, conv)
    cands, kink = of(est)
    if wide is None:
        return cands, kink, np.zeros(kink.shape, bool)
    far, _ = of(wide)
    bar = [sum(v for k, v in c[2].items() if k in BARS) for c in (cands[0], far[0])]
    gap = np.abs(cands[0][0] - far[0][0])
    rough = gap > bar[0] + bar[1]
    # |d(2s) - d(s)| at both steps, from the centred estimates' Richardson terms
    halves = [e["centred"][2][rs][:, in_block] * finitediff.ESTIMATES["centred"][2]
              / finitediff.TRUNC for e in (est, wide)]
    spread = np.where(rough, ROUGH * (gap + halves[0] + halves[1]), 0.0)
    far = [(np.where(rough, d, np.nan), r, t) for d, r, t in far]  # only where not smooth
    return [(d, r, dict(t, nonsmooth=spread)) for d, r, t in cands + far], kink, rough


class _Stencil:
    """Finite differences of ``phi_k(x) = <u_k, f(x)>`` in float64, with error bars."""

    def __init__(self, prob, f, U):
        g64, f64 = prob.flat(f, jnp.float64), jnp.float64
        self.x = jnp.asarray(prob.x, f64)
        self.U = jnp.asarray(U, f64)
        self.g64 = g64
        # the rounding of <u, f>: measured (float32's, scaled), at least eps times the
        # output leaf's typical size (a cancellation inside f that float32 rounds to 0
        # shows in neither measurement)
        y64 = np.asarray(g64(self.x))
        try:
            dy = np.abs(np.asarray(prob.flat(f, jnp.float32)(jnp.asarray(
                prob.x, jnp.float32)), np.float64) - y64) * eps_of(f64) / eps_of(jnp.float32)
        except Exception:  # noqa: BLE001 (f runs only in float64: one ulp away instead)
            dy = np.abs(np.asarray(g64(perturbed(prob.x))) - y64)
        typical = np.concatenate([np.full(c.stop - c.start, np.sqrt(np.mean(y64[c] ** 2)))
                                  for _, c, _ in _blocks(prob, True, 0)[0]])
        dy = np.maximum(dy, eps_of(f64) * (np.abs(y64) + typical))
        self.dphi = np.abs(U) @ dy  # (K,)

    def estimates(self, probes, steps):
        """``{name: (derivative, rounding, truncation)}``, each (K, len(probes)), along
        each probe (a flat index or a direction)."""
        n = probes.shape[0]
        chunk = min(n, finitediff.chunk_size(self.x.size, len(finitediff.STENCIL),
                                             most=FD_CHUNK))
        steps = jnp.asarray(steps, jnp.float64)

        def values_of(x, U, probes, steps, traced):  # (P, 7, K)
            return finitediff.stencil(lambda v: self.g64(v) @ U.T, x, probes, steps,
                                      finitediff.STENCIL, chunk, traced)
        if self.x.size > FD_ALL:  # large: one compiled loop (its compile is cheap beside it)
            values = jax.jit(values_of, static_argnums=4)(self.x, self.U, probes, steps, True)
        else:  # small: eager ops, compiled once per shape and reused by the next check
            values = values_of(self.x, self.U, probes, steps, False)
        out = {}
        for name in finitediff.ESTIMATES:
            value, trunc = finitediff.estimate(values, steps, name)
            rounding = FD_NOISE * finitediff.weight_sum(name) * self.dphi / np.asarray(
                steps)[:, None]
            out[name] = tuple(np.asarray(a, np.float64).T for a in
                              (value, rounding, finitediff.TRUNC * trunc))
        return out


def assert_derivative(f, *args, **options) -> DerivativeReport:
    """:func:`check_derivative`, raising ``AssertionError`` with the report if it fails."""
    report = check_derivative(f, *args, **options)
    if not report.passed:
        raise AssertionError("\n" + str(report))
    return report
