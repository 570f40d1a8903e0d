"""Every forward formula against a reference written independently of it.

The gradient checks compare each hand derivative with jax.grad of *our* forward, so a
wrong forward with a matching derivative would pass them; these tests pin the forwards
themselves: activations against jax.nn (exact and tanh GELU included) or closed forms in
numpy, losses against jax.nn.log_softmax, CS231n's naive SVM loop, and numpy. At ordinary
points, exactly at the kinks, and at +-1e4; float32 and float64.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlp_jax as mj

Z = np.array([-1e4, -30.0, -3.0, -1.0, -0.3, -1e-3, 0.0, 1e-3, 0.3, 1.0, 3.0, 30.0, 1e4])
SLOPE, ALPHA = 0.1, 0.7


def _sigmoid_np(z):
    z = np.asarray(z, np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _gelu_tanh_np(z):
    return 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))


ACTIVATION_REFERENCES = {  # name -> independent reference, computed in float64
    "relu": lambda z: np.asarray(jax.nn.relu(z)),
    "leaky_relu": lambda z: np.asarray(jax.nn.leaky_relu(z, SLOPE)),
    "elu": lambda z: np.asarray(jax.nn.elu(z, ALPHA)),
    "gelu": lambda z: np.asarray(jax.nn.gelu(z, approximate=False)),
    "gelu_tanh": lambda z: np.asarray(jax.nn.gelu(z, approximate=True)),
    "silu": lambda z: np.asarray(jax.nn.silu(z)),
    "sigmoid": _sigmoid_np,
    "tanh": np.tanh,
    "identity": lambda z: z,
}


# rtol for the dtype, and an absolute term of its epsilon: ELU's exp(z) - 1 (kept for
# autodiff's sake, see activations.py) cancels near 0, and GELU(-30) is -0.0 vs -1e-196.
@pytest.mark.parametrize("dtype,rtol,atol", [("float64", 1e-13, 1e-16), ("float32", 2e-6, 1e-7)])
@pytest.mark.parametrize("name", list(ACTIVATION_REFERENCES))
def test_activation_forward_matches_reference(name, dtype, rtol, atol, x64):
    act = mj.activations.elementwise(name, leaky_slope=SLOPE, elu_alpha=ALPHA)
    z = jnp.asarray(Z, dtype)
    got = np.asarray(act.fn(z), np.float64)
    want = ACTIVATION_REFERENCES[name](np.asarray(z, np.float64))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    assert got[Z == 0.0][0] == want[Z == 0.0][0]  # exactly, at the kink


def test_built_ins_carry_their_own_names():
    """The name a report or error shows is the one the spec was given."""
    for name in set(mj.ACTIVATION_NAMES) - {"maxout"}:
        assert mj.activations.elementwise(name).name == name
    for name in mj.LOSS_NAMES:
        assert mj.losses.get_loss(name).name == name
    with pytest.raises(ValueError, match=r"^no elementwise activation named 'maxout'; expected "
                       r"one of relu, .*, identity \(maxout is handled by the network\), or an "
                       r"Activation\(name, fn, deriv\) of your own$"):
        mj.activations.elementwise("maxout")


def test_elementwise_defaults_are_the_lectures(x64):
    """Not given, leaky ReLU's slope is CS231n's 0.01 and ELU's alpha is 1."""
    z = jnp.asarray([-2.0, 3.0])
    np.testing.assert_allclose(mj.activations.elementwise("leaky_relu").fn(z), [-0.02, 3.0],
                               rtol=1e-15)
    np.testing.assert_allclose(mj.activations.elementwise("elu").fn(z), [np.expm1(-2.0), 3.0],
                               rtol=1e-15)


def test_gelu_tanh_reference_is_the_papers_formula(x64):
    """jax.nn.gelu(approximate=True) is Hendrycks & Gimpel's tanh form (so the reference
    above pins the constant 0.044715)."""
    z = np.linspace(-6, 6, 101)
    np.testing.assert_allclose(np.asarray(jax.nn.gelu(jnp.asarray(z), approximate=True)),
                               _gelu_tanh_np(z), rtol=1e-12, atol=1e-15)


