"""Second and higher derivatives: the rule's derivative, checked as a rule of its own.

Order k+1 of ``f`` is order 1 of ``g(x) = <u, J(x)>`` (the rule's VJP at a fixed random
cotangent ``u``; for a hand ``jvp=``, its tangent output along a fixed random ``t``):
JAX's autodiff of ``g`` (reverse over reverse, and forward over reverse where the rule
has a forward mode) is the rule checked; the references are finite differences of
``g`` itself (the lower order's rule, in float64) and autodiff of the same product of
the rule-free function. A rule whose first derivative is right and second wrong (a
``stop_gradient`` in a ``custom_jvp``) passes order 1 and fails order 2.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .jacobian import DerivativeInputError, Problem, cotangents_of, real_dtype, rule_free


def _product(prob: Problem, f, seed, vjp=None, jvp=None, forward=False):
    """``g(*args)``: ``f``'s derivative contracted with a fixed random cotangent, or (for
    a ``jvp=``, or ``forward``: ``jax.jvp`` of ``f``) tangent, as a function of all of
    ``f``'s arguments, returning a pytree."""
    forward = forward or jvp is not None
    rng = np.random.default_rng(seed)
    w = rng.normal(size=prob.x.size if forward else prob.m)
    w = jnp.asarray(np.asarray(jnp.asarray(w, prob.dtype), np.float64))

    def g(*args):
        diff = tuple(a for i, a in enumerate(args) if i not in prob.static)

        def full(*d):
            it = iter(d)
            return f(*[a if i in prob.static else next(it) for i, a in enumerate(args)])
        if forward:
            t = prob.unravel(w, real_dtype(jnp.result_type(*jax.tree.leaves(diff))))
            return jvp(tuple(args), tuple(t))[1] if jvp is not None else \
                jax.jvp(full, diff, tuple(t))[1]
        out, pull = jax.vjp(full, *diff)
        ct = jax.tree.map(lambda c, o: c.astype(o.dtype), prob.unravel_out(w), out)
        return pull(ct) if vjp is None else cotangents_of(vjp(*args, ct), prob)
    return functools.wraps(f)(g)


def reports(prob, f, vjp, jvp, reference, order, opts, name, check):
    """The reports of orders 2..``order``; ``check`` is one order's check."""
    out = []
    P = rule_free(f, vjp, jvp, reference)[0]
    for k in range(2, order + 1):
        seed = (opts.seed, k)
        g = _product(prob, f, seed, vjp, jvp)
        Pg = None if P is None else _product(prob, P, seed, forward=jvp is not None)
        try:
            gprob = Problem(g, prob.args, prob.static)
            report = check(gprob, g, None, None, Pg,
                           "none" if Pg is None else f"autodiff of the rule-free order-{k - 1}"
                           " derivative", g, opts, f"{name}, order {k}", order=k)
        except DerivativeInputError as e:
            raise DerivativeInputError(f"order {k} needs the derivative of the order-{k - 1} "
                                       f"rule, which cannot be checked: {e}") from None
        out.append(report)
        prob, f, vjp, jvp, P = gprob, g, None, None, Pg
    return out
