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
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from . import finitediff
from .jacobian import (
    DerivativeInputError,
    Problem,
    eps_of,
    forward_products,
    references,
    rule_free,
    rule_products,
)
from .passrule import Comparison, Judged, table

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


@dataclass(frozen=True, kw_only=True)
class Block(Judged):
    """One output leaf (or the random projections) against one input leaf."""

    output: str
    input: str
    shape: tuple[int, ...]  # (*output leaf shape, *input leaf shape); projections: (K, *input)
    kinks: int  # finite-difference entries on a kink (judged one-sided)


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
                 *table("output  input", "autodiff", [
                     (f"{b.output}  {b.input}", b.autodiff, b.fd, b.kinks, b.passed)
                     for b in self.blocks])]
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
        prob = Problem(f, args, static)
        return _check(prob, f, vjp, jvp, reference, h, projections, directions, fd_entries,
                      seed, name)


def _check(prob, f, vjp, jvp, reference, h, projections, directions, fd_entries, seed, name):
    d, eps = prob.dtype, eps_of(prob.dtype)
    rng = np.random.default_rng(seed)
    n, m = prob.x.size, prob.m
    full = n * m <= FULL_LIMIT
    K = m if full else projections
    # cotangents and directions exactly representable at the checked dtype
    U = np.eye(m) if full else np.asarray(jnp.asarray(rng.normal(size=(K, m)), d), np.float64)
    V = rng.normal(size=(directions, n))
    V = np.asarray(jnp.asarray(V / np.abs(V).max(axis=1, keepdims=True), d), np.float64)
    P, ref_name = rule_free(f, vjp, jvp, reference)
    G, forward = rule_products(prob, f, vjp, jvp, U)
    ad, ref64, noise, noise_src, mode = references(prob, f, vjp, jvp, P, U, full)
    if mode:
        ref_name += f" ({mode} mode)"
    fd = _Stencil(prob, f, U)
    xs = np.abs(np.asarray(prob.x, np.float64))
    rows, cols = _blocks(prob, full, K)
    picks = np.concatenate([c.start + p for (_, c, _), p in zip(cols, finitediff.pick_entries(
        [c.stop - c.start for _, c, _ in cols], fd_entries, rng, FD_ALL, FD_SAMPLE))])
    est = fd.estimates(jnp.asarray(picks), h * np.maximum(1.0, xs[picks]))

    # the rule's own allowance, entry by entry: the noise and floor of its block
    rtol = RTOL_EPS_BY_DTYPE.get(jnp.dtype(d).name, RTOL_EPS) * eps
    noise_of, scale_of = np.zeros((K, n)), np.zeros((K, n))  # per entry, of its block
    for _, rs, _ in rows:
        for _, cs, _ in cols:
            scale_of[rs, cs] = float(np.max(np.abs(ref64[rs, cs]), initial=0.0))  # S
            noise_of[rs, cs] = NOISE * float(np.max(noise[rs, cs], initial=0.0))
    floor_of = FLOOR_EPS * eps * scale_of
    blocks = []
    for rname, rs, rshape in rows:
        for cname, cs, cshape in cols:
            in_block = (picks >= cs.start) & (picks < cs.stop)
            at = picks[in_block]
            sub = {k: tuple(a[rs][:, in_block] for a in v) for k, v in est.items()}
            cands, kink = finitediff.candidates(
                sub, rtol, {"noise": noise_of[rs][:, at], "floor": floor_of[rs][:, at]},
                None if ad is None else ad[rs][:, at])
            smooth = np.ones((rs.stop - rs.start, cs.stop - cs.start), bool)
            smooth[:, at - cs.start] = ~kink  # autodiff's convention may differ on a kink
            vs_ad = Comparison.none() if ad is None else Comparison.of(
                G[rs, cs], ad[rs, cs], rtol, {"noise": noise_of[rs, cs],
                                              "floor": floor_of[rs, cs]}, smooth)

            def where(c, columns, rshape=rshape, cshape=cshape, cs=cs):  # (output, input)
                if not c.worst_index:
                    return c
                r, j = c.worst_index
                at = (*np.unravel_index(r, rshape),
                      *np.unravel_index(columns[j] - cs.start, cshape))
                return dataclasses.replace(c, worst_index=tuple(int(i) for i in at))
            blocks.append(Block(output=rname, input=cname, shape=(*rshape, *cshape),
                                autodiff=where(vs_ad, np.arange(cs.start, cs.stop)),
                                fd=where(Comparison.best(G[rs][:, at], cands), at),
                                kinks=int(kink.sum()), fd_entries=int(in_block.sum())))

    # Along random directions: <G, v> vs finite differences of <u, f(x + t v)>, allowed
    # what the entries it sums were allowed (their relative terms too: a sum may cancel).
    absV = np.abs(V).T  # (n, directions)
    spread = {"noise": noise_of @ absV, "floor": floor_of @ absV,
              "spread": rtol * ((np.abs(G) + np.abs(ref64)) @ absV)}
    GV = G @ V.T  # (K, directions)
    vest = fd.estimates(jnp.asarray(V), np.full(len(V), h * max(1.0, float(
        np.sqrt(np.mean(xs ** 2))))))
    along = Comparison.best(GV, finitediff.candidates(vest, rtol, spread)[0])
    JV = forward_products(prob, forward, P, V)
    consistency = Comparison.none() if JV is None else Comparison.of(
        GV, U @ JV.T, rtol, {k: 2 * v for k, v in spread.items()})
    rule_name = ("vjp=" if vjp is not None else "jvp=" if jvp is not None else
                 type(f).__name__ if isinstance(f, (jax.custom_vjp, jax.custom_jvp))
                 else "jax.vjp of f")
    # how wrong, at most, relative to each block's scale (autodiff's, else centred FD)
    ref = ad if ad is not None else np.full(G.shape, np.nan)
    if ad is None:
        ref[:, picks] = est["centred"][0]
    with np.errstate(divide="ignore", invalid="ignore"):
        error = float(np.nanmax(np.abs(G - ref) / scale_of, initial=0.0))
    return DerivativeReport(name, jnp.dtype(d).name, rule_name, ref_name,
                            "full Jacobian" if full else f"{K} random projections",
                            tuple(blocks), along, consistency, noise_src, error)


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
        y32 = np.asarray(prob.flat(f, jnp.float32)(jnp.asarray(prob.x, jnp.float32)),
                         np.float64)
        typical = np.concatenate([np.full(c.stop - c.start, np.sqrt(np.mean(y64[c] ** 2)))
                                  for _, c, _ in _blocks(prob, True, 0)[0]])
        dy = np.maximum(np.abs(y32 - y64) * eps_of(f64) / eps_of(jnp.float32),
                        eps_of(f64) * (np.abs(y64) + typical))
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
