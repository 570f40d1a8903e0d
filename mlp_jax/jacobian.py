"""A function at given inputs as a map of flat vectors, and its Jacobian products.

:func:`mlp_jax.check_derivative` sees ``f(*args)`` as ``x (n,) -> y (m,)`` (the
differentiable arguments' leaves raveled; static arguments held fixed) and gets
``u^T J`` and ``J v`` three ways: the rule under test (:func:`rule`: what JAX uses, or
a hand ``vjp=`` / ``jvp=``), autodiff of the rule-free function (:func:`autodiff`),
and, in :mod:`mlp_jax.finitediff`, finite differences of ``f``; :func:`rule_products`,
:func:`references` and :func:`forward_products` gather them for the check. What cannot be checked
(an untraceable ``f``, integer inputs, a VJP of the wrong structure) is a
:class:`DerivativeInputError` with one line that says why.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np


class DerivativeInputError(ValueError):
    """``check_derivative`` cannot check what it was given: the message says why."""


def first_line(e: Exception) -> str:
    """An exception in one line: its first line, and its last where they differ."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()
             and not set(line.strip()) <= set("-")]
    text = " ".join(dict.fromkeys(lines[:1] + lines[-1:]))
    return f"{type(e).__name__}: {text}"


def eps_of(dtype) -> float:
    return float(jnp.finfo(dtype).eps)


def real_dtype(dtype):
    """The real precision of a float or complex dtype (complex64 -> float32)."""
    return jnp.finfo(dtype).dtype


def at_dtype(a, dtype):
    """A float leaf at ``dtype``; a complex one at the complex dtype of that precision."""
    a = jnp.asarray(a)
    return a.astype(jnp.result_type(dtype, jnp.complex64) if jnp.iscomplexobj(a) else dtype)


def cast(tree, dtype):
    return jax.tree.map(lambda a: at_dtype(a, dtype), tree)


class RealView:
    """A pytree of float and complex arrays as one real vector: each complex leaf as its
    real part, then its imaginary part. Cotangents follow JAX's convention (what
    ``jax.vjp`` takes and returns): the cotangent ``c`` of a complex leaf is the real
    pair ``(Re c, -Im c)``. Parts are named ``top`` + the leaf's path, or, for a tuple
    given ``names``, its element's name + the path inside it."""

    def __init__(self, tree, top: str = "", names=None):
        paths, self.treedef = jax.tree_util.tree_flatten_with_path(tree)
        self.shapes = [np.shape(a) for _, a in paths]
        self.complex = [bool(jnp.iscomplexobj(a)) for _, a in paths]
        self.parts = []  # (name, shape) of each real part, in the vector's order
        for (path, _), shape, c in zip(paths, self.shapes, self.complex):
            name = top + jax.tree_util.keystr(path) if names is None else \
                names[path[0].idx] + jax.tree_util.keystr(path[1:])
            self.parts += [(name + ".real", shape), (name + ".imag", shape)] if c \
                else [(name, shape)]
        self.size = sum(int(np.prod(s)) for _, s in self.parts)

    def flatten(self, tree, conjugate: bool = False) -> jax.Array:
        """The real vector of ``tree`` (a cotangent's: ``conjugate=True``)."""
        out = []
        for a, c in zip(jax.tree.leaves(tree), self.complex):
            a = jnp.asarray(a)
            if c:
                im = jnp.imag(a).ravel()
                out += [jnp.real(a).ravel(), -im if conjugate else im]
            else:
                out.append(jnp.real(a).ravel())
        return jnp.concatenate(out) if out else jnp.zeros((0,))

    def unflatten(self, x, dtype, conjugate: bool = False):
        """The pytree of real vector ``x`` at ``dtype`` (complex leaves at its complex
        dtype); a cotangent's with ``conjugate=True``."""
        leaves, at = [], 0
        for shape, c in zip(self.shapes, self.complex):
            size = int(np.prod(shape))
            part = real_dtype(jnp.result_type(dtype, jnp.complex64)) if c else dtype
            re = jnp.reshape(x[at:at + size], shape).astype(part)
            at += size
            if c:
                im = jnp.reshape(x[at:at + size], shape).astype(part)
                at += size
                re = jax.lax.complex(re, -im if conjugate else im)
            leaves.append(re)
        return jax.tree.unflatten(self.treedef, leaves)


