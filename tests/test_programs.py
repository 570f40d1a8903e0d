"""Programs compile once per static configuration: counted by JAX's own compile events."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import monitoring

from mlp_jax import data, optim, programs, sweep, train
from mlp_jax.spec import MLPSpec

COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def compilations():
    """A list that fills with one entry per XLA compilation inside the block."""
    seen = []

    def listen(event, duration, **kwargs):
        if event == COMPILE:
            seen.append(duration)

    monitoring.register_event_duration_secs_listener(listen)
    try:
        yield seen
    finally:
        monitoring.unregister_event_duration_listener(listen)


@pytest.fixture(scope="module")
def spiral():
    return data.spiral(points_per_class=20)


def test_a_second_sweep_and_fit_compile_nothing(spiral):
    spec = MLPSpec((2, 8, 3), reg=1e-3)
    configs = sweep.grid(seeds=(0, 1), lrs=(1e-2, 1e-1))
    counts, losses = [], []
    for _ in range(2):  # a fresh lambda each time, as a notebook cell run twice makes
        with compilations() as seen:
            r = sweep.sweep(spec, spiral, lambda lr: optim.adam(lr), configs, epochs=3,
                            batch_size=16, mesh=None)
        counts.append(len(seen))
        losses.append(r.losses)
    assert counts[0] > 0 and counts[1] == 0, counts
    np.testing.assert_array_equal(losses[0], losses[1])
    fits = []
    for lr in (1e-2, 1e-2, 2e-2):  # a new optimizer object each time
        with compilations() as seen:
            train.fit(spec, spiral, optim.adam(lr), epochs=2, batch_size=16,
                      key=jax.random.key(0), progress=False)
        fits.append(len(seen))
    # the same lr: nothing new; another lr is another program (it is a constant in it)
    assert fits[1] == 0 and fits[2] > 0, fits


@pytest.mark.parametrize("form", train.FORMS)
def test_a_second_data_parallel_fit_compiles_nothing(spiral, form):
    """Over a mesh (here of one device: the same shard_map / GSPMD program), the gradient
    function is built before the program is looked up; a second fit with a fresh mesh
    finds the first one's program."""
    from mlp_jax import parallel

    spec = MLPSpec((2, 8, 3), reg=1e-3)
    fits = []
    for _ in range(2):
        with compilations() as seen:
            train.fit(spec, spiral, optim.adam(1e-2), epochs=2, batch_size=16,
                      key=jax.random.key(0), progress=False, mesh=parallel.data_mesh(1),
                      form=form)
        fits.append(len(seen))
    assert fits[0] > 0 and fits[1] == 0, fits


def test_keys_tell_programs_apart_and_refuse_what_they_cannot_key():
    built = []

    def build(*parts):
        built.append(parts)
        return len(built)

    def make(scale):
        return lambda lr: optim.sgd(lr * scale)

    assert programs.cached(build, MLPSpec((2, 3)), make(1.0), 5) == \
        programs.cached(build, MLPSpec((2, 3)), make(1.0), 5)  # equal parts: built once
    assert len(built) == 1
    for other in [(MLPSpec((2, 4)), make(1.0), 5), (MLPSpec((2, 3)), make(2.0), 5),
                  (MLPSpec((2, 3)), make(1.0), 6), (MLPSpec((2, 3)), make(1), 5)]:
        programs.cached(build, *other)
    assert len(built) == 5  # each differs in one value (1 and 1.0 too: their types)
    array = jnp.ones(3)
    for _ in range(2):  # an array in a closure has no value key: built every time
        programs.cached(build, lambda lr: lr * array)
    assert len(built) == 7

    # a Mesh hashes by identity, yet two of the same devices and axes are one program
    assert programs.static_key(sweep.config_mesh()) == programs.static_key(sweep.config_mesh())

    class Mutable:
        lr = 1.0

    with pytest.raises(programs.Unkeyable):
        programs.static_key(Mutable())
