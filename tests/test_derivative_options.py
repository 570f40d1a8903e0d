"""check_derivative beyond exact first derivatives of real functions: a stated accuracy
(an ODE adjoint), second derivatives, complex numbers, rules under vmap and jit,
nondeterministic rules, and inputs it cannot check. References: the adjoint of a 1e-12
tolerance solve, closed-form derivatives written here, finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.experimental.ode import odeint

import mlp_jax as mj
from experiments import derivative_options_corpus as corpus
from experiments.derivative_options_corpus import _sin_with


def _rhs(y, t, A):
    return jnp.tanh(A @ y) - 0.3 * y


def ode(y0, A):
    """The issue's ODE: dy/dt = tanh(A y) - 0.3 y, 3 states, t in y0's dtype."""
    return odeint(_rhs, y0, jnp.asarray([0.0, 1.0], y0.dtype), A)


def tight_ode(y0, A):
    return odeint(_rhs, y0, jnp.asarray([0.0, 1.0], y0.dtype), A, rtol=1e-12, atol=1e-12)


def _ode_inputs(seed, dtype):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=3), dtype), jnp.asarray(rng.normal(size=(3, 3)), dtype)


def _wrong_in_largest(f, y0, A, delta):
    """f's VJP with its Jacobian's largest entry (w.r.t. A) times 1 + delta."""
    J = jax.jacrev(f, argnums=1)(y0, A)
    i = np.unravel_index(int(np.argmax(np.abs(J))), J.shape)

    def vjp(y0, A, g):
        dy, dA = jax.vjp(f, y0, A)[1](g)
        return dy, dA.at[i[2:]].add(delta * J[i] * g[i[:2]])
    return vjp


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-6), ("float32", 1e-3)])
def test_an_ode_adjoint_passes_at_its_stated_accuracy_and_10x_off_fails(dtype, rtol):
    with jax.enable_x64(True):
        y0, A = _ode_inputs(0, dtype)
        exact = mj.check_derivative(ode, y0, A)
        report = mj.check_derivative(ode, y0, A, rtol=rtol)
        wrong = mj.check_derivative(ode, y0, A, rtol=rtol,
                                    vjp=_wrong_in_largest(ode, y0, A, 10 * rtol))
        # its measured error, against the adjoint of a 1e-12 tolerance solve
        J, Jt = (np.asarray(jax.jacrev(g, argnums=1)(y0.astype("float64"),
                                                     A.astype("float64")))
                 for g in (ode, tight_ode))
    assert report.passed, report
    assert not wrong.passed and wrong.verdict == "FAIL", wrong
    assert 0 < report.error < rtol and "measured error" in str(report)
    assert report.stated == (rtol, 0.0) and "stated rtol" in str(report)
    if dtype == "float64":  # accurate to the solver's tolerance, not to rounding
        assert not exact.passed
        assert np.abs(J - Jt).max() / np.abs(Jt).max() < rtol


def test_a_more_accurate_reference_decides_where_the_forward_is_too_coarse():
    """Draw 6: the solver's own error makes finite differences of the default-tolerance
    forward differ from the true derivative by 6e-6 S, more than rtol 1e-6 allows; with
    reference= a 1e-12 solve (autodiff and finite differences of it) the adjoint passes,
    and 10 rtol off still fails."""
    with jax.enable_x64(True):
        y0, A = _ode_inputs(6, "float64")
        assert not mj.check_derivative(ode, y0, A, rtol=1e-6).passed
        report = mj.check_derivative(ode, y0, A, rtol=1e-6, reference=tight_ode)
        wrong = mj.check_derivative(ode, y0, A, rtol=1e-6, reference=tight_ode,
                                    vjp=_wrong_in_largest(ode, y0, A, 1e-5))
    assert report.passed and report.error < 1e-6, report
    assert not wrong.passed


def _jitter(x):
    """Noise of size 1e-8 at a scale far below the step, with no derivative of its own:
    a rough f (an adaptive solver's step decisions) whose JAX derivative is cos."""
    return lax.stop_gradient(1e-8 * jnp.sin(1e6 * x))


def test_rough_finite_differences_are_flagged_and_judge_nothing_alone():
    """Without an autodiff reference, finite differences of a rough f carry more error
    than rtol 1e-6 allows: the right derivative is UNDECIDED (not FAIL), one 10 rtol off
    is not PASS; the smooth reference decides both."""
    def rough(x):
        return jnp.sin(x) + _jitter(x)

    def rough_wrong(x):  # the same values, derivative cos (1 + 1e-5)
        s = jnp.sin(x)
        return s + _jitter(x) + 1e-5 * (s - lax.stop_gradient(s))
    with jax.enable_x64(True):
        x = jnp.linspace(-2.0, 2.0, 9, dtype=jnp.float64)
        right = mj.check_derivative(rough, x, rtol=1e-6)
        wrong = mj.check_derivative(rough_wrong, x, rtol=1e-6)
        decided = mj.check_derivative(rough, x, rtol=1e-6, reference=jnp.sin)
        decided_wrong = mj.check_derivative(rough_wrong, x, rtol=1e-6, reference=jnp.sin)
    assert right.verdict == "UNDECIDED" and right.undecided > 0 and right.nonsmooth > 0, right
    assert "UNDECIDED" in str(right) and not right.passed
    assert wrong.verdict != "PASS", wrong
    assert decided.passed, decided
    assert decided_wrong.verdict == "FAIL", decided_wrong


def _softplus_jvp(stop):
    f = jax.custom_jvp(lambda x: jnp.logaddexp(x, 0.0))
    grad = (lambda x: lax.stop_gradient(jax.nn.sigmoid(x))) if stop else jax.nn.sigmoid
    f.defjvp(lambda p, t: (f(p[0]), t[0] * grad(p[0])))
    return f


def _softplus_vjp(stop):
    f = jax.custom_vjp(lambda x: jnp.logaddexp(x, 0.0))
    grad = (lambda x: lax.stop_gradient(jax.nn.sigmoid(x))) if stop else jax.nn.sigmoid
    f.defvjp(lambda x: (f(x), x), lambda x, g: (g * grad(x),))
    return f


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("make", [_softplus_jvp, _softplus_vjp], ids=["custom_jvp", "custom_vjp"])
def test_a_right_first_derivative_with_a_wrong_second_fails_at_order_2(make, dtype):
    with jax.enable_x64(True):
        x = jnp.asarray(2 * np.random.default_rng(0).normal(size=(4, 3)), dtype)
        right = mj.check_derivative(make(False), x, order=2)
        first = mj.check_derivative(make(True), x)
        second = mj.check_derivative(make(True), x, order=2)
    assert right.passed and [r.order for r in right.higher] == [2], right
    assert first.passed
    assert not second.passed and second.failed_order == 2 and "FAIL (order 2)" in str(second)
    worst = second.higher[0].blocks[0].autodiff
    assert worst.hand == 0.0 and worst.reference != 0.0  # the stop_gradient's: 0


def test_third_order_of_a_hand_jvp():
    """x^3 with jvp 3 x^2 t: orders 1-3 against 6x and 6 (the hand jvp's own autodiff)."""
    cube = jax.custom_jvp(lambda x: x ** 3)
    cube.defjvp(lambda p, t: (p[0] ** 3, 3 * p[0] ** 2 * t[0]))
    x = jnp.asarray([0.5, -1.5, 2.0])
    report = mj.check_derivative(cube, x, order=3)
    assert report.passed and [r.order for r in report.higher] == [2, 3], report
    bad = jax.custom_jvp(lambda x: x ** 3)
    bad.defjvp(lambda p, t: (p[0] ** 3, 3 * lax.stop_gradient(p[0]) * p[0] * t[0]))
    assert mj.check_derivative(bad, x, order=3).failed_order == 2


def _quad(z, w):
    return jnp.sum(jnp.real(z * jnp.conj(z)) * w) + jnp.sum(jnp.imag(z ** 2))


def _quad_rule(conjugated):
    f = jax.custom_vjp(_quad)

    def bwd(res, g):
        z, w = res
        dz = 2 * w * jnp.conj(z) - 2j * z  # JAX's convention: d/dRe - i d/dIm
        return g * (jnp.conj(dz) if conjugated else dz), g * jnp.real(z * jnp.conj(z))
    f.defvjp(lambda z, w: (_quad(z, w), (z, w)), bwd)
    return f


@pytest.mark.parametrize("cdtype,fdtype", [("complex128", "float64"), ("complex64", "float32")])
def test_complex_rules_in_jaxs_convention_and_a_conjugated_one_fails(cdtype, fdtype):
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        z = jnp.asarray(rng.normal(size=5) + 1j * rng.normal(size=5), cdtype)
        w = jnp.asarray(rng.normal(size=5), fdtype)
        # the convention, by hand: the cotangent is (df/dRe z) - i (df/dIm z)
        assert np.allclose(jax.grad(_quad)(z, w), 2 * w * np.conj(z) - 2j * z, rtol=1e-5)
        right = mj.check_derivative(_quad_rule(False), z, w)
        wrong = mj.check_derivative(_quad_rule(True), z, w)

        def sinz(z):
            return jnp.sin(z) * z
        holomorphic = mj.check_derivative(sinz, z)
        by_hand = mj.check_derivative(sinz, z, vjp=lambda z, c: c * (jnp.cos(z) * z + jnp.sin(z)))
        by_hand_conj = mj.check_derivative(
            sinz, z, vjp=lambda z, c: c * jnp.conj(jnp.cos(z) * z + jnp.sin(z)))
        tangent = mj.check_derivative(sinz, z, jvp=lambda p, t: (
            sinz(p[0]), t[0] * (jnp.cos(p[0]) * p[0] + jnp.sin(p[0]))))
    assert right.passed and right.dtype == fdtype, right
    assert [b.input for b in right.blocks] == ["z.real", "z.imag", "w"]
    assert not wrong.passed
    failing = {b.input for b in wrong.blocks if not b.passed}
    assert failing == {"z.imag"}, wrong  # the conjugate flips the imaginary part only
    assert holomorphic.passed and [b.output for b in holomorphic.blocks] == [
        "out.real", "out.real", "out.imag", "out.imag"]
    assert by_hand.passed and tangent.passed and not by_hand_conj.passed


def test_a_float64_function_that_cannot_run_in_float32_is_measured_another_way():
    with jax.enable_x64(True):
        c = jnp.asarray(2.0, jnp.float64)
        x = jnp.asarray(np.random.default_rng(0).normal(size=4), jnp.float64)
        report = mj.check_derivative(lambda x: lax.mul(jnp.sin(x), c), x)
        wrong = mj.check_derivative(lambda x: lax.mul(jnp.sin(x), c), x,
                                    vjp=lambda x, g: g * 2.0 * jnp.cos(x) * (1 + 1e-12))
    assert report.passed, report
    assert "one ulp from the inputs" in report.noise_from
    assert not wrong.passed


@pytest.mark.parametrize("bwd,mistake", [(corpus._custom_vmap_bwd, "reversed"),
                                          (corpus._callback_bwd, "sum")],
                         ids=["custom_vmap", "pure_callback"])
def test_a_batching_rule_wrong_only_under_vmap_fails(bwd, mistake):
    """A hand batching rule that reverses the batch; a numpy backward that sums over axis
    0 (one example's rows, or, batched, the batch)."""
    x = jnp.linspace(-1.0, 1.0, 6)
    right = mj.check_derivative(_sin_with(bwd()), x)
    wrong = mj.check_derivative(_sin_with(bwd(mistake)), x)
    unbatched = mj.check_derivative(_sin_with(bwd(mistake)), x, batched=False)
    assert right.passed and right.vmapped.checked and right.jitted.checked, right
    assert not wrong.passed and not wrong.vmapped.passed and wrong.jitted.passed, wrong
    assert "under jax.vmap vs eager" in str(wrong)
    assert unbatched.vmapped.checked == 0 and unbatched.jitted.checked == 0


def _noisy_rule(scale, rng):
    """cos(x) g, plus a run-to-run wobble of ``scale`` relative (atomics' reordering)."""
    def np_noise(shape_like):
        return rng.uniform(-1, 1, np.shape(shape_like))

    def bwd(x, g):
        wobble = jax.pure_callback(np_noise, jax.ShapeDtypeStruct(x.shape, x.dtype), x,
                                   vmap_method="sequential")
        return g * jnp.cos(x) * (1 + scale * wobble)
    return _sin_with(bwd)


def test_a_nondeterministic_rule_is_judged_with_its_measured_spread():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float64)
        f = _noisy_rule(1e-12, rng)
        once = mj.check_derivative(f, x, batched=False)
        repeated = mj.check_derivative(f, x, repeats=4, batched=False)
        g = _noisy_rule(1e-12, rng)
        wrong = mj.check_derivative(g, x, repeats=4, batched=False,
                                    vjp=lambda x, c: c * jnp.cos(x) * (1 + 1e-10))
    assert not once.passed  # one run judged as the truth: 1e-12 is far beyond rounding
    assert repeated.passed and repeated.repeats == 4, repeated
    assert 1e-13 < repeated.spread < 3e-12 and "4 runs of the rule" in str(repeated)
    assert not wrong.passed


