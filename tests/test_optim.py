"""Optimizers vs textbook update formulas written here in numpy; schedules vs closed forms."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlp_jax as mj
from mlp_jax import optim


def rate(lr, t):
    """The rate of update t (1-based): a number, or a schedule of the step count t - 1."""
    return lr(t - 1) if callable(lr) else lr


def np_sgd(lr):
    def step(x, g, s, t):
        return x - rate(lr, t) * g, s
    return step, None


def np_momentum(lr, mu=0.9):
    def step(x, g, v, t):
        v = mu * v - rate(lr, t) * g
        return x + v, v
    return step, "zeros"


def np_nesterov(lr, mu=0.9):
    def step(x, g, v, t):
        v_prev = v
        v = mu * v - rate(lr, t) * g
        return x - mu * v_prev + (1 + mu) * v, v
    return step, "zeros"


def np_rmsprop(lr, decay=0.99, eps=1e-8):
    def step(x, g, cache, t):
        cache = decay * cache + (1 - decay) * g**2
        return x - rate(lr, t) * g / (np.sqrt(cache) + eps), cache
    return step, "zeros"


def np_adam(lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    def step(x, g, s, t):
        m, v = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        mt, vt = m / (1 - b1**t), v / (1 - b2**t)
        return x - rate(lr, t) * (mt / (np.sqrt(vt) + eps) + wd * x), (m, v)
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
def test_optimizer_follows_a_schedule_and_counts_its_updates(name, x64):
    """Each optimizer reads its rate at the state's count (0 at the first update), counts in
    int32, and reports the rate it was given."""
    sched = optim.step_decay(0.05, 0.5, 3)
    opt = optim.OPTIMIZERS[name](sched)
    assert opt.learning_rate is sched
    factory = {"sgd": np_sgd, "momentum": np_momentum, "nesterov": np_nesterov,
               "rmsprop": np_rmsprop, "adam": np_adam}
    ref = (np_adam(lambda t: 0.05 * 0.5 ** (t // 3), wd=1e-4) if name == "adamw"
           else factory[name](lambda t: 0.05 * 0.5 ** (t // 3)))
    rng = np.random.default_rng(4)
    A = np.diag(rng.uniform(0.5, 2.0, 4))
    xs, xr = run_both(opt, ref, {"x": jnp.asarray(rng.normal(size=4))},
                      lambda x: {"x": A @ np.asarray(x["x"])}, steps=10)
    np.testing.assert_allclose(xs["x"], xr["x"], rtol=1e-10)
    state = opt.init({"x": jnp.zeros(4)})
    assert state.count.dtype == jnp.int32 and state.count == 0
    for _ in range(4):
        _, state = opt.update({"x": jnp.ones(4)}, state, {"x": jnp.ones(4)})
    assert state.count == 4 and state.count.dtype == jnp.int32


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


@pytest.mark.parametrize("x64_on,rtol,atol", [(False, 1e-5, 1e-7), (True, 1e-14, 1e-16)])
def test_schedules_closed_form(x64_on, rtol, atol):
    """Every schedule against its formula in numpy float64: to float32 rounding by default,
    and in float64 (1e-14) when x64 is on, so a float64 run gets float64 rates (float32's
    are ~1e-9 off). The absolute term is for the cosine's cancellation near its end."""
    with jax.enable_x64(x64_on):
        steps = jnp.arange(0, 500, 7)  # int32, as an optimizer's count
        s = np.asarray(steps, float)
        cos = 0.1 * (0.9 * 0.5 * (1 + np.cos(np.pi * np.minimum(s, 300) / 300)) + 0.1)
        cases = {
            "step_decay": (optim.step_decay(0.1, 0.95, 50), 0.1 * 0.95 ** (s // 50)),
            "exponential": (optim.exponential(0.1, 0.5, 100), 0.1 * 0.5 ** (s / 100)),
            "cosine": (optim.cosine(0.1, 300, alpha=0.1), cos),
            "constant": (optim.constant(0.3), np.full_like(s, 0.3)),
            # a half-precision value's rates in the schedules' dtype too
            "constant_f16": (optim.constant(jnp.float16(0.3)),
                             np.full_like(s, float(np.float16(0.3)))),
            "warmup": (optim.linear_warmup(0.2, 10), 0.2 * np.minimum(s + 1, 10) / 10),
            "warmup_after": (optim.linear_warmup(0.2, 10, optim.cosine(0.2, 100)),
                             np.where(s < 10, 0.2 * (s + 1) / 10, 0.2 * 0.5 * (
                                 1 + np.cos(np.pi * np.minimum(s - 10, 100) / 100)))),
        }
        for name, (schedule, ref) in cases.items():
            rate = schedule(steps)
            assert rate.dtype == (jnp.float64 if x64_on else jnp.float32), name
            assert rate.shape == steps.shape, name
            np.testing.assert_allclose(rate, ref, rtol=rtol, atol=atol, err_msg=name)


def test_rates_take_the_gradients_dtype(x64):
    """An update in float64 uses the float64 rate (not float32's, 1e-8 off); float32 and
    bfloat16 params get theirs in their own dtype."""
    t = 37
    exact = 0.1 * 0.5 * (1 + np.cos(np.pi * t / 300))
    for dtype in ("float64", "float32", "bfloat16"):
        for opt in (optim.sgd(optim.cosine(0.1, 300)), optim.sgd(exact)):
            p = {"w": jnp.ones(3, dtype)}
            state = opt.init(p)._replace(count=jnp.int32(t if callable(
                opt.learning_rate) else 0))
            u, _ = opt.update(p, state, p)
            assert u["w"].dtype == dtype
            want = np.asarray(-jnp.asarray(exact, dtype), np.float64)
            np.testing.assert_array_equal(np.asarray(u["w"], np.float64), want)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"])
def test_updates_come_in_the_gradients_dtype(name):
    """Moments are kept in float32 at least, but each update leaves in its gradient's dtype
    (bfloat16 and float16 here), as apply_updates and a sharded step expect."""
    opt = getattr(optim, name)(0.1)
    for dtype in (jnp.bfloat16, jnp.float16):
        g = {"w": jnp.full(3, 0.5, dtype), "b": jnp.ones((), dtype)}
        u, _ = opt.update(g, opt.init(g), g)
        assert {k: v.dtype for k, v in u.items()} == {"w": dtype, "b": dtype}, name


@pytest.mark.parametrize("name", ["rmsprop", "adam"])
@pytest.mark.parametrize("x64_on", [False, True])
def test_moments_of_half_precision_gradients_are_float32s(name, x64_on):
    """A bfloat16 gradient is widened to its moment's float32 before it is squared or
    averaged (with float64 enabled too, where the default float is float64): the moments
    are float32 and equal those of the same values given in float32, to the bit."""
    with jax.enable_x64(x64_on):
        g32 = {"w": jnp.asarray([1 + 2**-7, 3.0, -0.5 - 2**-8], jnp.float32)}  # bf16's own
        g16 = jax.tree.map(lambda v: v.astype(jnp.bfloat16), g32)
        opt = getattr(optim, name)(0.1)
        _, want = opt.update(g32, opt.init(g32), g32)
        _, got = opt.update(g16, opt.init(g16), g16)
        for a, b in zip(jax.tree.leaves(want)[1:], jax.tree.leaves(got)[1:]):  # not count
            assert a.dtype == b.dtype == jnp.float32
            np.testing.assert_array_equal(a, b)


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


def test_chain_of_clip_and_adamw_equals_the_two_written_out(x64):
    """chain passes each transform its own state and the params (adamw's decay needs them);
    the clip scales by max_norm / ||g|| when the norm is small but above max_norm."""
    opt = optim.chain(optim.clip_by_global_norm(0.05), optim.adamw(0.01, weight_decay=0.1))
    rng = np.random.default_rng(3)
    x = {"a": jnp.asarray(rng.normal(size=3)), "b": jnp.asarray(rng.normal(size=2))}
    state = opt.init(x)
    assert isinstance(state.states[0], optim.EmptyState)
    assert isinstance(state.states[1], optim.AdamState)
    assert opt.learning_rate == 0.01
    step, _ = np_adam(0.01, wd=0.1)
    xr = {k: np.asarray(v) for k, v in x.items()}
    s = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in xr.items()}
    for t in range(1, 6):
        g = {k: 0.02 * rng.normal(size=v.shape) for k, v in xr.items()}  # norm ~0.05, < 1
        norm = np.sqrt(sum(np.sum(v * v) for v in g.values()))
        clipped = {k: v * min(1.0, 0.05 / norm) for k, v in g.items()}
        u, state = opt.update(jax.tree.map(jnp.asarray, g), state, x)
        x = optim.apply_updates(x, u)
        for k in xr:
            xr[k], s[k] = step(xr[k], clipped[k], s[k], t)
    for k in xr:
        np.testing.assert_allclose(x[k], xr[k], rtol=1e-12)


def test_clip_of_zero_gradients_is_zero_not_nan():
    u, _ = optim.clip_by_global_norm(1.0).update({"a": jnp.zeros(3)}, optim.EmptyState())
    np.testing.assert_array_equal(u["a"], np.zeros(3))


def test_warmup_hands_over_to_after_at_its_step_0():
    """At step == warmup_steps the rate is after(0), even when after does not start at peak."""
    sched = optim.linear_warmup(0.2, 10, optim.step_decay(0.05, 0.5, 1))
    np.testing.assert_allclose([float(sched(jnp.asarray(s))) for s in (0, 9, 10, 11, 12)],
                               [0.02, 0.2, 0.05, 0.025, 0.0125], rtol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_half_precision_params_stay_half(name):
    """The rate is float32, so updates may be too: apply_updates casts each one back to its
    param's dtype, and a bfloat16 param moves as its float32 twin does, to bfloat16's rounding."""
    opt = CASES[name][0]()
    x = {"half": jnp.ones(3, jnp.bfloat16), "full": jnp.ones(3, jnp.float32)}
    state = opt.init(x)
    for _ in range(3):
        u, state = opt.update(jax.tree.map(lambda a: 0.5 * a, x), state, x)
        x = optim.apply_updates(x, u)
    assert x["half"].dtype == jnp.bfloat16 and x["full"].dtype == jnp.float32
    assert float(x["full"][0]) < 0.99  # it moved
    np.testing.assert_allclose(np.asarray(x["half"], np.float32), x["full"], atol=0.01)


def test_adam_needs_params_only_for_weight_decay():
    g = {"x": jnp.ones(2)}
    u, _ = optim.adam(0.1).update(g, optim.adam(0.1).init(g))  # no params: fine
    np.testing.assert_allclose(u["x"], -0.1, rtol=1e-5)  # step 1: -lr g / |g|
    opt = optim.adamw(0.1)
    with pytest.raises(ValueError, match=r"^adamw's update needs params: update\(grads, state, "
                                         r"params\)$"):
        opt.update(g, opt.init(g))


def test_chain_reports_the_last_rate_it_holds():
    assert optim.chain(optim.clip_by_global_norm(1.0)).learning_rate is None
    assert optim.chain(optim.sgd(0.1), optim.clip_by_global_norm(1.0)).learning_rate == 0.1


@pytest.mark.parametrize("make,message", [
    (lambda: optim.sgd(-0.1), "sgd's learning_rate must be finite and in [0, inf); got -0.1"),
    (lambda: optim.sgd(float("nan")), "sgd's learning_rate must be finite"),
    (lambda: optim.adam(-1e-3), "adam's learning_rate must be finite and in [0, inf)"),
    (lambda: optim.adam(1e-3, b1=1.0), "adam's b1 must be finite and in [0, 1); got 1.0"),
    (lambda: optim.adam(1e-3, eps=0.0), "adam's eps must be finite and in (0, inf)"),
    (lambda: optim.adamw(1e-3, weight_decay=-1e-4), "adam's weight_decay must be finite and in [0"),
    (lambda: optim.momentum(0.1, mu=1.5), "momentum's mu must be finite and in [0, 1); got 1.5"),
    (lambda: optim.nesterov(0.1, mu=-0.1), "nesterov's mu must be finite and in [0, 1)"),
    (lambda: optim.rmsprop(0.1, decay_rate=1.0), "rmsprop's decay_rate must be finite and in [0"),
    (lambda: optim.cosine(0.1, 0), "cosine's decay_steps must be an int >= 1; got 0"),
    (lambda: optim.cosine(0.1, 10, alpha=2.0), "cosine's alpha must be finite and in [0, 1]"),
    (lambda: optim.exponential(0.1, -0.5, 10), "exponential's rate must be finite and in (0, 1]"),
    (lambda: optim.step_decay(0.1, 0.5, 0), "step_decay's steps_per_epoch must be an int >= 1"),
    (lambda: optim.step_decay(0.1, 1.5, 10), "step_decay's decay must be finite and in (0, 1]"),
    (lambda: optim.linear_warmup(0.1, 0), "linear_warmup's warmup_steps must be an int >= 1"),
    (lambda: optim.constant(-1.0), "constant's value must be finite and in [0, inf)"),
    (lambda: optim.clip_by_global_norm(0.0), "clip_by_global_norm's max_norm must be finite"),
    (lambda: optim.clip_by_global_norm(-1.0), "clip_by_global_norm's max_norm must be finite"),
    (lambda: optim.sgd(jnp.asarray([0.1, -0.1])), "sgd's learning_rate must be finite"),
])
def test_factories_refuse_values_that_would_ascend_or_give_nan(make, message):
    """Each of these trained silently before: ascending, NaN rates, or zeroed updates.
    (A rate of 0 is allowed: nothing moves, which tests and frozen runs use.)"""
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        make()


# Every hyperparameter a factory checks: the name its message gives, the factory with that
# value (the others valid) and the range as the message writes it. Written from the
# docstrings and CS231n's ranges, not from the checks.
RANGES = [
    ("constant's value", lambda v: optim.constant(v), "[0, inf)"),
    ("step_decay's init_value", lambda v: optim.step_decay(v, 0.5, 10), "[0, inf)"),
    ("step_decay's decay", lambda v: optim.step_decay(0.1, v, 10), "(0, 1]"),
    ("step_decay's steps_per_epoch", lambda v: optim.step_decay(0.1, 0.5, v), "int >= 1"),
    ("exponential's init_value", lambda v: optim.exponential(v, 0.5, 10), "[0, inf)"),
    ("exponential's rate", lambda v: optim.exponential(0.1, v, 10), "(0, 1]"),
    ("exponential's decay_steps", lambda v: optim.exponential(0.1, 0.5, v), "int >= 1"),
    ("cosine's init_value", lambda v: optim.cosine(v, 10), "[0, inf)"),
    ("cosine's decay_steps", lambda v: optim.cosine(0.1, v), "int >= 1"),
    ("cosine's alpha", lambda v: optim.cosine(0.1, 10, alpha=v), "[0, 1]"),
    ("linear_warmup's peak_value", lambda v: optim.linear_warmup(v, 10), "[0, inf)"),
    ("linear_warmup's warmup_steps", lambda v: optim.linear_warmup(0.1, v), "int >= 1"),
    ("sgd's learning_rate", lambda v: optim.sgd(v), "[0, inf)"),
    ("momentum's learning_rate", lambda v: optim.momentum(v), "[0, inf)"),
    ("momentum's mu", lambda v: optim.momentum(0.1, mu=v), "[0, 1)"),
    ("nesterov's learning_rate", lambda v: optim.nesterov(v), "[0, inf)"),
    ("nesterov's mu", lambda v: optim.nesterov(0.1, mu=v), "[0, 1)"),
    ("rmsprop's learning_rate", lambda v: optim.rmsprop(v), "[0, inf)"),
    ("rmsprop's decay_rate", lambda v: optim.rmsprop(0.1, decay_rate=v), "[0, 1)"),
    ("rmsprop's eps", lambda v: optim.rmsprop(0.1, eps=v), "(0, inf)"),
    ("adam's learning_rate", lambda v: optim.adam(v), "[0, inf)"),
    ("adam's b1", lambda v: optim.adam(1e-3, b1=v), "[0, 1)"),
    ("adam's b2", lambda v: optim.adam(1e-3, b2=v), "[0, 1)"),
    ("adam's eps", lambda v: optim.adam(1e-3, eps=v), "(0, inf)"),
    ("adam's weight_decay", lambda v: optim.adamw(1e-3, weight_decay=v), "[0, inf)"),
    ("clip_by_global_norm's max_norm", lambda v: optim.clip_by_global_norm(v), "(0, inf)"),
]


def _values(interval: str):
    """(refused, accepted) values for a range: each end and just past it, NaN and inf."""
    if interval == "int >= 1":
        return [0, -3, 1.5, 2.0, True, None], [1, 7, np.int64(3)]
    lo, hi = interval[0], interval[-1]
    low, high = (float(x) for x in interval[1:-1].split(", "))
    refused, accepted = [float("nan"), -float("inf"), low - 0.5], [low + 0.25]
    (refused if lo == "(" else accepted).append(low)
    if high != float("inf"):
        refused.append(high + 0.5)
        (refused if hi == ")" else accepted).append(high)
    else:
        refused.append(float("inf"))
    return refused, accepted


@pytest.mark.parametrize("name,make,interval", RANGES, ids=[r[0] for r in RANGES])
def test_every_hyperparameter_is_refused_outside_its_range_and_accepted_at_its_ends(
        name, make, interval):
    """Every value out of the range is refused with the message naming the hyperparameter
    and the range; the closed ends and a value inside are accepted."""
    refused, accepted = _values(interval)
    for v in refused:
        want = (f"{name} must be an int >= 1; got {v!r}" if interval == "int >= 1" else
                f"{name} must be finite and in {interval}; got {v!r}")
        with pytest.raises(ValueError) as e:
            make(v)
        assert str(e.value) == want, v
    for v in accepted:
        make(v)


@pytest.mark.skipif("MUTANT_UNDER_TEST" in os.environ,
                    reason="mutmut's copy of optim.py holds every mutant's source too")
def test_the_range_table_names_every_check_in_optim():
    """RANGES above is complete: every name a check in optim.py gives (an f-string's
    field standing for any word) is in it, and it names nothing that is not checked."""
    import inspect

    calls = re.findall(r'_(?:check|steps)\(f?"([^"]+)"', inspect.getsource(optim))
    patterns = [re.compile(re.sub(r"\\\{\w+\\\}", r"\\w+", re.escape(c)) + "$")
                for c in calls]
    names = [r[0] for r in RANGES]
    assert len(calls) >= 20
    for c, pattern in zip(calls, patterns):
        assert any(pattern.match(n) for n in names), c
    for n in names:
        assert any(p.match(n) for p in patterns), n


def test_traced_hyperparameters_are_not_checked_but_still_work():
    """Inside jit or vmap a value cannot be read; the factory accepts it as it is."""
    def update(lr):
        opt, g = optim.sgd(lr), {"w": jnp.ones(2)}
        return opt.update(g, opt.init(g))[0]["w"]

    f = jax.jit(jax.vmap(update))
    np.testing.assert_allclose(f(jnp.asarray([0.1, 0.2])), [[-0.1, -0.1], [-0.2, -0.2]],
                               rtol=1e-6)
