"""Gradient checking: hand backprop vs ``jax.grad`` vs finite differences, in float64.

``check_grads`` answers "is my derivation right?" for the built-in layers and
for any ``Activation`` or ``Loss`` a user puts in the spec.

* Pass rule, per entry and per reference: ``|hand - ref| <= rtol (|hand| + |ref|)
  + absolute``. The relative term is CS231n's test (1e-10 vs ``jax.grad``, 1e-7 vs
  finite differences, never loosened). The absolute term is the rounding or
  truncation the *reference itself* carries, which no relative test can absorb
  on entries many orders below their layer's scale; it is continuous (no
  cutoff where an entry suddenly gets slack) and measured, not picked:

  - vs ``jax.grad``: ``Rule.floor_autodiff * S``, S the largest ``|jax.grad|`` entry
    in the entry's layer (``W`` and ``b`` together: a one-entry bias leaf whose
    true gradient is exactly 0 has no scale of its own), plus ``Rule.ad_noise`` times
    the loss gradient's rounding pulled back to the layer, plus ``Rule.ad_backward``
    times ``jax.grad``'s own backward rounding, measured: the layer's largest change
    when the same backward pass (same forward values, same kink sides) starts from
    the cotangents 3 and 1/3 instead of 1 and is scaled back;
  - vs finite differences, each entry's own error bar: rounding,
    ``Rule.fd_noise * eps * M / h`` with M the size of what the loss is computed
    from (``|L|`` plus the mean of ``sum_j |s_ij|``), and truncation,
    ``Rule.fd_trunc`` times the stencil's Richardson error estimate.

  The report states, per leaf, how much of its allowance the worst entry used
  and which term was the largest there.
* Finite differences (:mod:`mlp_jax.finitediff`, shared with
  :func:`mlp_jax.check_derivative`): the centred 4-point stencil
  ``(f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h`` (error O(h^4)), and the same at
  2h (``f(±4h)``) for the error estimate ``|d(2h) - d(h)| / 15``. Entries go in
  chunks through one compiled function looped over with ``lax.map``, each
  chunk's size set so its perturbed parameter copies fit ``finitediff.CHUNK_BYTES``:
  memory is linear in the parameter count. Above ``FD_FULL_LIMIT`` parameters
  a seeded random sample of entries per leaf is finite-differenced by default;
  ``jax.grad`` always covers every entry. An entry the estimate at h contradicts is
  redone at ``h / REFINE`` and judged by the most accurate of those estimates (the
  smallest error bar): where the loss curves on a scale below h, the Richardson
  estimate understates the truncation error (batch norm on a batch of 3).
* Kinks: every stencil point records which side of every kink each
  pre-activation (and each hinge margin, each maxout winner) lies on. An entry
  whose stencil sees that state change straddles a kink: finite differences
  are meaningless there, so it is reported as such and left out of the
  finite-difference comparison. Hand vs ``jax.grad`` is compared everywhere,
  kinks included, where the two must agree exactly by the library's convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import finitediff
from .backprop import backprop
from .finitediff import REFINE, finite_differences, refine
from .network import forward, loss
from .passrule import Comparison, Judged, rel_error, table
from .spec import MLPSpec
from .validate import validate


@dataclass(frozen=True)
class Rule:
    """``check_grads``' pass rule, per entry and per reference: ``|hand - ref| <= rtol
    (|hand| + |ref|) + absolute`` (the module docstring says what each term is).

    The relative tolerances are CS231n's thresholds, never loosened. The absolute terms
    were measured over random correct problems (`mlp-jax gradcheck --random 2400`, depths
    1-6, N 1-64; the README's random sweeps), set on one sweep and confirmed on another
    drawn independently:

    - hand vs jax.grad needed at most 6e-15 S, except where a confident prediction makes
      the loss gradient cancel (softmax p - 1 with p near 1, n = 1 or 2): there both carry
      about eps (1 + |s|) / N per score, which the noise term pulls back through the
      network; those cases needed at most 0.35 of a noise term of 1 (``ad_noise`` is 10).
      A derivative off by a factor 1 + 1e-8 still fails (it moves the layer's largest
      entry by 1e-8 S; tests/test_gradcheck_detection.py).
    - finite differences needed at most 0.60 of their absolute allowance (0.96 at one
      entry of batch norm on a batch of 3, `--seed 15`, judged after step refinement).
    - batch norm on a batch of 3 (`--seed 15`) gave a gradient that is 0 by symmetry
      (``beta1`` of a net whose next layer normalizes its shift away): hand 2.9e-17,
      jax.grad -2.4e-16, rounding made inside batch norm's backward, which a signed
      pull-back of the loss gradient's rounding cannot see (it is 0 there too, by the
      same symmetry). ``ad_backward`` covers it from a measurement of jax.grad's own
      backward rounding (share 1.20 -> 0.08 there).
    """

    tol_autodiff: float = 1e-10  # relative, vs jax.grad
    tol_fd: float = 1e-7  # relative, vs finite differences
    floor_autodiff: float = 1e-14  # units of S, the layer's largest |jax.grad| entry
    ad_noise: float = 10.0  # times the layer's rounding scale (the loss gradient's eps pulled back)
    ad_backward: float = 10.0  # times the layer's measured backward rounding (jax.grad's own)
    fd_noise: float = 10.0  # units of eps * M / h
    fd_trunc: float = finitediff.TRUNC  # times the stencil's Richardson truncation estimate

    # pragma: no mutate block (the rule's wording, not its judgement)
    def __str__(self) -> str:
        return (f"rule per entry: |hand - ref| <= rtol (|hand| + |ref|) + absolute; vs "
                f"jax.grad rtol {self.tol_autodiff:g} + floor {self.floor_autodiff:g} S (S = "
                f"the layer's largest |jax.grad|) + noise {self.ad_noise:g} x the layer's "
                f"rounding scale + backward {self.ad_backward:g} x its measured backward "
                f"rounding; vs finite differences rtol {self.tol_fd:g} + noise "
                f"{self.fd_noise:g} eps M/h + trunc {self.fd_trunc:g} x the stencil's "
                "Richardson error")


RULE = Rule()

FD_FULL_LIMIT = 4096  # parameters; above it, finite differences sample entries by default
FD_SAMPLE_PER_LEAF = 256


@dataclass(frozen=True, kw_only=True)
class LeafCheck(Judged):
    name: str  # "W1", "b2", ...
    shape: tuple[int, ...]
    kink_entries: int  # entries whose stencil straddles a kink (left out of fd)


@dataclass(frozen=True)
class GradCheckReport:
    """Result of :func:`check_grads`; ``str(report)`` is a readable table."""

    spec_summary: str
    leaves: tuple[LeafCheck, ...]
    loss_hand: float
    loss_autodiff: float
    rule: Rule
    h: float
    refined: int = 0  # entries finite differences contradicted at h, redone at smaller steps

    @property
    def worst_autodiff(self) -> float:
        """Largest CS231n relative error against ``jax.grad`` (for reading, not judging)."""
        return max((leaf.autodiff.rel_error for leaf in self.leaves), default=0.0)

    @property
    def worst_fd(self) -> float:
        return max((leaf.fd.rel_error for leaf in self.leaves), default=0.0)

    @property
    def used(self) -> float:
        """The largest fraction of its allowance any entry used: PASS when <= 1."""
        return max((max(leaf.autodiff.used, leaf.fd.used) for leaf in self.leaves), default=0.0)

    @property
    def kink_entries(self) -> int:
        return sum(leaf.kink_entries for leaf in self.leaves)

    @property
    def loss_rel_error(self) -> float:
        return rel_error(self.loss_hand, self.loss_autodiff)

    @property
    def passed(self) -> bool:
        return all(leaf.passed for leaf in self.leaves) \
            and self.loss_rel_error <= self.rule.tol_autodiff

    # pragma: no mutate block (the report's wording, not its judgement)
    def __str__(self) -> str:
        lines = [
            f"gradient check: {self.spec_summary}",
            f"loss: hand {self.loss_hand:.12g}, jax.grad's forward {self.loss_autodiff:.12g}",
            *table("leaf  shape", "jax.grad", [
                (f"{leaf.name:<5} {leaf.shape}", leaf.autodiff, leaf.fd, leaf.kink_entries,
                 leaf.passed) for leaf in self.leaves]),
        ]
        sampled = sum(leaf.fd_entries < int(np.prod(leaf.shape)) for leaf in self.leaves)
        fd_n = sum(leaf.fd_entries for leaf in self.leaves)
        total = sum(int(np.prod(leaf.shape)) for leaf in self.leaves)
        lines.append(
            f"{self.rule}\n  'used' = the worst entry's |hand - ref| / allowance (PASS <= 1); "
            "'by' = the largest term of that allowance"
        )
        lines.append(
            f"finite differences: 4-point stencil, h={self.h:g} (and 2h for its error), on "
            f"{fd_n} of {total} entries"
            f"{' (a seeded sample in ' + str(sampled) + ' leaves)' if sampled else ''}; "
            f"{self.kink_entries} straddle a kink (compared with jax.grad only)"
            + (f"; {self.refined} contradicted at h redone at h/"
               + ", h/".join(f"{f:g}" for f in REFINE) if self.refined else "")
        )
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)


def _all_three(params, x, y, spec, hyper, key, train, stats, h, entries):
    """Hand grads, jax.grad and finite differences: one function, to jit or run eagerly
    (``stats`` None in training mode: check_grads passes them for evaluation only)."""
    kw = dict(hyper=hyper, key=key, train=train, stats=stats)
    loss_hand, hand = backprop(params, x, y, spec, **kw)
    loss_ad, loss_pullback = jax.vjp(lambda p: loss(p, x, y, spec, **kw), params)
    (auto,) = loss_pullback(jnp.ones_like(loss_ad))
    # jax.grad's own backward rounding, measured: the same backward pass (same forward
    # values, same kink sides) run from the cotangents 3 and 1/3 and scaled back differs
    # from it only by rounding (a gradient 0 by symmetry, as batch norm's sums make
    # beta's below it, keeps only this rounding, which no pulled-back term sees).
    backward = jax.tree.map(jnp.maximum, *(
        jax.tree.map(lambda s, a, c=c: jnp.abs(s / c - a),
                     loss_pullback(jnp.full_like(loss_ad, c))[0], auto)
        for c in (3.0, 1.0 / 3.0)))
    fd, fd_error, straddles = finite_differences(params, x, y, spec, h=h, entries=entries, **kw)
    # The size of what the loss is computed from: its rounding is about eps times this
    # (a loss near 0 can still subtract scores of size |s|, as logistic does at large s).
    scores, pullback = jax.vjp(lambda p: forward(p, x, spec, **kw), params)
    magnitude = jnp.abs(loss_ad) + jnp.mean(jnp.sum(jnp.abs(scores), axis=1))
    # The loss gradient w.r.t. the scores cancels where a prediction is confident
    # (softmax p - 1, sigmoid(s) - y at large s): both hand and jax.grad then carry about
    # eps (1 + |s|) / N of absolute rounding per score, which the layers below scale like a
    # gradient. Pulled back through the network, it gives each layer its rounding scale.
    eps = jnp.finfo(scores.dtype).eps
    (rounding,) = pullback(eps * (1.0 + jnp.abs(scores)) / scores.shape[0])
    return loss_hand, hand, loss_ad, auto, fd, fd_error, straddles, magnitude, rounding, backward


_all_three_jit = jax.jit(_all_three, static_argnames=("spec", "train", "h"))


def _stats_mode(spec: MLPSpec, train: bool) -> str:
    if not spec.batchnorm:
        return ""
    return " (batch statistics)" if train else " (running statistics)"


def _leaf_names(params) -> list[str]:
    return [f"{name}{layer}" for layer, p in enumerate(params, start=1) for name in sorted(p)]


def check_grads(params, x, y, spec: MLPSpec, *, hyper=None, key=None, train: bool | None = None,
                stats=None, h: float = 1e-3, rule: Rule = RULE,
                fd_entries: int | str | None = "auto", seed: int = 0,
                jit: bool = True) -> GradCheckReport:
    """Hand backprop vs ``jax.grad(loss)`` vs finite differences, per leaf, in float64.

    Args:
      params, x, y, spec: as for :func:`mlp_jax.loss`; converted to float64
        for the check (x64 is enabled only inside this call).
      hyper: reg, dropout and input noise (``spec.hyper()`` when None).
      key: dropout / input-noise key; the same masks are used by all three.
      train: training mode; defaults to True when ``key`` is given (and for batch norm
        without ``stats``: its training mode is the classic derivation).
      stats: batch norm's running statistics: checks evaluation mode (``train`` False).
      h: finite-difference step.
      rule: the pass rule (:class:`Rule`; ``dataclasses.replace(RULE, ...)`` to change
        a term): its relative tolerances and absolute terms.
      fd_entries: finite-difference this many random entries per leaf; None:
        every entry; ``"auto"`` (default): every entry up to
        ``FD_FULL_LIMIT`` parameters, else ``FD_SAMPLE_PER_LEAF`` per leaf.
        Hand vs ``jax.grad`` always covers every entry.
      seed: picks those entries.
      jit: compile the check as one program (fastest for a single check);
        False runs it op by op, which is faster for many small checks of the
        same shapes, whose compiled ops are then reused (the matrix does this).

    Returns:
      A :class:`GradCheckReport`; ``report.passed`` and ``print(report)``.

    Raises:
      ValueError: for bad inputs (as :func:`mlp_jax.loss`), and for batch norm in
        training mode on a batch of 2, which no pass rule can check (the message says
        why).
    """
    validate(params, x, y, spec)
    if train is None:
        train = key is not None or (spec.batchnorm and stats is None)
    if spec.batchnorm and train and np.shape(x)[0] == 2:
        raise ValueError(
            "batch norm in training mode on a batch of 2 normalizes every feature to about "
            "±1 whatever its input, so every gradient below it is nearly 0 (but for the "
            "norm's eps) and hand backprop, jax.grad and finite differences each return "
            "their own rounding there, more than the pass rule can bound: check it on a "
            "batch of 3 or more (or in evaluation mode, with stats=)")
    with jax.enable_x64(True):
        f64 = jnp.float64
        params = jax.tree.map(lambda a: jnp.asarray(a, f64), params)
        x = jnp.asarray(x, f64)
        hyper = spec.hyper(f64) if hyper is None else jax.tree.map(partial(jnp.asarray,
                                                                           dtype=f64), hyper)
        stats = None if train else jax.tree.map(lambda a: jnp.asarray(a, f64), stats)
        sizes = [int(np.size(a)) for a in jax.tree.leaves(params)]
        starts = np.cumsum([0] + sizes[:-1])
        picks = finitediff.pick_entries(sizes, fd_entries, np.random.default_rng(seed),
                                        FD_FULL_LIMIT, FD_SAMPLE_PER_LEAF)
        entries = np.concatenate([s + p for s, p in zip(starts, picks)])
        run = _all_three_jit if jit else _all_three
        (loss_hand, hand, loss_ad, auto, fd_flat, err_flat, straddle_flat, magnitude, rounding,
         backward) = run(params, x, y, spec, hyper, key, train, stats, h, entries)
        hand_leaves = [np.asarray(a) for a in jax.tree.leaves(hand)]
        auto_leaves = [np.asarray(a) for a in jax.tree.leaves(auto)]
        round_leaves = [np.asarray(a) for a in jax.tree.leaves(rounding)]
        backward_leaves = [np.asarray(a) for a in jax.tree.leaves(backward)]
        fd_flat, err_flat = np.asarray(fd_flat), np.asarray(err_flat)
        straddle_flat = np.asarray(straddle_flat)
        hand_flat = np.concatenate([a.ravel() for a in hand_leaves])[entries]
        fd_flat, err_flat, noise_flat, refined = refine(
            lambda at, step: finite_differences(
                params, x, y, spec, h=step, entries=at, hyper=hyper, key=key, train=train,
                stats=stats),
            hand_flat, entries, fd_flat, err_flat, straddle_flat,
            rule.fd_noise * np.finfo(np.float64).eps * float(magnitude), h, rule.tol_fd,
            rule.fd_trunc)

    names = _leaf_names(params)
    layer_of = [layer for layer, p in enumerate(params) for _ in p]  # as jax.tree.leaves
    # per layer (W, b, gamma, beta together): S, the rounding scale, the backward rounding
    layer_scale, round_scale, backward_scale = {}, {}, {}
    for layer, al, rl, bl in zip(layer_of, auto_leaves, round_leaves, backward_leaves):
        for scales, leaf in ((layer_scale, al), (round_scale, rl), (backward_scale, bl)):
            m = float(np.max(np.abs(leaf), initial=0.0))
            scales[layer] = max(scales.get(layer, 0.0), m)
    leaves, at = [], 0
    for name, layer, hl, al, pick in zip(names, layer_of, hand_leaves, auto_leaves, picks):
        scale = layer_scale[layer]
        fd, err = hl.ravel().copy(), np.zeros(hl.size)  # entries not picked are left out
        noise, include = np.zeros(hl.size), np.zeros(hl.size, bool)
        fd[pick], err[pick] = fd_flat[at:at + pick.size], err_flat[at:at + pick.size]
        noise[pick] = noise_flat[at:at + pick.size]
        include[pick] = ~straddle_flat[at:at + pick.size]
        kinks = int(straddle_flat[at:at + pick.size].sum())
        at += pick.size
        leaves.append(LeafCheck(
            name=name, shape=hl.shape,
            autodiff=Comparison.of(hl, al, rule.tol_autodiff,
                                   {"floor": rule.floor_autodiff * scale,
                                    "noise": rule.ad_noise * round_scale[layer],
                                    "backward": rule.ad_backward * backward_scale[layer]}),
            fd=Comparison.of(hl, fd.reshape(hl.shape), rule.tol_fd,
                             {"noise": noise.reshape(hl.shape),
                              "trunc": rule.fd_trunc * err.reshape(hl.shape)},
                             include.reshape(hl.shape)),
            kink_entries=kinks, fd_entries=int(pick.size),
        ))
    summary = (f"sizes={spec.sizes}, activation={spec.activation_name}, loss={spec.loss_fn.name}, "
               + (f"norm={spec.norm}{_stats_mode(spec, train)}, " if spec.norm else "")
               + f"reg={float(hyper.reg)}, "
               f"dropout={float(hyper.dropout) if train and spec.dropout else 0}, "
               f"N={np.shape(x)[0]}")
    return GradCheckReport(summary, tuple(leaves), float(loss_hand), float(loss_ad), rule, h,
                           refined)
