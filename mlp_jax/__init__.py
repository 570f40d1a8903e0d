"""mlp_jax: fully connected networks as pure functions, with hand-derived backprop.

    import jax, mlp_jax as mj
    spec = mj.MLPSpec(sizes=(3072, 100, 10), activation="relu", loss="softmax", reg=1e-3)
    params = mj.init_params(jax.random.key(0), spec)
    value, grads = mj.backprop(params, x, y, spec)
    opt = mj.optim.adam(1e-3)
"""

from . import (
               activations,
               checkpoint,
               data,
               derivative,
               diagnostics,
               files,
               inference,
               layers,
               losses,
               network,
               optim,
               parallel,
               sweep,
               train,
)
from .activations import ACTIVATION_NAMES, Activation
from .backprop import backprop, per_example_backprop
from .derivative import (
    DerivativeInputError,
    DerivativeReport,
    assert_derivative,
    check_derivative,
)
from .gradcheck import GradCheckReport, check_grads, finite_differences, rel_error
from .inference import Predictions, predict
from .losses import LOSS_NAMES, Loss
from .network import forward, init_params, init_stats, loss
from .spec import Hyper, MLPSpec
from .train import TrainState, evaluate, fit, make_train_step
from .validate import validate

__all__ = [
    "ACTIVATION_NAMES", "LOSS_NAMES", "Activation", "DerivativeInputError", "DerivativeReport",
    "GradCheckReport", "Hyper", "Loss", "MLPSpec", "assert_derivative", "check_derivative",
    "TrainState", "activations", "backprop", "check_grads", "checkpoint", "data", "derivative",
    "Predictions", "diagnostics", "evaluate", "files", "finite_differences", "fit", "forward",
    "inference", "init_params", "init_stats", "layers", "loss", "losses", "make_train_step",
    "network",
    "optim", "parallel", "per_example_backprop", "predict", "rel_error", "sweep", "train",
    "validate",
]
__version__ = "0.1.0"
