"""The network against numpy references, the lectures' examples, and bad input."""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import labels_for

import mlp_jax as mj


def test_shapes_follow_the_lectures():
    spec = mj.MLPSpec(sizes=(3072, 100, 10))
    params = mj.init_params(jax.random.key(0), spec)
    chex.assert_shape(params[0]["W"], (100, 3072))
    chex.assert_shape(params[0]["b"], (100,))
    chex.assert_shape(params[1]["W"], (10, 100))
    assert mj.forward(params, jnp.zeros((7, 3072)), spec).shape == (7, 10)
    maxout = mj.MLPSpec(sizes=(4, 6, 3), activation="maxout", maxout_k=3)
    p = mj.init_params(jax.random.key(0), maxout)
    chex.assert_shape([p[0]["W"], p[0]["b"], p[1]["W"]], [(3, 6, 4), (3, 6), (3, 6)])


@pytest.mark.parametrize("init,std", [("he", math.sqrt(2 / 500)),
                                      ("xavier", math.sqrt(2 / 700)), ("normal", 0.05)])
def test_init_scales(init, std):
    spec = mj.MLPSpec((500, 200, 3), init=init, weight_scale=0.05)
    W = np.asarray(mj.init_params(jax.random.key(3), spec)[0]["W"])
    assert abs(W.std() / std - 1) < 0.02 and abs(W.mean()) < 0.01 * std * 10


@pytest.mark.parametrize("activation,fan_in", [("relu", 500), ("maxout", 500)])
def test_torch_init_is_nn_linear_default(activation, fan_in):
    """PyTorch's documented nn.Linear default (kaiming_uniform with a=sqrt(5), and its bias
    rule): weights and biases uniform on [-1/sqrt(in), 1/sqrt(in)], every layer."""
    spec = mj.MLPSpec((fan_in, 300, 40), activation=activation, init="torch", maxout_k=2)
    for layer, n_in in zip(mj.init_params(jax.random.key(5), spec), (fan_in, 300)):
        bound = 1 / math.sqrt(n_in)
        for name in ("W", "b"):
            v = np.asarray(layer[name]).ravel() / bound
            assert np.abs(v).max() <= 1  # inside the interval
            sd = 1 / math.sqrt(v.size)  # five standard errors of each estimate below
            assert abs(v.var() * 3 - 1) < 4.5 * sd and abs(v.mean()) < 2.9 * sd  # U(-1, 1)
            # uniform, not a normal of that variance (which has 61% inside half the bound)
            assert abs((np.abs(v) < 0.5).mean() - 0.5) < 2.5 * sd
        W, b = np.asarray(layer["W"]), np.asarray(layer["b"])
        assert not np.allclose(W.ravel()[:b.size], b.ravel())  # own draws, not one reused


