"""Hand-written derivatives as people write them: correct ones, and wrong ones with the
mistakes people really make. Used by ``experiments/derivatives.py`` (the table against
``jax.test_util.check_grads``) and by the tests.

Each case's ``make(rng, dtype)`` returns ``(f, args, options)`` for
:func:`mlp_jax.check_derivative`; ``dtypes`` are the precisions where the case means
something (matrix factorizations have no half-precision kernels on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ALL = ("float64", "float32", "float16", "bfloat16")
WIDE = ("float64", "float32")


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    make: object  # (rng, dtype) -> (f, args, options)
    dtypes: tuple = ALL
    wrong: str = ""  # the mistake, for the wrong ones


def _normal(rng, shape, dtype, scale=1.0):
    return jnp.asarray(scale * rng.normal(size=shape), dtype)


def _with_zeros(rng, shape, dtype, scale=2.0):
    """Random, with about a quarter of the entries exactly 0 (on the kink)."""
    x = scale * rng.normal(size=shape)
    x[rng.random(shape) < 0.25] = 0.0
    return jnp.asarray(x, dtype)


def _vjp_rule(fun, bwd):
    """``jax.custom_vjp`` of ``fun`` whose residuals are the inputs: ``bwd(*args, g)``."""
    f = jax.custom_vjp(fun)
    f.defvjp(lambda *a: (fun(*a), a), lambda a, g: bwd(*a, g))
    return f


def _jvp_rule(fun, tangent):
    """``jax.custom_jvp`` of ``fun``: ``tangent(*primals, *tangents)``."""
    f = jax.custom_jvp(fun)
    f.defjvp(lambda p, t: (fun(*p), tangent(*p, *t)))
    return f


def elementwise(name, fun, bwd, kinks=False, dtypes=ALL, wrong="", scale=2.0):
    f = _vjp_rule(fun, lambda x, g: (g * bwd(x),))
    draw = _with_zeros if kinks else partial(_normal, scale=scale)
    return Case(name, "elementwise, kinks" if kinks else "elementwise",
                lambda rng, dt: (f, (draw(rng, (6, 5), dt),), {}), dtypes, wrong)


# --- Elementwise ----------------------------------------------------------------------
def _softplus(x):
    return jnp.logaddexp(x, 0.0)


def _gelu(x):
    return 0.5 * x * (1 + jnp.tanh(0.7978845608 * (x + 0.044715 * x ** 3)))


def _gelu_d(x, inner=True):
    u = 0.7978845608 * (x + 0.044715 * x ** 3)
    du = 0.7978845608 * (1 + 3 * 0.044715 * x ** 2) if inner else 0.7978845608
    t = jnp.tanh(u)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * du


def _elu(x):
    return jnp.where(x > 0, x, jnp.exp(x) - 1)


def _leaky(x):
    return jnp.where(x > 0, x, 0.1 * x)


def _relu(x):
    return jnp.where(x > 0, x, 0.0)


def _hardtanh(x):
    return jnp.clip(x, -1.0, 1.0)


CORRECT = [
    elementwise("softplus", _softplus, jax.nn.sigmoid, scale=3.0),
    elementwise("sigmoid", jax.nn.sigmoid, lambda x: jax.nn.sigmoid(x) * (1 - jax.nn.sigmoid(x))),
    Case("tanh (custom_jvp)", "elementwise",
         lambda rng, dt: (_jvp_rule(jnp.tanh, lambda x, t: t * (1 - jnp.tanh(x) ** 2)),
                          (_normal(rng, (6, 5), dt),), {})),
    elementwise("gelu (tanh approx.)", _gelu, _gelu_d),
    Case("silu (custom_jvp)", "elementwise",
         lambda rng, dt: (_jvp_rule(
             lambda x: x * jax.nn.sigmoid(x),
             lambda x, t: t * jax.nn.sigmoid(x) * (1 + x * (1 - jax.nn.sigmoid(x)))),
             (_normal(rng, (6, 5), dt, 2.0),), {})),
    elementwise("elu", _elu, lambda x: jnp.where(x > 0, 1.0, jnp.exp(x))),
    elementwise("log cosh", lambda x: jnp.logaddexp(x, -x) - jnp.log(2.0), jnp.tanh),
    elementwise("relu", _relu, lambda x: jnp.where(x > 0, 1.0, 0.0), kinks=True),
    Case("leaky relu (custom_jvp)", "elementwise, kinks",
         lambda rng, dt: (_jvp_rule(_leaky, lambda x, t: jnp.where(x > 0, t, 0.1 * t)),
                          (_with_zeros(rng, (6, 5), dt),), {})),
    elementwise("abs", jnp.abs, lambda x: jnp.where(x >= 0, 1.0, -1.0), kinks=True),
    elementwise("hard tanh", _hardtanh,
                lambda x: jnp.where(jnp.abs(x) <= 1, 1.0, 0.0), kinks=True),
    Case("jax.nn.relu (built-in custom_jvp)", "elementwise, kinks",
         lambda rng, dt: (jax.nn.relu, (_with_zeros(rng, (6, 5), dt),), {})),
]


def _max2_case(name, to_both=False):
    def fun(a, b):
        return jnp.where(a >= b, a, b)

    def bwd(a, b, g):
        first = a >= b
        if to_both:  # a tie sends the gradient to both: right off the tie, wrong on it
            return (g * (first | (a == b)), g * (~first | (a == b)))
        return g * first, g * ~first

    def make(rng, dt):
        a = _normal(rng, (4, 5), dt)
        b = jnp.where(jnp.asarray(rng.random((4, 5)) < 0.3), a, _normal(rng, (4, 5), dt))
        return _vjp_rule(fun, bwd), (a, b), {}
    return Case(name, "elementwise, kinks", make,
                wrong="a tie sends the gradient to both inputs" if to_both else "")


CORRECT.append(_max2_case("maximum of two (ties to the first)"))


# --- Reductions, softmax, log-sum-exp ----------------------------------------------------
def _sumsq_bwd(factor):
    return lambda x, g: (factor * g * x,)


def _lse(x):
    m = lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))
    return (m + jnp.log(jnp.sum(jnp.exp(x - m), axis=-1, keepdims=True)))[..., 0]


def _softmax(x):
    e = jnp.exp(x - lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True)))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _softmax_bwd(x, g, drop=False):
    s = _softmax(x)
    return (s * g,) if drop else (s * (g - jnp.sum(g * s, axis=-1, keepdims=True)),)


def _moments(x):
    mu = jnp.mean(x, axis=0)
    return {"mean": mu, "var": jnp.mean((x - mu) ** 2, axis=0)}


def _moments_bwd(x, g):
    n = x.shape[0]
    mu = jnp.mean(x, axis=0)
    return (g["mean"] / n + 2 * g["var"] * (x - mu) / n,)


def _xent(scores, y):
    return jnp.mean(_lse(scores) - jnp.take_along_axis(scores, y[:, None], 1)[:, 0])


def _xent_bwd(y, scores, g, per_n=True):
    p = _softmax(scores)
    d = p - jax.nn.one_hot(y, scores.shape[1], dtype=scores.dtype)
    return (g * d / scores.shape[0] if per_n else g * d,)


def _xent_case(name, per_n=True):
    f = jax.custom_vjp(_xent, nondiff_argnums=(1,))
    f.defvjp(lambda s, y: (_xent(s, y), s), lambda y, s, g: _xent_bwd(y, s, g, per_n))

    def make(rng, dt):
        return f, (_normal(rng, (8, 5), dt, 2.0), jnp.asarray(rng.integers(0, 5, 8))), \
            {"static_argnums": (1,)}
    return Case(name, "softmax, nondiff_argnums", make,
                wrong="" if per_n else "the batch mean's 1/N left out")


def _reduction(name, fun, bwd, kind="reduction", shape=(6, 5), wrong="", scale=1.0,
               dtypes=ALL):
    f = _vjp_rule(fun, bwd)
    return Case(name, kind, lambda rng, dt: (f, (_normal(rng, shape, dt, scale),), {}), dtypes,
                wrong)


def _l2n(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _l2n_bwd(x, g, drop=False):
    r = jnp.linalg.norm(x, axis=-1, keepdims=True)
    y = x / r
    return (g / r,) if drop else ((g - y * jnp.sum(g * y, axis=-1, keepdims=True)) / r,)


CORRECT += [
    _reduction("sum of squares", lambda x: jnp.sum(x ** 2), _sumsq_bwd(2.0)),
    _reduction("log-sum-exp", _lse, lambda x, g: (g[..., None] * _softmax(x),),
               "softmax / log-sum-exp", scale=3.0),
    _reduction("softmax", _softmax, _softmax_bwd, "softmax / log-sum-exp", scale=2.0),
    Case("log-softmax (custom_jvp)", "softmax / log-sum-exp",
         lambda rng, dt: (_jvp_rule(lambda x: x - _lse(x)[..., None],
                                    lambda x, t: t - jnp.sum(_softmax(x) * t, -1, keepdims=True)),
                          (_normal(rng, (6, 5), dt, 2.0),), {})),
    _reduction("mean and variance (dict output)", _moments, _moments_bwd, "pytree output"),
    _xent_case("cross-entropy, integer labels"),
    _reduction("L2 normalize", _l2n, _l2n_bwd, "normalization"),
]


# --- Normalizations ----------------------------------------------------------------------
def _layernorm(x, gamma, beta, eps=1e-5):
    mu = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, -1, keepdims=True)
    return gamma * (x - mu) / jnp.sqrt(var + eps) + beta


def _layernorm_vjp(x, gamma, beta, g, drop=False, eps=1e-5):
    mu = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, -1, keepdims=True)
    inv = 1 / jnp.sqrt(var + eps)
    xhat = (x - mu) * inv
    gx = g * gamma
    dx = inv * (gx - jnp.mean(gx, -1, keepdims=True)
                - (0.0 if drop else xhat * jnp.mean(gx * xhat, -1, keepdims=True)))
    return dx, jnp.sum(g * xhat, 0), jnp.sum(g, 0)


def _layernorm_case(name, drop=False, bias_sum=True):
    def vjp(x, gamma, beta, g):
        dx, dg, db = _layernorm_vjp(x, gamma, beta, g, drop)
        return dx, dg, db if bias_sum else g[0]

    def make(rng, dt):
        return _layernorm, (_normal(rng, (6, 5), dt, 2.0), _normal(rng, (5,), dt) + 1,
                            _normal(rng, (5,), dt)), {"vjp": vjp}
    return Case(name, "normalization, hand VJP of a layer", make)


def _batchnorm(x):
    mu = jnp.mean(x, 0)
    return (x - mu) / jnp.sqrt(jnp.mean((x - mu) ** 2, 0) + 1e-5)


def _batchnorm_bwd(x, g, drop=False):
    mu = jnp.mean(x, 0)
    inv = 1 / jnp.sqrt(jnp.mean((x - mu) ** 2, 0) + 1e-5)
    xhat = (x - mu) * inv
    mean_term = 0.0 if drop else jnp.mean(g, 0)
    return (inv * (g - mean_term - xhat * jnp.mean(g * xhat, 0)),)


CORRECT += [
    _layernorm_case("layer norm (hand VJP, gamma, beta)"),
    _reduction("batch norm (training)", _batchnorm, _batchnorm_bwd, "normalization",
               shape=(8, 4), scale=2.0),
]


# --- Matrix functions ------------------------------------------------------------------
def _spd(rng, n, dt):
    a = rng.normal(size=(n, n))
    return jnp.asarray(a @ a.T + n * np.eye(n), dt)


def _solve_case(name, transpose=True):
    def bwd(A, b, g):
        w = jnp.linalg.solve(A.T if transpose else A, g)
        x = jnp.linalg.solve(A, b)
        return -jnp.outer(w, x), w
    f = _vjp_rule(jnp.linalg.solve, bwd)

    def make(rng, dt):
        return f, (jnp.asarray(rng.normal(size=(5, 5)) + 3 * np.eye(5), dt),
                   _normal(rng, (5,), dt)), {}
    return Case(name, "matrix function", make, WIDE,
                "" if transpose else "the adjoint solve with A instead of A^T")


def _chol_solve(A, b):
    """``A^-1 b`` through a Cholesky factor of A's symmetric part (a factorization reads
    one triangle; symmetrizing first makes the function depend on both)."""
    c = jax.scipy.linalg.cho_factor(0.5 * (A + A.T), lower=True)
    return jax.scipy.linalg.cho_solve(c, b)


def _chol_bwd(A, b, g):
    c = jax.scipy.linalg.cho_factor(0.5 * (A + A.T), lower=True)
    w, x = jax.scipy.linalg.cho_solve(c, g), jax.scipy.linalg.cho_solve(c, b)
    dA = -jnp.outer(w, x)
    return 0.5 * (dA + dA.T), w


def _inv_bwd(A, G, transpose=True):
    Ai = jnp.linalg.inv(A)
    return (-(Ai.T @ G @ Ai.T) if transpose else -(Ai @ G @ Ai),)


def _logdet_bwd(A, g, transpose=True):
    Ai = jnp.linalg.inv(A)
    return (g * (Ai.T if transpose else Ai),)


def _logdet(A):
    return jnp.linalg.slogdet(A)[1]


def _nonsym(rng, dt):
    return jnp.asarray(rng.normal(size=(4, 4)) + 3 * np.eye(4), dt)


def _matrix_case(name, fun, bwd, wrong=""):
    f = _vjp_rule(fun, bwd)
    return Case(name, "matrix function", lambda rng, dt: (f, (_nonsym(rng, dt),), {}), WIDE,
                wrong)


def _dense_relu(x, W, b):
    return jnp.where(x @ W.T + b > 0, x @ W.T + b, 0.0)  # (N, out)


def _dense_vjp(x, W, b, g, mistake=""):
    z = x @ W.T + b
    dz = g * (z > 0)
    dx = dz @ (W.T if mistake == "transpose" else W)
    dW = dz.T @ x
    db = dz[0] if mistake == "broadcast" else jnp.sum(dz, 0)
    return dx, dW, db


def _dense_case(name, mistake=""):
    def make(rng, dt):
        return _dense_relu, (_normal(rng, (6, 4), dt), _normal(rng, (4, 4), dt),
                             _normal(rng, (4,), dt)), \
            {"vjp": partial(_dense_vjp, mistake=mistake)}
    return Case(name, "hand VJP of a layer", make, ALL,
                {"": "", "transpose": "dx = dz W^T for y = x W^T (missing transpose)",
                 "broadcast": "db from one row instead of the batch sum"}[mistake])


CORRECT += [
    _solve_case("linear solve"),
    Case("Cholesky solve (SPD)", "matrix function",
         lambda rng, dt: (_vjp_rule(_chol_solve, _chol_bwd),
                          (_spd(rng, 4, dt), _normal(rng, (4,), dt)), {}), WIDE),
    _matrix_case("matrix inverse", jnp.linalg.inv, _inv_bwd),
    _matrix_case("log |det|", _logdet, _logdet_bwd),
    _dense_case("dense + relu layer (hand VJP)"),
]


# --- Recurrences and fixed points --------------------------------------------------------
def _rnn(h0, W, xs):
    def step(h, x):
        h = jnp.tanh(W @ h + x)
        return h, h
    return lax.scan(step, h0, xs)[1]  # (T, H)


def _rnn_bwd(h0, W, xs, G, drop=False):
    hs = _rnn(h0, W, xs)
    prev = jnp.concatenate([h0[None], hs[:-1]])

    def back(carry, inp):
        dh_next, dW = carry
        g, h, hp = inp
        dz = (g + (0.0 if drop else dh_next)) * (1 - h ** 2)
        return (W.T @ dz, dW + jnp.outer(dz, hp)), dz
    (dh0, dW), dxs = lax.scan(back, (jnp.zeros_like(h0), jnp.zeros_like(W)),
                              (G, hs, prev), reverse=True)
    return dh0, dW, dxs


def _rnn_case(name, drop=False):
    f = _vjp_rule(_rnn, lambda h0, W, xs, G: _rnn_bwd(h0, W, xs, G, drop))

    def make(rng, dt):
        return f, (_normal(rng, (3,), dt), _normal(rng, (3, 3), dt, 0.5),
                   _normal(rng, (5, 3), dt)), {}
    return Case(name, "lax.scan recurrence", make, ALL,
                "the gradient from the next step dropped" if drop else "")


def _cumsum_case(name, reverse=True):
    f = _vjp_rule(lambda x: jnp.cumsum(x, -1),
                  lambda x, g: (jnp.flip(jnp.cumsum(jnp.flip(g, -1), -1), -1)
                                if reverse else jnp.cumsum(g, -1),))
    return Case(name, "lax.scan recurrence", lambda rng, dt: (f, (_normal(rng, (4, 6), dt),),
                                                              {}),
                ALL, "" if reverse else "cumsum of g instead of its reverse cumsum")


def _fixed_point(W, b):
    """z = tanh(W z + b) by iteration (a contraction: |W| small)."""
    def body(c):
        z, _, i = c
        return jnp.tanh(W @ z + b), z, i + 1
    z, _, _ = lax.while_loop(lambda c: (c[2] < 200) & jnp.any(c[0] != c[1]), body,
                             (jnp.zeros_like(b), jnp.ones_like(b), 0))
    return z


def _fixed_point_bwd(W, b, g, transpose=True):
    z = _fixed_point(W, b)
    D = 1 - z ** 2  # dz = D (dW z + W dz + db)
    J = D[:, None] * W  # the map's Jacobian in z
    A = jnp.eye(b.size, dtype=b.dtype) - J
    w = jnp.linalg.solve(A.T if transpose else A, g)
    u = w * D
    return jnp.outer(u, z), u


def _fixed_point_case(name, transpose=True):
    f = _vjp_rule(_fixed_point, lambda W, b, g: _fixed_point_bwd(W, b, g, transpose))

    def make(rng, dt):
        return f, (_normal(rng, (4, 4), dt, 0.3), _normal(rng, (4,), dt)), {}
    return Case(name, "fixed point (while_loop), implicit backward", make, WIDE,
                "" if transpose else "the implicit solve with (I - J) instead of its "
                                     "transpose")


def _power(x, p):
    return x ** p


def _power_case(name, factor=True):
    f = jax.custom_vjp(_power, nondiff_argnums=(1,))
    f.defvjp(lambda x, p: (x ** p, x),
             lambda p, x, g: (g * (p if factor else 1) * x ** (p - 1),))

    def make(rng, dt):
        return f, (jnp.asarray(0.5 + rng.random((5, 4)), dt), 3), {"static_argnums": (1,)}
    return Case(name, "nondiff_argnums", make, ALL,
                "" if factor else "the exponent's factor p left out")


def _mlp_layer(params, x):
    z = x @ params["W"].T + params["b"]
    return jnp.tanh(z), z  # a tuple output


def _mlp_layer_vjp(params, x, g):
    h, z = _mlp_layer(params, x)
    dz = g[0] * (1 - h ** 2) + g[1]
    return {"W": dz.T @ x, "b": jnp.sum(dz, 0)}, dz @ params["W"]


def _gauss_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return x * jnp.exp(-x ** 2), t * (1 - 2 * x ** 2) * jnp.exp(-x ** 2)


CORRECT += [
    _rnn_case("tanh RNN by lax.scan"),
    _cumsum_case("cumulative sum"),
    _fixed_point_case("tanh fixed point, implicit VJP"),
    _power_case("x ** p, p static (nondiff_argnums)"),
    Case("dict params and tuple output (hand VJP)", "pytree input and output",
         lambda rng, dt: (_mlp_layer, ({"W": _normal(rng, (3, 4), dt),
                                        "b": _normal(rng, (3,), dt)},
                                       _normal(rng, (5, 4), dt)), {"vjp": _mlp_layer_vjp})),
    Case("x exp(-x^2) (hand jvp=)", "elementwise, hand JVP",
         lambda rng, dt: (lambda x: x * jnp.exp(-x ** 2), (_normal(rng, (6, 5), dt),),
                          {"jvp": _gauss_jvp})),
]


# --- Wrong derivatives: the mistakes people make -------------------------------------------
def _low_precision_bwd(x, g):
    lo = jnp.bfloat16
    return ((g.astype(lo) * jax.nn.sigmoid(x.astype(lo))).astype(g.dtype),)


def _stop_gradient_softmax(x):
    e = jnp.exp(x - lax.stop_gradient(jnp.max(x, -1, keepdims=True)))
    return e / lax.stop_gradient(jnp.sum(e, -1, keepdims=True))  # the wrong place


WRONG = [
    elementwise("softplus: sign", _softplus, lambda x: jax.nn.sigmoid(-x),
                wrong="sigmoid(-x) for sigmoid(x)", scale=3.0),
    elementwise("sigmoid: sign", jax.nn.sigmoid,
                lambda x: jax.nn.sigmoid(x) * (1 + jax.nn.sigmoid(x)), wrong="s (1 + s)"),
    Case("tanh: square dropped (custom_jvp)", "elementwise",
         lambda rng, dt: (_jvp_rule(jnp.tanh, lambda x, t: t * (1 - jnp.tanh(x))),
                          (_normal(rng, (6, 5), dt),), {}), wrong="1 - y for 1 - y^2"),
    elementwise("gelu: inner derivative dropped", _gelu, partial(_gelu_d, inner=False),
                wrong="the chain rule through the cubic left out"),
    elementwise("elu: y for y + alpha", _elu, lambda x: jnp.where(x > 0, 1.0, jnp.exp(x) - 1),
                wrong="the derivative written as the output below 0"),
    Case("leaky relu: 0 on the kink", "elementwise, kinks",
         lambda rng, dt: (_jvp_rule(_leaky, lambda x, t: jnp.where(
             x > 0, t, jnp.where(x < 0, 0.1 * t, 0.0))), (_with_zeros(rng, (6, 5), dt),), {}),
         wrong="a slope on the kink that is neither side's"),
    _max2_case("maximum of two: both on a tie", to_both=True),
    _reduction("sum of squares: factor 2", lambda x: jnp.sum(x ** 2), _sumsq_bwd(1.0),
               wrong="x for 2x"),
    _reduction("softmax: term dropped", _softmax, partial(_softmax_bwd, drop=True),
               "softmax / log-sum-exp", scale=2.0, wrong="s g, the sum term dropped"),
    _xent_case("cross-entropy: 1/N dropped", per_n=False),
    _reduction("L2 normalize: projection dropped", _l2n, partial(_l2n_bwd, drop=True),
               "normalization", wrong="g / |x|, as if the norm were constant"),
    Case("layer norm: a term dropped", "normalization, hand VJP of a layer",
         lambda rng, dt: (_layernorm, (_normal(rng, (6, 5), dt, 2.0),
                                       _normal(rng, (5,), dt) + 1, _normal(rng, (5,), dt)),
                          {"vjp": lambda x, ga, be, g: _layernorm_vjp(x, ga, be, g, True)}),
         wrong="the variance's dependence on x left out"),
    _reduction("batch norm: mean term dropped", _batchnorm, partial(_batchnorm_bwd, drop=True),
               "normalization", shape=(8, 4), scale=2.0, wrong="the batch mean as a constant"),
    _solve_case("linear solve: transpose missing", transpose=False),
    _matrix_case("matrix inverse: transposes missing", jnp.linalg.inv,
                 partial(_inv_bwd, transpose=False), wrong="-A^-1 G A^-1"),
    _matrix_case("log |det|: transpose missing", _logdet, partial(_logdet_bwd, transpose=False),
                 wrong="A^-1 for A^-T"),
    _dense_case("dense layer: transpose", "transpose"),
    _dense_case("dense layer: bias broadcast", "broadcast"),
    _rnn_case("RNN: next step's gradient dropped", drop=True),
    _cumsum_case("cumulative sum: not reversed", reverse=False),
    _fixed_point_case("fixed point: implicit solve not transposed", transpose=False),
    _power_case("x ** p: factor p dropped", factor=False),
    Case("sigmoid-softplus: derivative in bfloat16", "elementwise",
         lambda rng, dt: (_vjp_rule(_softplus, _low_precision_bwd),
                          (_normal(rng, (6, 5), dt, 3.0),), {}), ("float64", "float32", "float16"),
         wrong="the backward computed in bfloat16 for a higher-precision function"),
    Case("softmax: stop_gradient in the wrong place", "softmax / log-sum-exp",
         lambda rng, dt: (_stop_gradient_softmax, (_normal(rng, (6, 5), dt, 2.0),), {}),
         wrong="stop_gradient on the normalizer (a plain function: no rule-free reference)"),
]