def rule_free(f, vjp, jvp, reference):
    """The function autodiff can check the rule against, and how to name both."""
    if reference is not None:
        return reference, "reference="
    if vjp is not None or jvp is not None:
        return f, "autodiff of f"
    if isinstance(f, (jax.custom_vjp, jax.custom_jvp)):
        return f.fun, f"autodiff of {type(f).__name__}.fun"
    return None, "none"


def _names(f, args, static) -> list[str]:
    try:
        params = list(inspect.signature(f).parameters)
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) and params[i] not in ("args", "kwargs")
            else f"args[{i}]" for i in range(len(args)) if i not in static]


def _leaf_names(tree, top: str) -> list[str]:
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [top + jax.tree_util.keystr(p) for p, _ in paths]


def _inexact(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


class Problem:
    """``f`` at the given inputs, seen as real flat vectors: x (n,) -> y (m,); complex
    leaves count twice (real and imaginary parts, :class:`RealView`)."""

    def __init__(self, f, args, static_argnums):
        self.static = set(static_argnums)
        self.args = args
        diff = tuple(a for i, a in enumerate(args) if i not in self.static)
        if not diff:
            raise DerivativeInputError("every argument is static: nothing to differentiate")
        self.names = _names(f, args, self.static)
        for name, a in zip(self.names, diff):
            for leaf_name, leaf in zip(_leaf_names(a, name), jax.tree.leaves(a)):
                if not _inexact(leaf):
                    raise DerivativeInputError(
                        f"input {leaf_name} has dtype {jnp.result_type(leaf)}: only float "
                        "and complex inputs have a derivative; pass static_argnums with its "
                        "position to hold it fixed")
        self.diff = diff
        self.view = RealView(diff, names=self.names)
        self.in_leaves = self.view.parts
        self.x = self.view.flatten(diff)
        try:
            out = jax.eval_shape(self.full(f), *diff)
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                jax.errors.TracerIntegerConversionError) as e:
            raise DerivativeInputError(
                f"f cannot be traced by JAX ({type(e).__name__}): it must compute with "
                "jax.numpy on its inputs, with no Python branching on their values "
                "(use jnp.where or lax.cond)") from None
        except Exception as e:  # noqa: BLE001 (the user's function failed: say where)
            raise DerivativeInputError(f"f failed on inputs of shapes {self.shapes()}: "
                                       f"{first_line(e)}") from None
        for name, leaf in zip(_leaf_names(out, "out"), jax.tree.leaves(out)):
            if not jnp.issubdtype(leaf.dtype, jnp.inexact):
                raise DerivativeInputError(f"output {name} has dtype {leaf.dtype}: only "
                                           "float and complex outputs have a derivative")
        self.out_tree = out
        self.out_view = RealView(out, "out")
        self.out_leaves = self.out_view.parts
        self.out_dtype = jnp.result_type(*jax.tree.leaves(out))
        self.m = self.out_view.size
        self.complex = any(self.view.complex) or any(self.out_view.complex)
        # the precision checked: the least precise of the inputs and outputs
        self.dtype = min([real_dtype(jnp.result_type(*jax.tree.leaves(diff))),
                          real_dtype(self.out_dtype)], key=lambda d: -eps_of(d))

    def unravel(self, x, dtype=None):
        return self.view.unflatten(x, dtype or x.dtype)

    def unravel_out(self, u, dtype=None):
        """A cotangent of the output in JAX's convention, from its real vector."""
        return self.out_view.unflatten(u, dtype or u.dtype, conjugate=True)

    def shapes(self) -> str:
        return ", ".join(f"{n} {s}" for n, s in self.in_leaves)

    def call_args(self, diff) -> list:
        """Every argument, the differentiable ones taken from ``diff``."""
        it = iter(diff)
        return [a if i in self.static else next(it) for i, a in enumerate(self.args)]

    def full(self, f):
        """``f`` of the differentiable arguments only."""
        return lambda *diff: f(*self.call_args(diff))

    def flat(self, f, dtype):
        """``f`` as a map of real flat vectors at ``dtype``: x (n,) -> y (m,)."""
        def g(x):
            diff = self.unravel(jnp.asarray(x, dtype), dtype)
            return self.out_view.flatten(cast(f(*self.call_args(diff)), dtype)).astype(dtype)
        return g