def test_spec_is_frozen_and_hashable():
    a, b = mj.MLPSpec((3, 4, 2), reg=0.1), mj.MLPSpec([3, 4, 2], reg=0.1)
    assert a == b and hash(a) == hash(b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.reg = 1.0


def test_three_layer_sigmoid_forward_matches_numpy(x64):
    """The lectures' 3-layer example: f(W3 f(W2 f(W1 x + b1) + b2) + b3), 3->4->4->1."""
    spec = mj.MLPSpec((3, 4, 4, 1), activation="sigmoid", loss="squared", dtype="float64")
    rng = np.random.default_rng(0)
    W1, W2, W3 = rng.normal(size=(4, 3)), rng.normal(size=(4, 4)), rng.normal(size=(1, 4))
    b1, b2, b3 = rng.normal(size=(4, 1)), rng.normal(size=(4, 1)), rng.normal(size=(1, 1))
    x = rng.normal(size=(3, 1))  # one column vector, as on the slide
    f = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    h1 = f(W1 @ x + b1)
    h2 = f(W2 @ h1 + b2)
    out = W3 @ h2 + b3
    params = ({"W": W1, "b": b1[:, 0]}, {"W": W2, "b": b2[:, 0]}, {"W": W3, "b": b3[:, 0]})
    np.testing.assert_allclose(mj.forward(params, x.T, spec), out.T, rtol=1e-13)


def test_twenty_line_numpy_network_same_loss_every_step(x64):
    """The lecture's 20-line numpy two-layer net, step for step, for all 2000 steps.

    numpy sums the squared error over the batch and steps with lr 1e-4; mlp_jax's
    data loss is the batch mean, so its loss is numpy's / N and the same update
    needs lr 1e-4 * N.
    """
    N, D_in, H, D_out = 64, 1000, 100, 10
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(N, D_in)), rng.normal(size=(N, D_out))
    w1, w2 = rng.normal(size=(D_in, H)), rng.normal(size=(H, D_out))

    np_losses = []
    a1, a2 = w1.copy(), w2.copy()
    for _ in range(2000):
        h = 1 / (1 + np.exp(-x.dot(a1)))
        y_pred = h.dot(a2)
        np_losses.append(np.square(y_pred - y).sum())
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h.T.dot(grad_y_pred)
        grad_h = grad_y_pred.dot(a2.T)
        grad_w1 = x.T.dot(grad_h * h * (1 - h))
        a1 -= 1e-4 * grad_w1
        a2 -= 1e-4 * grad_w2

    spec = mj.MLPSpec((D_in, H, D_out), activation="sigmoid", loss="squared", bias=False,
                      dtype="float64")

    def step(params, _):
        value, grads = mj.backprop(params, x, y, spec)
        return jax.tree.map(lambda p, g: p - 1e-4 * N * g, params, grads), value

    params = ({"W": jnp.asarray(w1.T)}, {"W": jnp.asarray(w2.T)})
    _, losses = jax.jit(lambda p: jax.lax.scan(step, p, None, length=2000))(params)
    np.testing.assert_allclose(np.asarray(losses) * N, np_losses, rtol=1e-9)


def test_bias_trick_gives_the_same_scores():
    """x' = [1 x], W' = [b W]: integer-valued data makes every product exact."""
    rng = np.random.default_rng(0)
    x = rng.integers(-5, 6, size=(9, 4)).astype(np.float32)
    W = rng.integers(-3, 4, size=(3, 4)).astype(np.float32)
    b = rng.integers(-3, 4, size=(3,)).astype(np.float32)
    with_bias = mj.forward(({"W": W, "b": b},), x, mj.MLPSpec((4, 3)))
    trick = mj.forward(({"W": np.concatenate([b[:, None], W], 1)},),
                       np.concatenate([np.ones((9, 1), np.float32), x], 1),
                       mj.MLPSpec((5, 3), bias=False))
    np.testing.assert_array_equal(with_bias, trick)
    # and for a random float net, to float64 rounding
    with jax.enable_x64(True):
        xf, Wf, bf = rng.normal(size=(9, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3,))
        a = mj.forward(({"W": Wf, "b": bf},), xf, mj.MLPSpec((4, 3), dtype="float64"))
        t = mj.forward(({"W": np.c_[bf, Wf]},), np.c_[np.ones(9), xf],
                       mj.MLPSpec((5, 3), bias=False, dtype="float64"))
        np.testing.assert_allclose(a, t, rtol=1e-14)


@pytest.mark.parametrize("loss_name,expected", [("softmax", math.log(10)), ("svm", 9.0)])
def test_initial_loss_sanity(loss_name, expected):
    spec = mj.MLPSpec((3072, 100, 10), loss=loss_name, init="normal", weight_scale=1e-4)
    params = mj.init_params(jax.random.key(0), spec)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 3072)).astype(np.float32), rng.integers(0, 10, 200)
    assert float(mj.loss(params, x, y, spec)) == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("loss_name", mj.LOSS_NAMES)
def test_losses_stable_at_huge_scores(loss_name):
    loss = mj.losses.get_loss(loss_name)
    C = 1 if loss.labels in ("binary01", "binary_pm1") else 4
    spec = mj.MLPSpec((2, C), loss=loss_name)
    scores = jnp.array([[1e4] * C, [-1e4] * C, [1e4, -1e4, 0.0, 3.0][:C], [-1e4, 1e4, 5, 0][:C]],
                       jnp.float32)
    y = labels_for(spec, 4, np.random.default_rng(0))
    y = jnp.asarray(y, jnp.float32) if loss.labels != "class" else jnp.asarray(y)
    assert np.isfinite(loss.value(scores, y)).all()
    assert np.isfinite(loss.grad(scores, y)).all()
    assert np.isfinite(jax.grad(lambda s: loss.value(s, y).sum())(scores)).all()


