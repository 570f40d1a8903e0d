"""Optimizers vs textbook update formulas written here in numpy; schedules vs closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlp_jax as mj
from mlp_jax import optim


def np_sgd(lr):
    def step(x, g, s, t):
        return x - lr * g, s
    return step, None


def np_momentum(lr, mu=0.9):
    def step(x, g, v, t):
        v = mu * v - lr * g
        return x + v, v
    return step, "zeros"


def np_nesterov(lr, mu=0.9):
    def step(x, g, v, t):
        v_prev = v
        v = mu * v - lr * g
        return x - mu * v_prev + (1 + mu) * v, v
    return step, "zeros"


def np_rmsprop(lr, decay=0.99, eps=1e-8):
    def step(x, g, cache, t):
        cache = decay * cache + (1 - decay) * g**2
        return x - lr * g / (np.sqrt(cache) + eps), cache
    return step, "zeros"


def np_adam(lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    def step(x, g, s, t):
        m, v = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        mt, vt = m / (1 - b1**t), v / (1 - b2**t)
        return x - lr * mt / (np.sqrt(vt) + eps) - lr * wd * x, (m, v)
    return step, "pair"


CASES = {
    "sgd": (lambda: optim.sgd(0.05), np_sgd(0.05)),
    "momentum": (lambda: optim.momentum(0.02, 0.9), np_momentum(0.02)),
    "nesterov": (lambda: optim.nesterov(0.02, 0.9), np_nesterov(0.02)),
    "rmsprop": (lambda: optim.rmsprop(0.01), np_rmsprop(0.01)),
    "adam": (lambda: optim.adam(0.01), np_adam(0.01)),
    "adamw": (lambda: optim.adamw(0.01, weight_decay=0.1), np_adam(0.01, wd=0.1)),
}


def run_both(opt, ref, x0, grad_np, steps=100):
    step, kind = ref
    state = opt.init(x0)
    xs = x0
    xr = {k: np.asarray(v) for k, v in x0.items()}
    zeros = {k: np.zeros_like(v) for k, v in xr.items()}
    s = {k: None if kind is None else (zeros[k], zeros[k]) if kind == "pair" else zeros[k]
         for k in xr}
    for t in range(1, steps + 1):
        g = grad_np(xs)
        updates, state = opt.update(jax.tree.map(jnp.asarray, g), state, xs)
        xs = optim.apply_updates(xs, updates)
        gr = grad_np(xr)
        for k in xr:
            xr[k], s[k] = step(xr[k], gr[k], s[k], t)
    return xs, xr


@pytest.mark.parametrize("name", CASES)
def test_optimizer_on_quadratic(name, x64):
    rng = np.random.default_rng(0)
    M = rng.normal(size=(5, 5))
    A, b = M @ M.T + np.eye(5), rng.normal(size=5)

    def grad(x):  # of 0.5 x'Ax - b'x
        return {"x": A @ np.asarray(x["x"]) - b}

    xs, xr = run_both(CASES[name][0](), CASES[name][1], {"x": jnp.asarray(rng.normal(size=5))},
                      grad)
    np.testing.assert_allclose(xs["x"], xr["x"], rtol=1e-6)
    assert not np.allclose(xr["x"], 0)  # it moved


@pytest.mark.parametrize("name", CASES)
def test_optimizer_on_mlp(name, x64):
    spec = mj.MLPSpec((4, 6, 3), activation="tanh", reg=0.01, dtype="float64")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(10, 4)), rng.integers(0, 3, 10)
    p0 = mj.init_params(jax.random.key(0), spec)
    flat0 = {f"{k}{i}": v for i, layer in enumerate(p0) for k, v in layer.items()}

    def grad(flat):
        params = tuple({k: jnp.asarray(flat[f"{k}{i}"]) for k in ("W", "b")} for i in range(2))
        g = mj.backprop(params, x, y, spec)[1]
        return {f"{k}{i}": np.asarray(v) for i, layer in enumerate(g) for k, v in layer.items()}

    xs, xr = run_both(CASES[name][0](), CASES[name][1], flat0, grad)
    for k in xr:
        np.testing.assert_allclose(xs[k], xr[k], rtol=1e-6, atol=1e-12)


def test_schedules_closed_form():
    steps = jnp.arange(0, 500, 7)
    s = np.asarray(steps, float)
    np.testing.assert_allclose(optim.step_decay(0.1, 0.95, 50)(steps), 0.1 * 0.95 ** (s // 50),
                               rtol=1e-6)
    np.testing.assert_allclose(optim.exponential(0.1, 0.5, 100)(steps), 0.1 * 0.5 ** (s / 100),
                               rtol=1e-6)
    cos = 0.1 * (0.9 * 0.5 * (1 + np.cos(np.pi * np.minimum(s, 300) / 300)) + 0.1)
    np.testing.assert_allclose(optim.cosine(0.1, 300, alpha=0.1)(steps), cos, rtol=1e-5)
    np.testing.assert_allclose(optim.constant(0.3)(steps), 0.3)
    warm = optim.linear_warmup(0.2, 10, optim.cosine(0.2, 100))(steps)
    ref = np.where(s < 10, 0.2 * (s + 1) / 10,
                   0.2 * 0.5 * (1 + np.cos(np.pi * np.minimum(s - 10, 100) / 100)))
    np.testing.assert_allclose(warm, ref, rtol=1e-5, atol=1e-7)


def test_schedule_drives_the_update():
    opt = optim.sgd(optim.step_decay(1.0, 0.5, 2))
    x, state = {"x": jnp.zeros(())}, None
    state = opt.init(x)
    seen = []
    for _ in range(6):
        u, state = opt.update({"x": jnp.ones(())}, state)
        seen.append(-float(u["x"]))
    assert seen == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_clip_and_chain():
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(1.0))
    g = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([4.0])}  # norm 5
    u, _ = opt.update(g, opt.init(g))
    np.testing.assert_allclose(u["a"], [-0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(u["b"], [-0.8], rtol=1e-6)
    small = {"a": jnp.array([0.3, 0.0]), "b": jnp.array([0.4])}
    u, _ = opt.update(small, opt.init(small))
    np.testing.assert_allclose(u["a"], [-0.3, 0.0], rtol=1e-6)


def test_array_hyperparameters_vmap_compiles_once():
    def final(lr):
        opt = optim.adam(lr)
        x = {"x": jnp.ones(3)}
        state = opt.init(x)
        for _ in range(3):
            u, state = opt.update({"x": x["x"]}, state, x)
            x = optim.apply_updates(x, u)
        return x["x"]

    step = jax.jit(jax.vmap(final))
    out = step(jnp.array([0.1, 0.01, 0.001]))
    step(jnp.array([0.5, 0.05, 0.005]))  # other rates, same shapes: no new compile
    assert step._cache_size() == 1
    for i, lr in enumerate([0.1, 0.01, 0.001]):
        np.testing.assert_allclose(out[i], final(lr), rtol=1e-6)
