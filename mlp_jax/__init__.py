"""mlp_jax: fully connected networks as pure functions, with hand-derived backprop.

    import jax, mlp_jax as mj
    spec = mj.MLPSpec(sizes=(3072, 100, 10), activation="relu", loss="softmax", reg=1e-3)
    params = mj.init_params(jax.random.key(0), spec)
    value, grads = mj.backprop(params, x, y, spec)
    opt = mj.optim.adam(1e-3)
"""

import importlib
import sys
import types

# Names are imported when first used (PEP 562): ``import mlp_jax`` and the command line's
# start-up import nothing heavy (no jax) until something needs it.
_FROM = {
    "activations": ("ACTIVATION_NAMES", "Activation"),
    "backprop": ("backprop", "per_example_backprop"),
    "derivative": ("DerivativeInputError", "DerivativeReport", "assert_derivative",
                   "check_derivative"),
    "gradcheck": ("GradCheckReport", "check_grads"),
    "finitediff": ("finite_differences",),
    "passrule": ("rel_error",),
    "inference": ("Predictions", "predict"),
    "losses": ("LOSS_NAMES", "Loss"),
    "network": ("forward", "init_params", "init_stats", "loss"),
    "spec": ("Hyper", "MLPSpec"),
    "evaluation": ("evaluate",),
    "train": ("TrainState", "fit", "make_train_step"),
    "validate": ("validate",),
}
_WHERE = {name: module for module, names in _FROM.items() for name in names}
_MODULES = ("activations", "batches", "checkpoint", "data", "dataset", "derivative",
            "diagnostics", "epochs", "evaluation", "files", "inference", "layers", "losses",
            "network", "optim", "owndata", "parallel", "sweep", "train")

__all__ = sorted([*_WHERE, *_MODULES])
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


class _Package(types.ModuleType):
    """Importing the submodule ``backprop`` or ``validate`` binds the module to that name
    here; the package's name stays the function of the same name."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _WHERE.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