def cotangents_of(got, prob: Problem) -> tuple:
    """A user's VJP returned one cotangent per differentiable input, shaped like it."""
    got = tuple(got) if isinstance(got, (tuple, list)) and (
        len(prob.diff) > 1 or not isinstance(prob.diff[0], (tuple, list))) else (got,)
    if len(got) != len(prob.diff):
        raise DerivativeInputError(f"vjp returned {len(got)} cotangents for "
                                   f"{len(prob.diff)} differentiable inputs "
                                   f"({', '.join(prob.names)})")
    for name, want, have in zip(prob.names, prob.diff, got):
        if jax.tree.structure(want) != jax.tree.structure(have):
            raise DerivativeInputError(f"vjp's cotangent for {name} has structure "
                                       f"{jax.tree.structure(have)}; {name} has "
                                       f"{jax.tree.structure(want)}")
        for leaf_name, w, h in zip(_leaf_names(want, name), jax.tree.leaves(want),
                                   jax.tree.leaves(have)):
            if np.shape(w) != np.shape(h):
                raise DerivativeInputError(f"vjp's cotangent for {leaf_name} has shape "
                                           f"{np.shape(h)}; {leaf_name} has shape "
                                           f"{np.shape(w)}")
    return got


def _complex_aware(tangents, prob: Problem):
    """A hand JVP returns complex tangents for complex outputs (it was given complex
    tangents for complex inputs)."""
    for (name, _), leaf, c in zip(prob.out_view.parts, jax.tree.leaves(tangents),
                                  prob.out_view.complex):
        if c and not jnp.iscomplexobj(leaf):
            raise DerivativeInputError(
                f"jvp's tangent for {name.removesuffix('.real')} is real, but that output is "
                "complex: a jvp of complex inputs must return complex tangents (the tangent "
                "of the output, not its real part)")


def rule(prob: Problem, f, vjp, jvp, dtype, x=None):
    """What JAX uses to differentiate ``f`` at ``dtype`` (at ``prob.x``, or ``x``), on flat
    vectors: ``(reverse, forward)``, u (m,) -> (n,) and t (n,) -> (m,); forward is None
    where the rule has no forward mode (a custom_vjp)."""
    x = jnp.asarray(prob.x if x is None else x, dtype)
    primals = prob.unravel(x, dtype)
    if vjp is not None:
        def reverse(u):
            got = vjp(*prob.call_args(primals), prob.unravel_out(u, dtype))
            return prob.view.flatten(cast(cotangents_of(got, prob), dtype),
                                     conjugate=True).astype(dtype)
        return reverse, None
    if jvp is not None:
        def forward(t):
            _, out = jvp(tuple(prob.call_args(primals)), tuple(prob.unravel(t, dtype)))
            _complex_aware(out, prob)
            return prob.out_view.flatten(cast(out, dtype)).astype(dtype)
        def reverse(u):  # JAX transposes a custom_jvp rule the same way
            try:
                return jax.linear_transpose(forward, x)(u)[0]
            except (NotImplementedError, TypeError, ValueError) as e:
                raise DerivativeInputError(
                    "jvp's tangent output is not linear in the input tangents, so it is no "
                    f"derivative ({first_line(e)})") from None
        return reverse, forward
    g = prob.flat(f, dtype)
    _, pullback = jax.vjp(g, x)
    try:
        jax.jvp(g, (x,), (jnp.zeros_like(x),))
        forward = lambda t: jax.jvp(g, (x,), (t,))[1]  # noqa: E731
    except TypeError:  # a custom_vjp inside: reverse mode only
        forward = None
    return (lambda u: pullback(u)[0]), forward


def autodiff(prob: Problem, P, U, dtype, full: bool, x=None):
    """``U @ J`` by autodiff of the rule-free ``P`` at ``dtype`` (at ``prob.x``, or ``x``):
    reverse mode, or forward mode where reverse is not defined (a ``lax.while_loop``);
    None when only forward mode works and the Jacobian is too large to build."""
    g = prob.flat(P, dtype)
    x = jnp.asarray(prob.x if x is None else x, dtype)
    U = jnp.asarray(U, dtype)
    try:
        _, pullback = jax.vjp(g, x)
        return np.asarray(jax.vmap(lambda u: pullback(u)[0])(U), np.float64), "reverse"
    except (TypeError, ValueError, NotImplementedError):
        if not full:
            return None, "forward"
        J = jax.vmap(lambda t: jax.jvp(g, (x,), (t,))[1])(jnp.eye(x.size, dtype=dtype))
        return np.asarray(U, np.float64) @ np.asarray(J, np.float64).T, "forward"