@pytest.mark.parametrize("name", [a for a in mj.ACTIVATION_NAMES if a != "maxout"])
def test_activations_finite_at_huge_inputs(name):
    act = mj.activations.elementwise(name)
    z = jnp.array([-1e4, 1e4, -88.0, 88.0], jnp.float32)
    assert np.isfinite(act.fn(z)).all() and np.isfinite(act.deriv(z, act.fn(z))).all()


@pytest.mark.parametrize("name", [n for n in mj.activations.ACTIVATION_NAMES
                                  if n != "maxout"])
def test_declared_kinks_are_where_the_derivative_jumps(name, x64):
    """An activation's ``kinks`` (which the gradient checks rely on to judge a finite
    difference that straddles one) are exactly the points where its derivative jumps,
    found by scanning the derivative on a fine grid: a kink left out or misplaced would
    let a straddling estimate fail a correct gradient. Non-default slope and alpha, so
    leaky ReLU's and ELU's derivatives jump (ELU's with alpha 1 is continuous)."""
    act = mj.activations.elementwise(name, leaky_slope=0.2, elu_alpha=0.5)
    z = np.linspace(-3.0, 3.0, 6001)  # step 1e-3, 0 on the grid
    d = np.asarray(act.deriv(jnp.asarray(z), act.fn(jnp.asarray(z))))
    jumps = np.flatnonzero(np.abs(np.diff(d)) > 0.05)  # smooth ones move < 1e-3 a step
    found = [(z[i], z[i + 1]) for i in jumps]
    assert len(found) == len(act.kinks), (found, act.kinks)
    for (lo, hi), kink in zip(found, sorted(act.kinks)):
        assert lo <= kink <= hi, (found, act.kinks)


def test_maxout_finite_at_huge_inputs():
    z = jnp.array([[[-1e4, 1e4], [1e4, -88.0], [88.0, 1e4]]], jnp.float32)  # (1, k=3, 2)
    h, idx = mj.activations.maxout(z)
    dz = mj.activations.maxout_backward(jnp.ones_like(h), idx, 3)
    np.testing.assert_array_equal(h, [[1e4, 1e4]])
    assert np.isfinite(dz).all() and float(dz.sum()) == 2.0


def test_jit_and_vmap_unchanged():
    spec = mj.MLPSpec((5, 8, 3), activation="tanh", reg=0.1)
    rng = np.random.default_rng(0)
    x, y = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32), jnp.asarray(rng.integers(0, 3, 6))
    params = mj.init_params(jax.random.key(0), spec)
    np.testing.assert_allclose(jax.jit(mj.forward, static_argnums=2)(params, x, spec),
                               mj.forward(params, x, spec), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(mj.loss, static_argnums=3)(params, x, y, spec),
                               mj.loss(params, x, y, spec), rtol=1e-6)
    v, g = jax.jit(mj.backprop, static_argnums=3)(params, x, y, spec)
    v2, g2 = mj.backprop(params, x, y, spec)
    chex.assert_trees_all_close(g, g2, rtol=1e-5, atol=1e-7)
    # vmap over a stack of 4 parameter sets
    stacked = jax.vmap(lambda k: mj.init_params(k, spec))(jax.random.split(jax.random.key(1), 4))
    vs, gs = jax.vmap(mj.backprop, in_axes=(0, None, None, None))(stacked, x, y, spec)
    for i in range(4):
        vi, gi = mj.backprop(jax.tree.map(lambda a, i=i: a[i], stacked), x, y, spec)
        np.testing.assert_allclose(vs[i], vi, rtol=1e-5)
        chex.assert_trees_all_close(jax.tree.map(lambda a, i=i: a[i], gs), gi, rtol=1e-4,
                                    atol=1e-6)
    # reg as a traced array: one compiled function for many values
    f = jax.jit(lambda r: mj.loss(params, x, y, spec, hyper=spec.hyper()._replace(reg=r)))
    assert float(f(0.0)) < float(f(1.0))


