"""``python -m mlp_jax.cli``: the ``mlp-jax`` command."""

import sys

from . import main

sys.exit(main())