def test_maxout_forward_is_the_max_over_pieces(x64):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 3, 4))
    z[0, :, 0] = 0.7  # a three-way tie
    h, idx = mj.activations.maxout(jnp.asarray(z))
    np.testing.assert_array_equal(np.asarray(h), z.max(axis=1))
    np.testing.assert_array_equal(np.asarray(idx)[:, 0, :], z.argmax(axis=1))  # first of a tie


# --- Losses, per example. -----------------------------------------------------------
def svm_loss_naive(scores, y):
    """CS231n assignment 1's naive multiclass SVM loss: a double loop, margin 1."""
    N, C = scores.shape
    out = np.zeros(N)
    for i in range(N):
        for j in range(C):
            if j == y[i]:
                continue
            margin = scores[i, j] - scores[i, y[i]] + 1.0
            if margin > 0:
                out[i] += margin
    return out


def logistic_naive(s, y):
    """-[y log sigma(s) + (1 - y) log(1 - sigma(s))], each log by the stable scalar identity
    log sigma(s) = -(max(-s, 0) + log1p(exp(-|s|)))."""
    def log_sigmoid(t):
        return -(max(-t, 0.0) + math.log1p(math.exp(-abs(t))))
    return np.array([-(yi * log_sigmoid(si) + (1 - yi) * log_sigmoid(-si))
                     for si, yi in zip(s[:, 0], y)])


def _scores(dtype, C, rng):
    s = rng.normal(size=(len(Z), C)) * 3
    s[:, 0] = Z  # extremes and exact zeros
    return s.astype(dtype)


# atol: the losses subtract terms as large as |s| (logistic: logaddexp(s, 0) - y s), so
# their rounding is absolute, eps * |s|: 7e-15 at s = 30 in float64.
@pytest.mark.parametrize("dtype,rtol,atol", [("float64", 1e-12, 1e-13), ("float32", 5e-6, 1e-5)])
def test_loss_values_match_references(dtype, rtol, atol, x64):
    rng = np.random.default_rng(1)
    n = len(Z)
    s = _scores(dtype, 4, rng)
    y = rng.integers(0, 4, n)
    s64 = s.astype(np.float64)
    L = mj.losses
    got = np.asarray(L.SOFTMAX.value(jnp.asarray(s), jnp.asarray(y)), np.float64)
    want = -np.asarray(jax.nn.log_softmax(jnp.asarray(s64), axis=1))[np.arange(n), y]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)

    got = np.asarray(L.SVM.value(jnp.asarray(s), jnp.asarray(y)), np.float64)
    np.testing.assert_allclose(got, svm_loss_naive(s64, y), rtol=rtol, atol=atol)

    s1 = s[:, :1]
    y01 = rng.integers(0, 2, n)
    got = np.asarray(L.LOGISTIC.value(jnp.asarray(s1), jnp.asarray(y01, dtype)), np.float64)
    np.testing.assert_allclose(got, logistic_naive(s64[:, :1], y01), rtol=rtol, atol=atol)

    ypm = 2 * rng.integers(0, 2, n) - 1
    got = np.asarray(L.HINGE.value(jnp.asarray(s1), jnp.asarray(ypm, dtype)), np.float64)
    np.testing.assert_allclose(got, np.maximum(0.0, 1.0 - ypm * s64[:, 0]), rtol=rtol, atol=atol)

    t = rng.normal(size=s.shape).astype(dtype)
    got = np.asarray(L.SQUARED.value(jnp.asarray(s), jnp.asarray(t)), np.float64)
    np.testing.assert_allclose(got, ((s64 - t.astype(np.float64)) ** 2).sum(1), rtol=rtol,
                               atol=atol)


def svm_grad_naive(scores, y):
    """The gradient in CS231n's naive SVM loop: each positive margin adds +1 to its class
    and -1 to the correct one (a margin exactly 0 adds nothing)."""
    N, C = scores.shape
    out = np.zeros((N, C))
    for i in range(N):
        for j in range(C):
            if j != y[i] and scores[i, j] - scores[i, y[i]] + 1.0 > 0:
                out[i, j] += 1.0
                out[i, y[i]] -= 1.0
    return out