def test_grads_keep_structure_and_dtype():
    spec = mj.MLPSpec((5, 8, 3), activation="maxout", bias=True)
    params = mj.init_params(jax.random.key(0), spec)
    _, grads = mj.backprop(params, np.ones((2, 5)), np.array([0, 2]), spec)
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)


def test_every_array_keeps_the_specs_dtype_with_float64_enabled(x64):
    """With float64 on (as a float64 user runs), a float32 net stays float32: its params,
    the loss (squared loss on float64 targets included) and every gradient, also with reg
    given as a float64 numpy scalar; float64 and bfloat16 nets keep theirs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4))  # float64
    for dtype in ("float32", "float64", "bfloat16"):
        for loss_name in ("softmax", "squared"):
            spec = mj.MLPSpec((4, 5, 3), loss=loss_name, dtype=dtype)
            params = mj.init_params(jax.random.key(0), spec)
            y = labels_for(spec, 6, rng)
            for hyper in (None, spec.hyper()._replace(reg=np.float64(0.1))):
                value, grads = mj.backprop(params, x, y, spec, hyper=hyper)
                arrays = [mj.loss(params, x, y, spec, hyper=hyper), value,
                          *jax.tree.leaves(params), *jax.tree.leaves(grads)]
                assert {str(a.dtype) for a in arrays} == {dtype}, (dtype, loss_name, hyper)


def test_cache_holds_each_layers_input_and_pre_activation(x64):
    """forward_with_cache is evaluation mode unless asked (no key needed, dropout on in the
    spec), and its cache is what its docstring promises, against numpy: each layer's input
    x and pre-activation z (the last z is the scores), each hidden layer's activation a."""
    spec = mj.MLPSpec((4, 5, 6, 3), activation="tanh", dropout=0.5, dtype="float64")
    params = mj.init_params(jax.random.key(0), spec)
    h = np.random.default_rng(0).normal(size=(7, 4))
    scores, cache = mj.network.forward_with_cache(params, h, spec)
    assert len(cache) == 3
    for layer, p in enumerate(params):
        z = h @ np.asarray(p["W"]).T + np.asarray(p["b"])
        np.testing.assert_allclose(cache[layer]["x"], h, rtol=1e-13)
        np.testing.assert_allclose(cache[layer]["z"], z, rtol=1e-13)
        if layer < 2:
            h = np.tanh(z)
            np.testing.assert_allclose(cache[layer]["a"], h, rtol=1e-13)
            assert "mask" not in cache[layer]
    np.testing.assert_array_equal(cache[-1]["z"], scores)


@pytest.mark.parametrize("W_shape", [(3, 4), (2, 3, 4)], ids=["plain", "maxout"])
def test_affine_backward_is_the_vjp_of_affine(W_shape, x64):
    """dW, db, dx against jax.vjp of the affine map, for plain and maxout weights; dx is
    skipped only when asked (need_dx=False, the first layer's)."""
    rng = np.random.default_rng(0)
    x, W, b = rng.normal(size=(5, 4)), rng.normal(size=W_shape), rng.normal(size=W_shape[:-1])
    z, vjp = jax.vjp(mj.layers.affine, x, W, b)
    dz = rng.normal(size=z.shape)
    want_dx, want_dW, want_db = vjp(jnp.asarray(dz))
    dW, db, dx = mj.layers.affine_backward(dz, x, W)
    for got, want in [(dW, want_dW), (db, want_db), (dx, want_dx)]:
        np.testing.assert_allclose(got, want, rtol=1e-13)
    assert mj.layers.affine_backward(dz, x, W, need_dx=False)[2] is None


def test_only_a_jax_random_key_is_taken_as_a_key():
    spec = mj.MLPSpec((4, 5, 3), dropout=0.5)
    params = mj.init_params(jax.random.key(0), spec)
    for bad in (None, 0, 1.5, [0, 1], "0"):
        with pytest.raises(TypeError, match=r"^training mode with dropout=0.5, input_noise=0.0 "
                           r"needs a jax.random key, e.g. jax.random.key\(0\); got "):
            mj.forward(params, np.ones((2, 4)), spec, key=bad, train=True)


