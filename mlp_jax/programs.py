"""Compiled programs built once per static configuration, not once per call.

``jax.jit`` caches its compilations on the function object it wraps, so a function that
builds a fresh ``jit`` on every call (``sweep``, ``fit``: their programs close over the
spec, the optimizer and the loop's shape) compiles again every time, about 4 s a call
for a sweep on 2 cores. :func:`cached` keeps the built program under a key made of
everything the program closes over (:func:`static_key`), so a second ``sweep`` or
``fit`` with the same spec, an optimizer built the same way (even a new
``lambda lr: optim.adam(lr)`` from the same line of code) and the same loop shape reuses
the first one's compilation. A part that cannot be keyed by value (an array in a
closure, a mutable object) makes the call build its own program, as before: never a
wrong reuse.
"""

from __future__ import annotations

import functools
import types
from collections import OrderedDict

from jax.sharding import Mesh, PartitionSpec

MAX_PROGRAMS = 64  # built programs kept (least recently used dropped first)
_PROGRAMS: OrderedDict = OrderedDict()
_ATOMS = (type(None), bool, int, float, complex, str, bytes)


class Unkeyable(TypeError):
    """A part of a program's configuration that has no value-based key."""


def static_key(obj):
    """A hashable key, equal for two objects that build the same program.

    Numbers and strings by type and value; tuples, lists and dicts by their items;
    functions by their code, defaults and closed-over values (recursively), and the
    module they were defined in; ``functools.partial`` by its function and arguments; a
    ``Mesh`` by its devices and axes and a ``PartitionSpec`` by its entries (both hash by
    identity); any other object by its own value hash (a frozen dataclass such as
    ``MLPSpec``), never by identity. Raises :class:`Unkeyable`
    otherwise. A module-level name a function reads is not part of its key: as with
    ``jax.jit`` itself, a program sees a global's value when it is traced."""
    if isinstance(obj, _ATOMS):
        return type(obj).__name__, obj
    if isinstance(obj, (tuple, list)):  # NamedTuples too: their type is part of the key
        return type(obj).__qualname__, tuple(static_key(v) for v in obj)
    if isinstance(obj, dict):
        return "dict", tuple(sorted((static_key(k), static_key(v)) for k, v in obj.items()))
    if isinstance(obj, types.FunctionType):
        cells = tuple(static_key(c.cell_contents) for c in obj.__closure__ or ())
        return ("function", obj.__module__, obj.__code__, id(obj.__globals__),
                static_key(obj.__defaults__), static_key(obj.__kwdefaults__), cells)
    if isinstance(obj, functools.partial):
        return ("partial", static_key(obj.func), static_key(obj.args),
                static_key(obj.keywords))
    if isinstance(obj, (types.BuiltinFunctionType, type)):
        return "object", obj
    if isinstance(obj, PartitionSpec):  # hashed by identity too; its repr is its value
        return "pspec", repr(obj)
    if isinstance(obj, Mesh):  # hashed by identity, but a mesh is its devices and axes
        return ("mesh", obj.devices.shape, tuple(d.id for d in obj.devices.flat),
                obj.axis_names, static_key(getattr(obj, "axis_types", None)))
    if type(obj).__hash__ not in (None, object.__hash__) and not hasattr(obj, "__array__"):
        try:
            hash(obj)
        except TypeError:
            pass
        else:
            return type(obj).__qualname__, obj
    raise Unkeyable(f"{type(obj).__qualname__} has no value-based key")


def cached(build, *parts):
    """``build(*parts)``, or the program an earlier call built from equal parts."""
    try:
        key = (build.__module__, build.__qualname__, static_key(parts))
    except (Unkeyable, RecursionError):
        return build(*parts)
    if key in _PROGRAMS:
        _PROGRAMS.move_to_end(key)
        return _PROGRAMS[key]
    program = _PROGRAMS[key] = build(*parts)
    if len(_PROGRAMS) > MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return program


__all__ = ["MAX_PROGRAMS", "Unkeyable", "cached", "static_key"]
