"""Layer norm: the forward against the paper's formula in numpy, the closed-form backward
against the staged (graph) derivation in numpy, jax.vjp and finite differences, and a
normalized network end to end (gradient check, training, checkpoint)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import labels_for

import mlp_jax as mj
from mlp_jax import checkpoint, layers, optim, train


def _layernorm_numpy(z, gamma, beta, eps):
    """Ba et al. 2016, eq. 4, per example: mu = (1/H) sum_i a_i, sigma = sqrt((1/H)
    sum_i (a_i - mu)^2), then gamma (a - mu) / sigma + beta (eps inside the root)."""
    out = np.empty_like(z)
    for n in range(z.shape[0]):
        mu = sum(z[n]) / len(z[n])
        sigma = np.sqrt(sum((v - mu) ** 2 for v in z[n]) / len(z[n]) + eps)
        out[n] = gamma * (z[n] - mu) / sigma + beta
    return out


def _norm_backward_staged(dy, z, gamma, eps, axis):
    """CS231n's computational-graph backward, one node at a time (not the closed form)."""
    M = z.shape[axis]
    mu = z.mean(axis, keepdims=True)
    xmu = z - mu
    sq = xmu ** 2
    var = sq.mean(axis, keepdims=True)
    sqrtvar = np.sqrt(var + eps)
    ivar = 1 / sqrtvar
    xhat = xmu * ivar
    dxhat = dy * gamma
    divar = (dxhat * xmu).sum(axis, keepdims=True)
    dxmu1 = dxhat * ivar
    dsqrtvar = -divar / sqrtvar ** 2
    dvar = 0.5 * dsqrtvar / sqrtvar
    dsq = np.ones_like(z) / M * dvar
    dxmu2 = 2 * xmu * dsq
    dx1 = dxmu1 + dxmu2
    dmu = -dx1.sum(axis, keepdims=True)
    dx2 = np.ones_like(z) / M * dmu
    return dx1 + dx2, (dy * xhat).sum(0), dy.sum(0)


def test_network_forward_with_layer_norm_matches_the_papers_formula(x64):
    spec = mj.MLPSpec((4, 6, 5, 3), activation="tanh", norm="layernorm", norm_eps=1e-3,
                      dtype="float64")
    rng = np.random.default_rng(0)
    params = mj.init_params(jax.random.key(0), spec)
    params = tuple({k: np.asarray(v) + 0.3 * rng.normal(size=np.shape(v)) for k, v in p.items()}
                   for p in params)
    x = rng.normal(size=(7, 4))
    h = x
    for p in params[:-1]:
        h = np.tanh(_layernorm_numpy(h @ p["W"].T + p["b"], p["gamma"], p["beta"], 1e-3))
    expected = h @ params[-1]["W"].T + params[-1]["b"]
    np.testing.assert_allclose(mj.forward(params, x, spec), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1])
def test_closed_form_backward_equals_the_staged_graph_vjp_and_differences(axis, x64):
    """axis 1 is layer norm; axis 0 is batch norm's training mode (the same formula over
    the batch)."""
    rng = np.random.default_rng(axis)
    z, dy = rng.normal(size=(6, 5)) * 3 + 1, rng.normal(size=(6, 5))
    gamma, beta = rng.normal(size=5), rng.normal(size=5)
    y, cache = layers.normalize(z, gamma, beta, 1e-5, axis=axis)
    hand = layers.normalize_backward(dy, cache, gamma, axis=axis)
    staged = _norm_backward_staged(dy, z, gamma, 1e-5, axis)
    _, vjp = jax.vjp(lambda z, g, b: layers.normalize(z, g, b, 1e-5, axis)[0], z, gamma, beta)
    for h, s, a in zip(hand, staged, vjp(jnp.asarray(dy))):
        np.testing.assert_allclose(h, s, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(h, a, rtol=1e-10, atol=1e-12)
    eps = 1e-6  # central differences of sum(dy * y) with respect to z
    f = lambda z: float(np.sum(dy * np.asarray(layers.normalize(z, gamma, beta, 1e-5, axis)[0])))  # noqa: E731
    fd = np.zeros_like(z)
    for i in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[i] = eps
        fd[i] = (f(z + e) - f(z - e)) / (2 * eps)
    np.testing.assert_allclose(hand[0], fd, rtol=1e-6, atol=1e-8)


def test_a_constant_row_normalizes_to_beta_and_stays_finite(x64):
    z = np.array([[2.0, 2.0, 2.0], [1.0, -1.0, 3.0]])
    gamma, beta = np.array([1.5, 2.0, 0.5]), np.array([0.1, -0.2, 0.3])
    y, cache = layers.normalize(z, gamma, beta, 1e-5, axis=1)
    np.testing.assert_array_equal(np.asarray(y)[0], beta)
    grads = layers.normalize_backward(np.ones_like(z), cache, gamma, axis=1)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


@pytest.mark.parametrize("act,loss_name", [("relu", "softmax"), ("gelu", "svm"),
                                           ("sigmoid", "logistic"), ("leaky_relu", "hinge"),
                                           ("elu", "squared")])
def test_layer_norm_net_hand_backprop_passes_the_gradient_check(act, loss_name):
    C = 1 if loss_name in ("logistic", "hinge") else 3
    spec = mj.MLPSpec((4, 6, 6, C), activation=act, loss=loss_name, norm="layernorm",
                      reg=0.1, dropout=0.3)
    params = mj.init_params(jax.random.key(1), spec)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 4))
    report = mj.check_grads(params, x, labels_for(spec, 9, rng), spec, key=jax.random.key(2))
    assert report.passed, report
    assert report.worst_autodiff < 1e-10
    assert {leaf.name for leaf in report.leaves} >= {"gamma1", "beta2"}
    assert "norm=layernorm, reg=0.1, " in report.spec_summary  # no statistics mode


@pytest.mark.parametrize("kwargs,match", [
    (dict(norm="group"), r"unknown norm 'group'; expected None or one of batchnorm, "
                         r"layernorm$"),
    (dict(norm="layernorm", activation="maxout"), "with maxout is not supported"),
    (dict(norm="layernorm", norm_eps=0.0), "norm_eps must be > 0"),
])
def test_bad_norm_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mj.MLPSpec((3, 4, 2), **kwargs)


def test_a_layer_norm_net_trains_checkpoints_and_resumes(tmp_path):
    """gamma and beta are params like W and b: trained, saved, loaded back bitwise; the
    linear classifier and the output layer have none."""
    from mlp_jax import data

    ds = data.spiral()
    spec = mj.MLPSpec((2, 32, 3), norm="layernorm")
    params = mj.init_params(jax.random.key(0), spec)
    assert set(params[0]) == {"W", "b", "gamma", "beta"} and set(params[1]) == {"W", "b"}
    path = str(tmp_path / "c.npz")
    result = train.fit(spec, ds, optim.adam(1e-2), epochs=30, batch_size=100,
                       key=jax.random.key(0), checkpoint_path=path)
    assert result.history[-1]["train_acc"] > 0.8
    assert not np.allclose(result.state.params[0]["gamma"], 1.0)
    loaded = checkpoint.load(path, template=result.state, spec=spec)
    for a, b in zip(jax.tree.leaves(loaded.state), jax.tree.leaves(result.state)):
        np.testing.assert_array_equal(np.asarray(jax.random.key_data(a) if
                                                 jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
                                                 else a),
                                      np.asarray(jax.random.key_data(b) if
                                                 jnp.issubdtype(b.dtype, jax.dtypes.prng_key)
                                                 else b))