def test_bfloat16_stays_bfloat16_and_near_float32():
    """Every activation and every loss in bfloat16: in training mode (dropout and noise on)
    the loss and every gradient stay bfloat16 (a float32 constant anywhere would upcast the
    whole backward), and the gradients are float32's within bfloat16's rounding."""
    dtype, tol = "bfloat16", 0.15  # 3x the worst relative difference seen, 0.051
    losses = mj.LOSS_NAMES * 2  # every activation once, every loss at least once
    for act, loss_name in zip(mj.ACTIVATION_NAMES, losses):
        binary = loss_name in ("logistic", "hinge")
        spec32 = mj.MLPSpec((4, 6, 6, 1 if binary else 3), activation=act, loss=loss_name,
                            dropout=0.3, input_noise=0.1)
        spec = dataclasses.replace(spec32, dtype=dtype)
        params32 = mj.init_params(jax.random.key(0), spec32)
        params = jax.tree.map(lambda a: a.astype(dtype), params32)
        x = np.asarray(jax.random.normal(jax.random.key(1), (8, 4)))
        y = labels_for(spec, 8, np.random.default_rng(2))
        value, grads = mj.backprop(params, x, y, spec, key=jax.random.key(3), train=True)
        got = {str(a.dtype) for a in [value, *jax.tree.leaves(grads)]}
        assert got == {dtype}, (act, loss_name, got)
        # Against float32 from the same (rounded) params; in eval mode, since the noise
        # drawn in half precision is not float32's noise rounded.
        _, grads = mj.backprop(params, x, y, spec)
        _, grads32 = mj.backprop(jax.tree.map(lambda a: a.astype("float32"), params),
                                 x, y, spec32)
        for g, g32 in zip(jax.tree.leaves(grads), jax.tree.leaves(grads32)):
            g, g32 = np.asarray(g, np.float32), np.asarray(g32)
            scale = np.abs(g32).max() + 1e-3
            assert np.abs(g - g32).max() <= tol * scale, (act, loss_name)


def test_dropout_is_inverted_and_identity_at_eval():
    spec = mj.MLPSpec((50, 400, 3), activation="identity", dropout=0.25)
    params = mj.init_params(jax.random.key(0), spec)
    x = np.ones((4, 50), np.float32)
    _, cache = mj.network.forward_with_cache(params, x, spec, key=jax.random.key(1), train=True)
    mask = np.asarray(cache[0]["mask"])
    assert set(np.unique(mask)) == {0.0, np.float32(1 / 0.75)}
    assert abs((mask == 0).mean() - 0.25) < 0.03
    np.testing.assert_array_equal(mj.forward(params, x, spec),
                                  mj.forward(params, x, spec, key=jax.random.key(1)))
    a = mj.forward(params, x, spec, key=jax.random.key(1), train=True)
    b = mj.forward(params, x, spec, key=jax.random.key(1), train=True)
    np.testing.assert_array_equal(a, b)  # same key, same result
    # hyper's rate replaces the spec's default (a sweep passes it as an array)
    half = dataclasses.replace(spec, dropout=0.5)
    over = spec.hyper()._replace(dropout=jnp.asarray(0.5))
    c = mj.forward(params, x, spec, key=jax.random.key(1), train=True, hyper=over)
    np.testing.assert_array_equal(c, mj.forward(params, x, half, key=jax.random.key(1),
                                                train=True))
    assert not np.array_equal(c, a)
    y, kw = np.array([0, 1, 2, 0]), dict(key=jax.random.key(1), train=True)
    value = mj.loss(params, x, y, spec, hyper=over, **kw)
    assert value == mj.loss(params, x, y, half, **kw) != mj.loss(params, x, y, spec, **kw)
    chex.assert_trees_all_equal(mj.backprop(params, x, y, spec, hyper=over, **kw),
                                mj.backprop(params, x, y, half, **kw))


