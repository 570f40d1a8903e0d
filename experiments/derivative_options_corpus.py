"""Rules beyond exact first derivatives of real functions, correct and as people get them
wrong: approximate by design (ODE adjoints, iterative and implicit solvers at several
tolerances, backwards in lower precision), second derivatives, complex numbers, and
batching rules. Used by ``experiments/derivative_options.py`` and the tests.

Each case's ``make(rng)`` returns ``(f, args, options)`` for
:func:`mlp_jax.check_derivative` (``options`` carries the stated ``rtol`` and the
``order``), at the case's dtype; ``wrong`` names the mistake of a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap
from jax.experimental.ode import odeint


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "approximate", "second order", "complex", "batching"
    make: object  # rng -> (f, args, options)
    dtype: str = "float64"
    wrong: str = ""


def _vjp_rule(fun, bwd):
    f = jax.custom_vjp(fun)
    f.defvjp(lambda *a: (fun(*a), a), lambda a, g: bwd(*a, g))
    return f


def _normal(rng, shape, dtype, scale=1.0):
    return jnp.asarray(scale * rng.normal(size=shape), dtype)


# --- Approximate by design: a stated rtol ------------------------------------------------
def _largest_off(f, args, delta):
    """``vjp=``: f's own VJP with its Jacobian's largest entry (w.r.t. the last argument)
    times 1 + delta."""
    J = jax.jacrev(f, argnums=len(args) - 1)(*args)
    i = np.unravel_index(int(np.argmax(np.abs(J))), J.shape)
    out_ndim = J.ndim - np.ndim(args[-1])

    def vjp(*a):
        *primals, g = a
        cts = list(jax.vjp(f, *primals)[1](g))
        cts[-1] = cts[-1].at[i[out_ndim:]].add(delta * J[i] * g[i[:out_ndim]])
        return tuple(cts)
    return vjp


def _ode_rhs(kind):
    if kind == "tanh":
        return lambda y, t, A: jnp.tanh(A @ y) - 0.3 * y
    return lambda y, t, A: jnp.stack([y[1], -A[0, 0] ** 2 * y[0] - 0.1 * y[1]]) + 0 * A[1, 1]


def _ode_case(kind, dtype, rtol, wrong=False):
    n = 3 if kind == "tanh" else 2
    rhs = _ode_rhs(kind)

    def f(y0, A):
        return odeint(rhs, y0, jnp.asarray([0.0, 1.0], y0.dtype), A)

    def make(rng):
        args = (_normal(rng, n, dtype), _normal(rng, (n, n), dtype))
        opts = {"rtol": rtol}
        if wrong:
            opts["vjp"] = _largest_off(f, args, 10 * rtol)
        return f, args, opts
    return Case(f"odeint adjoint ({kind} ODE), {dtype}, rtol {rtol:g}", "approximate", make,
                dtype, "the adjoint 10 rtol off in its largest entry" if wrong else "")


MAXITER = 500


def _neumann_fixed_point(tol_fwd, tol_bwd):
    """z = tanh(W z + b) iterated to ``tol_fwd``; its implicit VJP by a Neumann series
    summed until a term is below ``tol_bwd``; both loops stop after ``MAXITER`` (a
    tolerance below float32's rounding is never met there, and check_derivative runs f
    at float32 to measure its rounding)."""
    def fixed(W, b):
        def body(c):
            z, _, i = c
            return jnp.tanh(W @ z + b), z, i + 1
        z, _, _ = lax.while_loop(
            lambda c: (jnp.max(jnp.abs(c[0] - c[1])) > tol_fwd) & (c[2] < MAXITER), body,
            (jnp.tanh(b), jnp.zeros_like(b), 0))
        return z

    def bwd(W, b, g):
        z = fixed(W, b)
        D = 1 - z ** 2
        J = D[:, None] * W  # dz/dz of one step

        def body(c):
            term, total, i = c
            term = J.T @ term
            return term, total + term, i + 1
        _, w, _ = lax.while_loop(
            lambda c: (jnp.max(jnp.abs(c[0])) > tol_bwd) & (c[2] < MAXITER), body, (g, g, 0))
        u = w * D
        return jnp.outer(u, z), u
    return _vjp_rule(fixed, bwd)


def _fixed_point_case(tol, wrong=False):
    # the wrong one sums its series to 1000 times the tolerance it states
    f = _neumann_fixed_point(tol * 1e-3, tol * (1e3 if wrong else 1e-1))

    def make(rng):
        return f, (_normal(rng, (4, 4), "float64", 0.3), _normal(rng, 4, "float64")), \
            {"rtol": 10 * tol}
    return Case(f"fixed point, Neumann-series implicit VJP, rtol {10 * tol:g}", "approximate",
                make, "float64", "the series stopped at 1000x the stated tolerance" if wrong
                else "")


def _spd(rng, n):
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return jnp.asarray(Q @ np.diag(np.linspace(1.0, 4.0, n)) @ Q.T)


def _cg_case(tol, wrong=False):
    """x = A^-1 b by conjugate gradients (jax.scipy.sparse.linalg.cg) to ``tol``; JAX's
    own implicit rule solves the transposed system to the same tolerance. Wrong: a
    hand VJP solving it to 1e4 times that. Stopped early, CG is a different map whose
    derivative is not the implicit one (finite differences of it differ from the exact
    derivative by 3e-4 S at 1e-5): the reference is the exact solve, as a user checking
    an implicit rule gives it."""
    def solve(A, b, t=tol):
        return jax.scipy.sparse.linalg.cg(lambda v: A @ v, b, tol=t, maxiter=200)[0]

    def vjp(A, b, g):
        w = solve(A, g, tol * 1e4)
        return -jnp.outer(w, solve(A, b)), w

    def make(rng):
        opts = {"rtol": 100 * tol, "reference": jnp.linalg.solve}
        return solve, (_spd(rng, 6), _normal(rng, 6, "float64")), (
            dict(opts, vjp=vjp) if wrong else opts)
    return Case(f"conjugate gradients, rtol {100 * tol:g}", "approximate", make, "float64",
                "the transposed solve 1e4x looser than stated" if wrong else "")


def _low_precision_case(lo, rtol, wrong_lo=None):
    """A float64 tanh layer whose backward runs in ``lo`` (by design, stated), or in a
    still lower precision than it states (wrong)."""
    dt = jnp.dtype(wrong_lo or lo)

    def layer(x, W):
        return jnp.tanh(x @ W)

    def bwd(x, W, g):
        xl, Wl, gl = (a.astype(dt) for a in (x, W, g))
        dz = gl * (1 - jnp.tanh(xl @ Wl) ** 2)
        return (dz @ Wl.T).astype(x.dtype), (xl.T @ dz).astype(W.dtype)
    f = _vjp_rule(layer, bwd)

    def make(rng):
        return f, (_normal(rng, (5, 4), "float64"), _normal(rng, (4, 3), "float64", 0.5)), \
            {"rtol": rtol}
    return Case(f"tanh layer, backward in {wrong_lo or lo}, rtol {rtol:g}", "approximate",
                make, "float64", f"the backward in {wrong_lo}, {lo}'s accuracy stated"
                if wrong_lo else "")


APPROXIMATE = [
    _ode_case("tanh", "float64", 1e-6), _ode_case("tanh", "float32", 1e-3),
    _ode_case("oscillator", "float64", 1e-6), _ode_case("oscillator", "float32", 1e-3),
    _fixed_point_case(1e-4), _fixed_point_case(1e-6), _fixed_point_case(1e-8),
    _cg_case(1e-5), _cg_case(1e-7), _cg_case(1e-9),
    _low_precision_case("float32", 1e-6), _low_precision_case("bfloat16", 3e-2),
    _low_precision_case("float16", 3e-3),
    _ode_case("tanh", "float64", 1e-5), _ode_case("oscillator", "float64", 1e-5),
]
APPROXIMATE_WRONG = [
    _ode_case("tanh", "float64", 1e-6, True), _ode_case("tanh", "float32", 1e-3, True),
    _ode_case("oscillator", "float64", 1e-6, True), _ode_case("oscillator", "float32", 1e-3,
                                                              True),
    _fixed_point_case(1e-4, True), _fixed_point_case(1e-6, True),
    _fixed_point_case(1e-8, True), _cg_case(1e-5, True), _cg_case(1e-7, True),
    _low_precision_case("float32", 1e-6, "bfloat16"),
    _low_precision_case("float32", 1e-6, "float16"),
]


# --- Second derivatives: first order right, second order wrong ---------------------------
ELEMENTWISE = {  # f, f'
    "softplus": (lambda x: jnp.logaddexp(x, 0.0), jax.nn.sigmoid),
    "tanh": (jnp.tanh, lambda x: 1 - jnp.tanh(x) ** 2),
    "sigmoid": (jax.nn.sigmoid, lambda x: jax.nn.sigmoid(x) * (1 - jax.nn.sigmoid(x))),
    "log cosh": (lambda x: jnp.logaddexp(x, -x) - jnp.log(2.0), jnp.tanh),
    "x exp(-x^2)": (lambda x: x * jnp.exp(-x ** 2),
                    lambda x: (1 - 2 * x ** 2) * jnp.exp(-x ** 2)),
}


def _second_order_case(name, rule, dtype, wrong=False):
    fun, d = ELEMENTWISE[name]
    dd = (lambda x: lax.stop_gradient(d(x))) if wrong else d
    if rule == "custom_jvp":
        f = jax.custom_jvp(fun)
        f.defjvp(lambda p, t: (fun(p[0]), t[0] * dd(p[0])))
    else:
        f = _vjp_rule(fun, lambda x, g: (g * dd(x),))

    def make(rng):
        return f, (_normal(rng, (4, 3), dtype, 2.0),), {"order": 2}
    return Case(f"{name} ({rule}), order 2, {dtype}", "second order", make, dtype,
                "f' under stop_gradient: first derivative right, second 0" if wrong else "")


SECOND = [_second_order_case(n, r, dt) for n in ELEMENTWISE
          for r, dt in (("custom_jvp", "float64"), ("custom_vjp", "float32"))]
SECOND_WRONG = [_second_order_case(n, r, dt, True) for n in ELEMENTWISE
                for r, dt in (("custom_jvp", "float64"), ("custom_vjp", "float32"))]


# --- Complex numbers, in JAX's convention ------------------------------------------------
HOLOMORPHIC = {  # f, f'
    "sin(z) z": (lambda z: jnp.sin(z) * z, lambda z: jnp.cos(z) * z + jnp.sin(z)),
    "exp(z)": (jnp.exp, jnp.exp),
    "z^3": (lambda z: z ** 3, lambda z: 3 * z ** 2),
    "1 / (1 + z^2)": (lambda z: 1 / (1 + z ** 2), lambda z: -2 * z / (1 + z ** 2) ** 2),
}


def _complex_z(rng, shape, dtype):
    return jnp.asarray(rng.normal(size=shape) + 1j * rng.normal(size=shape), dtype)


def _holomorphic_case(name, dtype, wrong=False):
    fun, d = HOLOMORPHIC[name]

    def vjp(z, c):  # the transpose, not the adjoint: no conjugate for a holomorphic f
        return c * (jnp.conj(d(z)) if wrong else d(z))

    def make(rng):
        return fun, (_complex_z(rng, 5, dtype),), {"vjp": vjp}
    return Case(f"{name}, hand VJP, {dtype}", "complex", make, dtype,
                "the derivative conjugated" if wrong else "")


def _quad(z, w):
    return jnp.sum(jnp.real(z * jnp.conj(z)) * w) + jnp.sum(jnp.imag(z ** 2))


def _quad_case(dtype, real, wrong=False):
    """Re sum z conj(z) w + sum Im z^2 (real output): the cotangent is
    d/dRe - i d/dIm; wrong: its conjugate."""
    def bwd(z, w, g):
        dz = 2 * w * jnp.conj(z) - 2j * z
        return g * (jnp.conj(dz) if wrong else dz), g * jnp.real(z * jnp.conj(z))
    f = _vjp_rule(_quad, bwd)

    def make(rng):
        return f, (_complex_z(rng, 5, dtype), _normal(rng, 5, real)), {}
    return Case(f"Re z conj(z) w + Im z^2, custom_vjp, {dtype}", "complex", make, dtype,
                "the cotangent conjugated" if wrong else "")


def _matmul_case(dtype, wrong=False):
    """z @ W, both complex: cotangents c @ W^T and z^T @ c (transposes); wrong: conjugate
    transposes, as if the cotangent were an adjoint."""
    def vjp(z, W, c):
        t = (lambda a: jnp.conj(a).T) if wrong else (lambda a: a.T)
        return c @ t(W), t(z) @ c

    def make(rng):
        return (lambda z, W: z @ W), (_complex_z(rng, (3, 4), dtype),
                                      _complex_z(rng, (4, 2), dtype)), {"vjp": vjp}
    return Case(f"complex matmul, hand VJP, {dtype}", "complex", make, dtype,
                "conjugate transposes" if wrong else "")


def _abs2_case(dtype, wrong=False):
    """|z|^2 (not holomorphic): the cotangent 2 g conj(z); wrong: 2 g z (the conjugate
    missing)."""
    def vjp(z, g):
        return 2 * g * (z if wrong else jnp.conj(z))

    def make(rng):
        return (lambda z: jnp.real(z * jnp.conj(z))), (_complex_z(rng, 6, dtype),), \
            {"vjp": vjp}
    return Case(f"|z|^2, hand VJP, {dtype}", "complex", make, dtype,
                "the conjugate missing" if wrong else "")


COMPLEX = [_holomorphic_case(n, dt) for n in HOLOMORPHIC for dt in ("complex128",)] + [
    _holomorphic_case("sin(z) z", "complex64"), _quad_case("complex128", "float64"),
    _quad_case("complex64", "float32"), _matmul_case("complex128"), _matmul_case("complex64"),
    _abs2_case("complex128")]
COMPLEX_WRONG = [_holomorphic_case(n, "complex128", True) for n in HOLOMORPHIC] + [
    _holomorphic_case("sin(z) z", "complex64", True), _quad_case("complex128", "float64", True),
    _quad_case("complex64", "float32", True), _matmul_case("complex128", True),
    _matmul_case("complex64", True), _abs2_case("complex128", True)]


# --- Batching rules: right for one input, wrong for a batch ------------------------------
def _sin_with(bwd):
    return _vjp_rule(jnp.sin, lambda x, g: (bwd(x, g),))


def _custom_vmap_bwd(mistake=""):
    @custom_vmap
    def dsin(x, g):
        return g * jnp.cos(x)

    @dsin.def_vmap
    def _(axis_size, in_batched, x, g):
        x, g = (a if b else jnp.broadcast_to(a, (axis_size, *a.shape))
                for a, b in zip((x, g), in_batched))
        out = g * jnp.cos(x)
        if mistake == "reversed":
            out = out[::-1]
        elif mistake == "first":  # the first example's answer for all
            out = jnp.broadcast_to(out[:1], out.shape)
        elif mistake == "mean":  # the batch's mean for each
            out = jnp.broadcast_to(out.mean(0, keepdims=True), out.shape)
        return out, True
    return dsin


def _callback_bwd(mistake="", method="broadcast_all"):
    def np_bwd(x, g):
        g = np.asarray(g)
        if mistake == "sum":  # a reduction over axis 0, meant for one example's rows
            g = np.sum(g, axis=0)
        elif mistake == "first":
            g = g.reshape(-1, *np.shape(x)[-1:])[0]
        return (g * np.cos(x)).astype(np.asarray(x).dtype)
    return lambda x, g: jax.pure_callback(
        np_bwd, jax.ShapeDtypeStruct(jnp.broadcast_shapes(x.shape, g.shape), x.dtype), x, g,
        vmap_method=method)


def _plain_bwd(mistake=""):
    """JAX batches a jnp backward itself: right under vmap whatever it does eagerly."""
    return lambda x, g: g * jnp.cos(x)


def _batching_case(name, bwd, mistake="", **kw):
    f = _sin_with(bwd(mistake, **kw))
    return Case(f"{name}", "batching",
                lambda rng: (f, (_normal(rng, 6, "float32"),), {}), "float32", mistake)


BATCHING = [
    _batching_case("custom_vmap backward", _custom_vmap_bwd),
    _batching_case("pure_callback backward (broadcast_all)", _callback_bwd),
    _batching_case("pure_callback backward (expand_dims)", _callback_bwd, method="expand_dims"),
    _batching_case("pure_callback backward (sequential)", _callback_bwd, method="sequential"),
    _batching_case("jnp backward (batched by JAX)", _plain_bwd)]
BATCHING_WRONG = [
    _batching_case("custom_vmap backward: batch reversed", _custom_vmap_bwd, "reversed"),
    _batching_case("custom_vmap backward: first example's for all", _custom_vmap_bwd, "first"),
    _batching_case("pure_callback backward: sums over axis 0", _callback_bwd, "sum"),
    _batching_case("pure_callback backward: first row only", _callback_bwd, "first"),
    _batching_case("custom_vmap backward: the batch's mean for each", _custom_vmap_bwd, "mean"),
]
