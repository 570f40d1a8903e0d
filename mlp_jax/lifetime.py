"""Processes the library starts end with the process that started them."""

from __future__ import annotations

import os
import signal
import sys


def die_with_parent(parent: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent ends (Linux's
    ``PR_SET_PDEATHSIG``), however the parent ends; a no-op elsewhere. ``parent``: the
    pid the caller expects as its parent; if it has already gone (it died before this
    call), end now."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:
        os._exit(1)