def rule_products(prob, f, vjp, jvp, U):
    """``U J`` by the rule under test, (K, n) in float64, and the rule's forward mode
    (None where it has none)."""
    d = prob.dtype
    try:
        reverse, forward = rule(prob, f, vjp, jvp, d)
        reverse(jnp.asarray(U[0], d))  # errors named by leaf, outside any vmap
        return np.asarray(jax.vmap(reverse)(jnp.asarray(U, d)), np.float64), forward
    except DerivativeInputError:
        raise
    except Exception as e:  # noqa: BLE001 (the rule itself failed: say so, in one line)
        raise DerivativeInputError(f"the derivative rule failed on inputs of shapes "
                                   f"{prob.shapes()}: {first_line(e)}") from None


def perturbed(x, seed: int = 0) -> jax.Array:
    """``x`` with every entry moved by one float64 ulp, up or down at random: where ``f``
    cannot run in float32, what that changes in a float64 result stands for its
    rounding."""
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=np.shape(x))
    x = np.asarray(x, np.float64)
    return jnp.asarray(np.nextafter(x, np.where(signs > 0, np.inf, -np.inf)))


def rounding(at, prob, d):
    """The rounding a result ``at(dtype, x)`` carries at the checked dtype ``d``, and how
    it was measured: at ``d`` against float64 (at float64: float32's, scaled by the
    ratio of epsilons), or, where ``f`` cannot run at that precision, float64 at inputs
    one ulp away."""
    f64 = jnp.float64
    low = eps_of(d) > eps_of(f64)
    lo = d if low else jnp.float32
    ref64 = at(f64, prob.x)
    try:
        got = at(lo, prob.x)
        if got is not None:
            scale = 1.0 if low else eps_of(f64) / eps_of(jnp.float32)
            return ref64, np.abs(got - ref64) * scale, f"at {jnp.dtype(lo).name}"
    except Exception as e:  # noqa: BLE001 (f runs only at its own precision: say so)
        why = first_line(e)
        return ref64, np.abs(at(f64, perturbed(prob.x)) - ref64), (
            f"at float64 one ulp from the inputs (f does not run at "
            f"{jnp.dtype(lo).name}: {why})")
    return ref64, None, ""


def references(prob, f, vjp, jvp, P, U, full):
    """Autodiff of the rule-free ``P`` in float64 (None where there is none), the
    float64 reference for scales, and the rounding a correct derivative carries at the
    checked dtype (:func:`rounding`): ``(ad, ref64, noise, noise_from, mode)``; without
    a rule-free function, the rule's own rounding."""
    d, f64 = prob.dtype, jnp.float64
    ad = mode = noise = None
    if P is not None:
        ad, mode = autodiff(prob, P, U, f64, full)
        mode = mode if ad is not None else None
        if ad is not None:
            ref64, noise, how = rounding(
                lambda dt, x: autodiff(prob, P, U, dt, full, x)[0], prob, d)
            src = "autodiff of the rule-free function"
    if noise is None:
        def at(dtype, x):
            back = rule(prob, f, vjp, jvp, dtype, x)[0]
            return np.asarray(jax.vmap(back)(jnp.asarray(U, dtype)), np.float64)
        ref64, noise, how = rounding(at, prob, d)
        src = "the rule itself"
    return ad, ref64, noise, f"{src} {how}", mode


def forward_products(prob, forward, P, V):
    """``J v`` for each direction by forward mode, (directions, m) in float64: the rule's
    own, else the rule-free function's; None where neither has a forward mode."""
    d = prob.dtype
    if forward is None and P is not None:
        g = prob.flat(P, d)
        xd = jnp.asarray(prob.x, d)
        forward = lambda t: jax.jvp(g, (xd,), (t,))[1]  # noqa: E731
    if forward is None:
        return None
    try:
        return np.asarray(jax.vmap(forward)(jnp.asarray(V, d)), np.float64)
    except TypeError:  # a custom_vjp inside the rule-free function: no forward mode
        return None
