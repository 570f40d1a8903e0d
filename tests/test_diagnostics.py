"""Diagnostics against hand-built cases and numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlp_jax as mj
from mlp_jax import data, diagnostics, optim, train


def test_dead_units_counted_exactly():
    spec = mj.MLPSpec((2, 4, 3))
    params = mj.init_params(jax.random.key(0), spec)
    W = np.array(params[0]["W"])
    b = np.zeros(4, np.float32)
    b[[1, 3]] = -1e3  # these two units can never fire on this data
    params = ({"W": jnp.asarray(W), "b": jnp.asarray(b)}, params[1])
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    assert diagnostics.unit_stats(params, x, spec)[0]["dead"] == 0.5
    leaky = mj.MLPSpec((2, 4, 3), activation="leaky_relu")
    assert diagnostics.unit_stats(params, x, leaky)[0]["dead"] == 0.0  # slope never 0


def test_saturation_of_big_sigmoid_inputs():
    spec = mj.MLPSpec((2, 8, 3), activation="sigmoid", init="normal", weight_scale=100.0)
    params = mj.init_params(jax.random.key(0), spec)
    x = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    z = x @ np.asarray(params[0]["W"]).T
    s = 1 / (1 + np.exp(-z))
    d = s * (1 - s)
    expected = np.mean((d > 0) & (d < 1e-2))
    got = diagnostics.unit_stats(params, x, spec)[0]["saturated"]
    assert got == pytest.approx(expected, abs=0.02) and got > 0.2


@pytest.mark.parametrize("loss_name,C", [("softmax", 10), ("svm", 10)])
def test_initial_loss_check(loss_name, C):
    spec = mj.MLPSpec((20, 50, C), loss=loss_name, init="normal", weight_scale=1e-4)
    params = mj.init_params(jax.random.key(0), spec)
    rng = np.random.default_rng(0)
    r = diagnostics.initial_loss(params, rng.normal(size=(64, 20)), rng.integers(0, C, 64), spec)
    assert r["ok"] and r["expected"] == pytest.approx(np.log(C) if loss_name == "softmax" else 9)


def test_update_ratio_is_lr_times_grad_over_weight_for_sgd():
    spec = mj.MLPSpec((3, 4, 2))
    params = mj.init_params(jax.random.key(0), spec)
    x, y = np.ones((5, 3), np.float32), np.array([0, 1, 0, 1, 1])
    _, grads = mj.backprop(params, x, y, spec)
    opt = optim.sgd(0.01)
    updates, _ = opt.update(grads, opt.init(params))
    expected = [0.01 * np.linalg.norm(g["W"]) / np.linalg.norm(p["W"])
                for g, p in zip(grads, params)]
    np.testing.assert_allclose(diagnostics.update_ratios(params, updates), expected, rtol=1e-5)


def test_callback_adds_rows():
    ds = data.spiral()
    spec = mj.MLPSpec((2, 16, 16, 3))
    opt = optim.sgd(0.5)
    cb = diagnostics.Diagnostics(spec, opt, ds.X_train[:100], ds.y_train[:100])
    r = train.fit(spec, ds, opt, epochs=4, batch_size=100, key=jax.random.key(0), eval_every=2,
                  progress=False, callbacks=[cb])
    row = r.history[-1]
    assert len(row["grad_norm"]) == 3 and len(row["dead"]) == 2
    assert all(0 < u < 1 for u in row["update_ratio"])
