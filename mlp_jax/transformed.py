"""The rule under ``jax.vmap`` and ``jax.jit`` against the same rule run eagerly.

A rule is used batched and compiled: a hand batching rule (``custom_vmap``, a callback's
``vmap_method``) or a backward that treats a leading axis as its own can be right on
one input and wrong on a batch. :func:`compare` runs the rule's VJP on ``BATCH`` nearby
inputs (the given one and copies moved by up to ``MOVE`` of each entry), each with a
cotangent of its own: one at a time eagerly, all at once under ``jax.vmap``, and each
under ``jax.jit``, and judges the batched and compiled products against the eager
ones by the check's own allowance (they differ only by rounding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .jacobian import DerivativeInputError, first_line, rule
from .passrule import Comparison

BATCH = 3
MOVE = 1e-2


def compare(prob, f, vjp, jvp, U, rtol, allowance, rng) -> tuple[Comparison, Comparison]:
    """``(under vmap, under jit)``, each against the eager rule; ``allowance`` the check's
    absolute terms per (cotangent row, input entry)."""
    d = prob.dtype
    x = np.asarray(prob.x, np.float64)
    X = jnp.asarray(np.stack([x] + [x * (1 + MOVE * rng.uniform(-1, 1, x.shape))
                                    for _ in range(BATCH - 1)]), d)
    rows = rng.choice(U.shape[0], size=BATCH, replace=U.shape[0] < BATCH)
    Ub = jnp.asarray(U[rows], d)

    def reverse_at(x, u):  # (n,), (m,) -> (n,)
        return rule(prob, f, vjp, jvp, d, x)[0](u)
    eager = np.stack([np.asarray(reverse_at(X[b], Ub[b]), np.float64) for b in range(BATCH)])
    compiled = jax.jit(reverse_at)  # compiled once, run on each input
    out = []
    for how, run in (("jax.vmap", lambda: jax.vmap(reverse_at)(X, Ub)),
                     ("jax.jit", lambda: jnp.stack([compiled(X[b], Ub[b])
                                                    for b in range(BATCH)]))):
        try:
            got = np.asarray(run(), np.float64)
        except DerivativeInputError:
            raise
        except Exception as e:  # noqa: BLE001 (the rule fails transformed: say so)
            raise DerivativeInputError(f"the derivative rule fails under {how}: "
                                       f"{first_line(e)}; pass batched=False to check it "
                                       "untransformed") from None
        include = np.isfinite(eager) | np.isfinite(got)
        out.append(Comparison.of(got, eager, rtol, {k: v[rows] for k, v in allowance.items()},
                                 include))
    return out[0], out[1]