@pytest.mark.parametrize("dtype,rtol,atol", [("float64", 1e-12, 1e-15), ("float32", 1e-6, 1e-7)])
def test_loss_gradients_and_kink_states_match_closed_forms(dtype, rtol, atol, x64):
    """Each Loss.grad against the lectures' closed form in numpy, and each kink_state against
    "this margin is positive", on scores that include every kink exactly."""
    rng = np.random.default_rng(2)
    n, L = len(Z), mj.losses
    s = _scores(dtype, 4, rng)
    y = rng.integers(0, 4, n)
    s[1, :] = 0.0
    s[1, y[1]] = 1.0  # every margin of row 1 exactly 0
    s64 = s.astype(np.float64)

    def check(loss, scores, labels, want):
        got = np.asarray(loss.grad(jnp.asarray(scores), jnp.asarray(labels)), np.float64)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)

    e = np.exp(s64 - s64.max(1, keepdims=True))
    check(L.SOFTMAX, s, y, e / e.sum(1, keepdims=True) - np.eye(4)[y])
    check(L.SVM, s, y, svm_grad_naive(s64, y))
    margins = s64 - s64[np.arange(n), y][:, None] + 1.0
    want_state = (margins > 0) & (np.arange(4) != y[:, None])
    np.testing.assert_array_equal(np.asarray(L.SVM.kink_state(jnp.asarray(s), jnp.asarray(y))),
                                  want_state)

    s1 = s[:, :1]
    y01 = rng.integers(0, 2, n).astype(dtype)
    check(L.LOGISTIC, s1, y01, (_sigmoid_np(s64[:, :1]) - y01[:, None]))
    ypm = (2 * rng.integers(0, 2, n) - 1).astype(dtype)
    s1 = s1.copy()
    s1[:2, 0] = ypm[:2]  # y s = 1: exactly on the hinge's margin
    hinge_margin = 1.0 - ypm * s1[:, 0].astype(np.float64)
    check(L.HINGE, s1, ypm, np.where(hinge_margin > 0, -ypm, 0.0)[:, None])
    np.testing.assert_array_equal(
        np.asarray(L.HINGE.kink_state(jnp.asarray(s1), jnp.asarray(ypm))), hinge_margin > 0)
    t = rng.normal(size=s.shape).astype(dtype)
    check(L.SQUARED, s, t, 2.0 * (s64 - t))


def test_hinge_losses_exactly_at_the_margin():
    """A score exactly on the margin costs exactly 0; a hair inside costs the hair."""
    L = mj.losses
    s = jnp.array([[1.0], [-1.0], [0.5]])
    y = jnp.array([1.0, -1.0, 1.0])
    np.testing.assert_array_equal(np.asarray(L.HINGE.value(s, y)), [0.0, 0.0, 0.5])
    scores = jnp.array([[2.0, 1.0, 0.0]])  # margins vs class 0: s_j - 2 + 1 = 0 and -1
    np.testing.assert_array_equal(np.asarray(L.SVM.value(scores, jnp.array([0]))), [0.0])
    np.testing.assert_array_equal(np.asarray(L.SVM.value(scores, jnp.array([2]))), [5.0])


def test_network_loss_is_mean_plus_reg_sum_of_squares(x64):
    """mj.loss = mean of the per-example losses + reg * sum W^2 (biases excluded), in numpy."""
    spec = mj.MLPSpec((3, 4, 2), activation="tanh", loss="softmax", reg=0.3, dtype="float64")
    params = mj.init_params(jax.random.key(0), spec)
    params = tuple(dict(p, b=p["b"] + 0.5) for p in params)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.integers(0, 2, 6)
    W1, b1 = np.asarray(params[0]["W"]), np.asarray(params[0]["b"])
    W2, b2 = np.asarray(params[1]["W"]), np.asarray(params[1]["b"])
    s = np.tanh(x @ W1.T + b1) @ W2.T + b2
    logp = s - np.log(np.exp(s).sum(1, keepdims=True))
    want = -logp[np.arange(6), y].mean() + 0.3 * ((W1**2).sum() + (W2**2).sum())
    assert float(mj.loss(params, x, y, spec)) == pytest.approx(want, rel=1e-13)
