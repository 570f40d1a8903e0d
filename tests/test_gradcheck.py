"""Hand backprop vs jax.grad vs finite differences (the references: autodiff and FD)."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import labels_for

import mlp_jax as mj
from mlp_jax.gradcheck import kink_problem, matrix_spec, rel_error


def test_matrix_cli_every_cell_passes(tmp_path):
    """`mlp-jax gradcheck` over every activation x loss x depth 1-4 x reg x dropout."""
    out = tmp_path / "cells.json"
    proc = subprocess.run([sys.executable, "-m", "mlp_jax.cli", "gradcheck", "--quiet",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = json.loads(out.read_text())
    assert len(cells) == 10 * 5 * 4 * 2 * 2
    assert all(c["passed"] for c in cells)
    assert max(c["autodiff"] for c in cells) <= 1e-10
    assert max(c["fd"] for c in cells) <= 1e-7
    assert sum(c["kink_entries"] for c in cells) > 0  # the kinks were really visited
    assert "800 cells, 0 failed" in proc.stdout


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "elu", "maxout"])
def test_kink_problem_sits_exactly_on_kinks(act, x64):
    """The matrix's row 0 must be exactly on the kinks, or the kink claim is hollow."""
    spec = matrix_spec(act, "svm", 3, 0.0, 0.0)
    params, x, y = kink_problem(spec, seed=0)
    scores, cache = mj.network.forward_with_cache(params, x, spec)
    for entry in cache[:-1]:
        assert np.all(np.asarray(entry["z"])[0] == 0.0)  # every hidden pre-activation, row 0
    s = np.asarray(scores)[0]
    assert s[0] - s[y[0]] + 1.0 == 0.0  # svm margin exactly 0
    spec_h = matrix_spec(act, "hinge", 3, 0.0, 0.0)
    params, x, y = kink_problem(spec_h, seed=0)
    s = np.asarray(mj.forward(params, x, spec_h))[0, 0]
    assert 1.0 - y[0] * s == 0.0


ELEMENTWISE = ["relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh",
               "identity"]


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activation_derivative_equals_autodiff_everywhere(name, x64):
    act = mj.activations.elementwise(name, leaky_slope=0.1, elu_alpha=0.7)
    z = jnp.array([-1e4, -30.0, -2.0, -1e-300, -0.0, 0.0, 1e-300, 0.5, 2.0, 30.0, 1e4])
    ref = jax.vmap(jax.grad(act.fn))(z)
    hand = act.deriv(z, act.fn(z))
    np.testing.assert_allclose(hand, ref, rtol=1e-12, atol=0)  # same maths, may round apart
    at_kinks = np.abs(np.asarray(z)) <= 1e-300
    np.testing.assert_array_equal(np.asarray(hand)[at_kinks], np.asarray(ref)[at_kinks])


def test_maxout_tie_goes_to_first_piece_in_both():
    z = jnp.array([[[1.0, 2.0], [1.0, 3.0]]])  # (N=1, k=2, out=2): unit 0 ties
    h, idx = mj.activations.maxout(z)
    dz_hand = mj.activations.maxout_backward(jnp.ones((1, 2)), idx, 2)
    dz_auto = jax.grad(lambda z: jnp.sum(mj.activations.maxout(z)[0]))(z)
    np.testing.assert_array_equal(dz_hand, dz_auto)
    np.testing.assert_array_equal(dz_hand, [[[1.0, 0.0], [0.0, 1.0]]])


SWEEP = [  # seeded: (activation, loss, hidden sizes, N, bias, reg, dropout, input noise)
    ("relu", "softmax", (7,), 3, True, 0.0, 0.0, 0.0),
    ("leaky_relu", "svm", (4, 6), 11, True, 0.3, 0.2, 0.0),
    ("elu", "logistic", (9, 3, 5), 5, False, 0.01, 0.0, 0.1),
    ("gelu", "hinge", (2,), 17, True, 0.0, 0.5, 0.0),
    ("gelu_tanh", "squared", (6, 6), 4, True, 1.0, 0.0, 0.0),
    ("silu", "softmax", (3, 8, 2), 9, True, 0.05, 0.1, 0.2),
    ("sigmoid", "svm", (10,), 6, False, 0.0, 0.0, 0.0),
    ("tanh", "squared", (5, 4, 3), 13, True, 0.2, 0.3, 0.0),
    ("maxout", "softmax", (4, 3), 7, True, 0.1, 0.0, 0.0),
    ("identity", "logistic", (3, 3), 2, True, 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("case", SWEEP, ids=[c[0] + "-" + c[1] for c in SWEEP])
def test_random_shapes(case):
    act, loss_name, hidden, N, bias, reg, p, noise = case
    rng = np.random.default_rng(len(hidden) * 100 + N)
    D = int(rng.integers(2, 7))
    C = 1 if loss_name in ("logistic", "hinge") else int(rng.integers(2, 6))
    spec = mj.MLPSpec((D, *hidden, C), activation=act, loss=loss_name, reg=reg, bias=bias,
                      dropout=p, input_noise=noise, maxout_k=3)
    params = mj.init_params(jax.random.key(N), spec)
    if bias:  # random biases too, not only the zeros of init
        params = tuple(dict(l, b=0.1 * jax.random.normal(jax.random.key(i), l["b"].shape))
                       for i, l in enumerate(params))
    x, y = rng.normal(size=(N, D)), labels_for(spec, N, rng)
    key = jax.random.key(1) if (p or noise) else None
    report = mj.check_grads(params, x, y, spec, key=key)
    assert report.passed, str(report)


def test_rel_error_is_cs231ns():
    assert rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert rel_error([1.0], [3.0]) == pytest.approx(0.5)
    assert rel_error([0.0], [1e-12]) == pytest.approx(1e-4)  # the 1e-8 floor


def softplus_spec(deriv):
    act = mj.Activation("softplus", jax.nn.softplus, deriv)
    return mj.MLPSpec((3, 5, 4), activation=act, loss="softmax", reg=0.01)


def test_user_activation_right_and_wrong():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.integers(0, 4, 6)
    good = softplus_spec(lambda z, a: jax.nn.sigmoid(z))
    params = mj.init_params(jax.random.key(0), good)
    assert mj.check_grads(params, x, y, good).passed
    wrong = softplus_spec(lambda z, a: jax.nn.sigmoid(z) * (1 - jax.nn.sigmoid(z)))
    report = mj.check_grads(params, x, y, wrong)
    assert not report.passed
    assert report.worst_autodiff > 1e-3 and report.worst_fd > 1e-3
    assert "FAIL" in str(report)


def test_user_loss_right_and_wrong():
    """A user's own loss: mean absolute error, kink at 0 declared via kink_state."""
    def value(s, y):
        return jnp.sum(jnp.where(s - y > 0, s - y, y - s), axis=1)

    def grad(s, y):
        return jnp.where(s - y > 0, 1.0, -1.0).astype(s.dtype)

    mae = mj.Loss("mae", value, grad, labels="real", kink_state=lambda s, y: s - y > 0)
    spec = mj.MLPSpec((3, 5, 2), activation="tanh", loss=mae)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    params = mj.init_params(jax.random.key(0), spec)
    assert mj.check_grads(params, x, y, spec).passed
    bad = mj.Loss("mae", value, lambda s, y: 0.5 * grad(s, y), labels="real")
    assert not mj.check_grads(params, x, y, mj.MLPSpec((3, 5, 2), "tanh", loss=bad)).passed
