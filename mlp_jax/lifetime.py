"""Processes the library starts end with the process that started them, and Ctrl-C
ends the command line at once."""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

_WRITING = threading.Lock()  # held while a file is written: an interrupt waits for it
_MESSAGE = ["mlp-jax: interrupted"]
_HELD: dict[str, int] = {}  # run directory -> the descriptor whose lock this process holds
LOCK_FILE = ".lock"


class DirectoryInUse(RuntimeError):
    """Another process holds the run directory (:func:`hold_directory`)."""


def hold_directory(path: str) -> None:
    """Lock the run directory ``path`` for this process until :func:`release_directories`
    or its end: an exclusive ``flock`` on ``path/.lock``, which the kernel releases when
    the process dies however it dies (no stale lock after a crash). The file holds the
    holder's pid. Raises :class:`DirectoryInUse` naming the holder if another has it."""
    import fcntl

    key = os.path.realpath(path)
    if key in _HELD:
        return
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DirectoryInUse(f"{path} is in use by another run (pid {holder}); wait for it, "
                             "or choose another --out") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = fd


def release_directories() -> None:
    """Give up every run directory this process holds."""
    while _HELD:
        os.close(_HELD.popitem()[1])


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


def end_with_starter() -> None:
    """A process started with ``MLP_JAX_PARENT=PID`` in its environment by that process
    (the test suite and the experiments set it for their children) dies with it: the
    command line and the experiments call this first."""
    parent = os.environ.get("MLP_JAX_PARENT", "")
    if parent.isdigit() and int(parent) == os.getppid():
        die_with_parent(int(parent))


@contextmanager
def whole_write():
    """Around a file's write: an interrupt arriving meanwhile waits until it is done."""
    with _WRITING:
        yield


def exit_on_interrupt(message: str | None = None) -> None:
    """From now on, SIGINT (Ctrl-C) prints the message and exits with status 130 at once,
    whatever the main thread is doing. (A Python signal handler runs only between the
    main thread's bytecodes: it waits out a compilation or a training step inside XLA,
    and a KeyboardInterrupt raised inside a callback, such as JAX's garbage-collection
    hook, is printed as "ignored" and the run goes on.) SIGINT is blocked in this thread,
    and so in every thread and process started after it (processes that should see it
    unblock it); one thread waits for it. A write inside :func:`whole_write` finishes
    first. Call it again to change the message."""
    if message is not None:
        _MESSAGE[0] = message
    if any(t.name == "mlp-jax-interrupt" for t in threading.enumerate()):
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    def wait():
        signal.sigwait({signal.SIGINT})
        exit_interrupted()

    threading.Thread(target=wait, name="mlp-jax-interrupt", daemon=True).start()


def exit_interrupted(message: str | None = None) -> None:
    """The interrupt's end: once a write in flight is done, the message and exit status
    130 at once (``os._exit``: no unwinding through a compilation in flight)."""
    with _WRITING:
        os.write(2, ((message or _MESSAGE[0]) + "\n").encode())
        os._exit(130)


def unblock_interrupt() -> None:
    """In a child process (``preexec_fn``): SIGINT delivered again, as by default."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