@pytest.mark.parametrize("options,match", [
    ({"order": 0}, "order must be an integer from 1 to 4; got 0"),
    ({"order": 5}, "order must be an integer from 1 to 4; got 5"),
    ({"order": 1.5}, "order must be an integer"),
    ({"rtol": -1e-3}, "rtol must be a positive finite number"),
    ({"rtol": 0.0}, "rtol must be a positive"),
    ({"rtol": "1e-3"}, "rtol must be a positive"),
    ({"rtol": float("nan")}, "rtol must be a positive"),
    ({"atol": -1.0}, "atol must be a non-negative finite number"),
    ({"repeats": 0}, "repeats must be an integer from 1 to 100"),
])
def test_bad_options_are_one_line(options, match):
    with pytest.raises(mj.DerivativeInputError, match=match) as e:
        mj.check_derivative(jnp.sin, jnp.ones(3), **options)
    assert "\n" not in str(e.value)


def test_what_cannot_be_checked_is_one_line():
    z = jnp.ones(3) + 1j * jnp.ones(3)
    with pytest.raises(mj.DerivativeInputError, match="jvp's tangent for out is real"):
        mj.check_derivative(jnp.sin, z, jvp=lambda p, t: (jnp.sin(p[0]),
                                                          jnp.real(t[0] * jnp.cos(p[0]))))

    def np_cos(x):
        return np.cos(x).astype(x.dtype)
    f = _sin_with(lambda x, g: g * jax.pure_callback(
        np_cos, jax.ShapeDtypeStruct(x.shape, x.dtype), x, vmap_method="sequential"))
    assert mj.check_derivative(f, jnp.ones(3)).passed  # first order: fine
    with pytest.raises(mj.DerivativeInputError, match="order 2 needs the derivative of the "
                                                      "order-1 rule") as e:
        mj.check_derivative(f, jnp.ones(3), order=2)
    assert "\n" not in str(e.value)
    g = _sin_with(lambda x, g: g * jax.pure_callback(
        np_cos, jax.ShapeDtypeStruct(x.shape, x.dtype), x))  # no vmap_method
    with pytest.raises(mj.DerivativeInputError, match="fails under jax.vmap.*batched=False"):
        mj.check_derivative(g, jnp.ones(3))