BAD = [
    (dict(sizes=(3,)), "at least an input and an output"),
    (dict(sizes=(3, 0, 2)), "positive int"),
    (dict(sizes=(3, 2.5, 2)), "positive int"),
    (dict(sizes=(3, 2), activation="relux"),
     r"^unknown activation 'relux'; expected one of relu, leaky_relu, elu, gelu, gelu_tanh, "
     r"silu, sigmoid, tanh, maxout, identity, or an Activation\(name, fn, deriv\) of your own$"),
    (dict(sizes=(3, 2), loss="hingee"),
     r"^unknown loss 'hingee'; expected one of softmax, svm, logistic, hinge, squared, or a "
     r"Loss\(name, value, grad, labels\) of your own$"),
    (dict(sizes=(3, 2), reg=-1.0), "reg must be >= 0"),
    (dict(sizes=(3, 2), dropout=1.0), r"\[0, 1\)"),
    (dict(sizes=(3, 2), dropout=-0.1), "dropout must be >= 0"),
    (dict(sizes=(3, 2), loss="logistic"), "one output score"),
    (dict(sizes=(3, 2), init="kaiming"), "he, xavier, normal"),
    # a user's functions are tried once on a tiny input, with the signature expected
    (dict(sizes=(3, 4, 2), activation=mj.Activation("sp", jax.nn.softplus, lambda z: z)),
     r"^activation 'sp': deriv failed on a \(2, 3\) float32 array; expected deriv\(z, a\) "
     r"-> da/dz, elementwise: TypeError: .*positional argument"),
    (dict(sizes=(3, 4, 2), activation=mj.Activation("s", jnp.sum, lambda z, a: z)),
     r"^activation 's': fn must return an array of z's shape \(expected fn\(z\) -> a, "
     r"elementwise\); on a \(2, 3\) array it returned shape \(\)$"),
    (dict(sizes=(3, 2), loss=mj.Loss("l1", lambda s, y: abs(s - y).sum(1),
                                      lambda s, y: jnp.sign(s - y).sum(1), labels="real")),
     r"^loss 'l1': grad must return shape \(2, 2\) for scores of shape \(2, 2\) "
     r"\(expected grad\(scores \(N, C\), y\) -> \(N, C\)\); it returned shape \(2,\)$"),
    (dict(sizes=(3, 2), loss=mj.Loss("l", lambda s: s, lambda s, y: s)),
     r"^loss 'l': value failed on scores of shape \(2, 2\) and labels of shape \(2,\); "
     r"expected value\(scores \(N, C\), y\) -> \(N,\): TypeError"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_spec(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mj.MLPSpec(**kwargs)


def test_bad_inputs_name_expected_and_given():
    spec = mj.MLPSpec((4, 5, 3))
    params = mj.init_params(jax.random.key(0), spec)
    x, y = np.zeros((6, 4)), np.zeros(6, int)
    cases = [
        (lambda: mj.forward(params, np.zeros((6, 5)), spec), r"shape \(N, 4\).*\(6, 5\)"),
        (lambda: mj.forward(params, np.zeros(4), spec), r"shape \(N, 4\)"),
        (lambda: mj.loss(params, x, np.zeros(5, int), spec), r"shape \(6,\).*\(5,\)"),
        (lambda: mj.loss(params, x, np.zeros(6), spec), "integer class labels"),
        (lambda: mj.loss(params, x, np.full(6, 3), spec), r"labels in \[0, 2\]"),
        (lambda: mj.loss(params, x, np.full(6, -1), spec), r"labels in \[0, 2\]"),
        (lambda: mj.init_params(0, spec),
         r"^init_params needs a jax.random key, e.g. jax.random.key\(0\); got 0$"),
        (lambda: mj.forward(params[:1], x, spec), "tuple of 2 layer dicts"),
        (lambda: mj.forward((params[0], {"W": params[1]["W"]}), x, spec), "keys"),
        (lambda: mj.forward((params[0], {"W": np.zeros((3, 4)), "b": np.zeros(3)}), x, spec),
         r"W2 has shape \(3, 4\).*needs \(3, 5\)"),
        (lambda: mj.validate(params, np.where(np.eye(6, 4), np.nan, 0), y, spec),
         "non-finite value"),
        (lambda: mj.forward(params, x, mj.MLPSpec((4, 5, 3), dropout=0.5), train=True),
         r"^training mode with dropout=0.5, input_noise=0.0 needs a jax.random key, e.g. "
         r"jax.random.key\(0\); got None$"),
    ]
    for call, match in cases:
        with pytest.raises((ValueError, TypeError), match=match):
            call()


def test_predicted_labels_in_each_losss_convention():
    """What accuracy compares with the labels: the top class (numpy's argmax, first of
    a tie), or the one score's sign as 0/1 (logistic) or -1/+1 (hinge), a score of exactly
    0 counting as the negative class; no labels for real-valued targets."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 4))
    scores[3] = [0.5, 2.0, 2.0, -1.0]  # a tie: the first
    kinds = {name: mj.losses.get_loss(name).labels for name in
             ("softmax", "svm", "logistic", "hinge", "squared")}
    for name in ("softmax", "svm"):
        got = mj.losses.predicted_labels(jnp.asarray(scores), kinds[name])
        np.testing.assert_array_equal(got, np.argmax(scores, axis=1))
    one = np.array([[-1.5], [0.0], [0.7], [1e-30], [1.0], [0.5], [-1e-30]])
    want01 = np.array([0, 0, 1, 1, 1, 1, 0])
    got = mj.losses.predicted_labels(jnp.asarray(one), kinds["logistic"])
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, want01)
    got = mj.losses.predicted_labels(jnp.asarray(one), kinds["hinge"])
    np.testing.assert_array_equal(got, 2 * want01 - 1)
    assert mj.losses.predicted_labels(jnp.asarray(scores), kinds["squared"]) is None


@pytest.mark.parametrize("loss_name,bad,match", [
    ("logistic", [0, 1, 2, 1], r"\{0, 1\}.*found \[2\]"),
    ("logistic", [-1, 1, 1, 1], r"\{0, 1\}"),
    ("hinge", [0, 1, 1, 0], r"\{1, -1\}|\{-1, 1\}"),
])
def test_binary_labels_checked(loss_name, bad, match):
    spec = mj.MLPSpec((2, 3, 1), loss=loss_name)
    params = mj.init_params(jax.random.key(0), spec)
    with pytest.raises(ValueError, match=match):
        mj.loss(params, np.zeros((4, 2)), np.array(bad), spec)


@pytest.mark.parametrize("loss_name", mj.LOSS_NAMES)
def test_a_nan_input_gives_a_nan_loss(loss_name):
    """NaN in x made NaN gradients but a finite loss where ReLU's or a hinge's zero side
    hid it: the loss must say NaN too, for every activation and loss."""
    C = 1 if loss_name in ("logistic", "hinge") else 3
    x = np.ones((4, 5), np.float32)
    x[0, 2] = np.nan
    for act in mj.ACTIVATION_NAMES:
        spec = mj.MLPSpec((5, 6, C), activation=act, loss=loss_name)
        params = mj.init_params(jax.random.key(0), spec)
        y = labels_for(spec, 4, np.random.default_rng(0))
        assert np.isnan(mj.loss(params, x, y, spec)), act
        assert np.isnan(mj.backprop(params, x, y, spec)[0]), act
        assert np.isnan(mj.loss(params[1:], np.full((4, 6), np.nan), y,
                                mj.MLPSpec((6, C), loss=loss_name))), act


def test_value_checks_skipped_under_jit_not_shape_checks():
    spec = mj.MLPSpec((4, 3))
    params = mj.init_params(jax.random.key(0), spec)
    f = jax.jit(mj.loss, static_argnums=3)
    f(params, np.zeros((2, 4)), np.array([0, 9]), spec)  # no concrete values: no sync, no error
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        f(params, np.zeros((2, 5)), np.array([0, 1]), spec)


def test_input_noise_is_gaussian_with_its_std_in_training_only(x64):
    """A 3-3 linear classifier with W = I and b = 0 returns its input, so train-mode
    scores minus x are the noise itself: mean 0, std sigma, uncorrelated; none at eval."""
    spec = mj.MLPSpec((3, 3), input_noise=0.5, dtype="float64")
    params = ({"W": jnp.eye(3), "b": jnp.zeros(3)},)
    x = np.random.default_rng(0).normal(size=(40_000, 3))
    noise = np.asarray(mj.forward(params, x, spec, key=jax.random.key(0), train=True)) - x
    np.testing.assert_allclose(noise.mean(0), 0.0, atol=0.5 * 4 / np.sqrt(40_000))
    np.testing.assert_allclose(noise.std(0), 0.5, rtol=0.02)
    assert np.abs(np.corrcoef(noise.T) - np.eye(3)).max() < 0.03
    np.testing.assert_array_equal(mj.forward(params, x, spec, train=False), x)


def test_training_mode_draws_noise_and_each_layers_mask_from_its_own_key():
    """key splits into one key per layer: the first for input noise, then one per hidden
    layer's dropout mask (so layers never share a mask); with nothing random, training
    mode needs no key at all."""
    spec = mj.MLPSpec((4, 6, 6, 3), activation="tanh", dropout=0.5, input_noise=0.2)
    params = mj.init_params(jax.random.key(0), spec)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    key = jax.random.key(7)
    _, cache = mj.network.forward_with_cache(params, x, spec, key=key, train=True)
    keys = jax.random.split(key, 3)
    np.testing.assert_array_equal(
        cache[0]["x"], x + 0.2 * np.asarray(jax.random.normal(keys[0], x.shape)))
    for layer in (0, 1):
        np.testing.assert_array_equal(cache[layer]["mask"], mj.layers.dropout_mask(
            keys[layer + 1], 0.5, (5, 6), jnp.float32))
    assert not np.array_equal(cache[0]["mask"], cache[1]["mask"])
    plain = mj.MLPSpec((4, 6, 3))
    np.testing.assert_array_equal(mj.forward(mj.init_params(key, plain), x, plain, train=True),
                                  mj.forward(mj.init_params(key, plain), x, plain))


def test_what_the_spec_lacks_a_hyper_cannot_add():
    """spec.py's contract: a spec with dropout 0 has no dropout in its program, whatever a
    Hyper says, and likewise input noise; a Hyper's value for what the spec lacks changes
    nothing."""
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    key = jax.random.key(7)
    for has, lacks in (("dropout", "input_noise"), ("input_noise", "dropout")):
        spec = mj.MLPSpec((4, 6, 3), activation="tanh", **{has: 0.3})
        params = mj.init_params(jax.random.key(0), spec)
        np.testing.assert_array_equal(
            mj.forward(params, x, spec, hyper=spec.hyper()._replace(**{lacks: 0.5}), key=key,
                       train=True),
            mj.forward(params, x, spec, key=key, train=True))


def test_hyperparameters_as_float32_arrays_keep_a_half_precision_forward_in_its_dtype():
    """A sweep passes each Hyper as float32 arrays (one entry per configuration); in a
    bfloat16 network the noise std is cast to bfloat16 where it is used, so the noisy input
    and the scores stay bfloat16."""
    spec = mj.MLPSpec((4, 6, 3), activation="tanh", dropout=0.2, input_noise=0.2,
                      dtype="bfloat16")
    params = mj.init_params(jax.random.key(0), spec)
    hyper = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), spec.hyper())
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    scores, cache = mj.network.forward_with_cache(params, x, spec, hyper=hyper,
                                                  key=jax.random.key(1), train=True)
    assert scores.dtype == cache[0]["x"].dtype == jnp.bfloat16


@pytest.mark.parametrize("kwargs", [dict(activation="tanh", input_noise=0.3, dropout=0.2),
                                    dict(activation="maxout", bias=False, input_noise=0.3)])
def test_check_grads_with_input_noise(kwargs):
    """Input noise changes the first layer's input, so its dW must use the noisy x."""
    spec = mj.MLPSpec((4, 5, 5, 3), reg=0.05, dtype="float64", **kwargs)
    with jax.enable_x64(True):
        params = mj.init_params(jax.random.key(2), spec)
        rng = np.random.default_rng(2)
        x, y = rng.normal(size=(8, 4)), rng.integers(0, 3, 8)
        report = mj.check_grads(params, x, y, spec, key=jax.random.key(3), jit=False)
    assert report.passed, str(report)