CLI_MODULE = '''
import jax, jax.numpy as jnp
from jax import lax
from jax.experimental.ode import odeint

def ode(y0, A):
    rhs = lambda y, t, A: jnp.tanh(A @ y) - 0.3 * y
    return odeint(rhs, y0, jnp.asarray([0.0, 1.0], y0.dtype), A)

softplus = jax.custom_jvp(lambda x: jnp.logaddexp(x, 0.0))
softplus.defjvp(lambda p, t: (softplus(p[0]), t[0] * lax.stop_gradient(jax.nn.sigmoid(p[0]))))

def cubic(z):
    return jnp.sin(z) * z
'''


@pytest.mark.parametrize("argv,code,says", [
    (["ode", "--shapes", "3", "3,3", "--rtol", "1e-6", "--draws", "1"], 0, "1 draws at "
     "float64, 0 failed"),
    (["softplus", "--shapes", "4", "--draws", "1"], 0, "0 failed"),
    (["softplus", "--shapes", "4", "--draws", "1", "--order", "2", "--no-batched"], 1,
     "FAIL (order 2)"),
    (["cubic", "--shapes", "3", "--dtype", "complex64", "--draws", "2", "--repeats", "2"], 0,
     "2 draws at complex64, 0 failed"),
])
def test_cli_takes_the_stated_accuracy_order_and_complex_dtypes(tmp_path, capsys, argv, code,
                                                               says):
    from mlp_jax import cli

    (tmp_path / "mine.py").write_text(CLI_MODULE)
    name, *rest = argv
    assert cli.main(["gradcheck", "--function", f"{tmp_path / 'mine.py'}:{name}", *rest]) \
        == code
    assert says in capsys.readouterr().out


@pytest.mark.calibration
@pytest.mark.slow
def test_readme_example_of_a_stated_accuracy_prints_what_the_readme_shows():
    from tests.readme import check_example

    check_example("**Beyond exact first derivatives**")
