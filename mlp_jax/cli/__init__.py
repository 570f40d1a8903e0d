"""The ``mlp-jax`` command line: ``train``, ``sweep``, ``eval``, ``predict`` and
``gradcheck``, one module each (its parser beside its handler), the options they share
in :mod:`.common`. Here: the parser they make together, ``main``, the mapping of
failures to exit statuses, and the supervision of a multi-process worker."""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile

from . import evaluate, gradcheck, sweep, train
from .common import UsageError
from .options import Parser

DESCRIPTION = ("Train, sweep, evaluate and gradient-check fully connected networks "
               "(hand-derived backprop, jit-compiled training).")
SUBCOMMANDS = (gradcheck, train, sweep, evaluate)  # each adds its parsers, in --help's order


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand, with its options where ``command`` is None or names it: the others
    are only listed (with their help line) for ``mlp-jax --help``, which then imports no
    jax (train's and sweep's choices come from modules that do)."""
    parser = Parser(prog="mlp-jax", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in SUBCOMMANDS:
        module.add_parser(sub, lambda name: command is None or command == name)
    return parser


def _supervise(argv: list[str], args) -> int:
    """Run a multi-process worker as a child. The JAX distributed runtime ends a process
    whose peer never joins (or vanishes) from a C++ thread, with a stack trace and no
    Python exception; here that becomes one clear line and exit status 1."""
    import signal
    import subprocess

    from ..lifetime import die_with_parent

    env = dict(os.environ, MLP_JAX_WORKER="1")
    proc = subprocess.Popen([sys.executable, "-m", "mlp_jax.cli", *argv], env=env,
                            stderr=subprocess.PIPE, text=True, bufsize=1,
                            preexec_fn=die_with_parent)  # it ends with its supervisor
    fatal, in_fatal = [], False
    for line in proc.stderr:
        if re.match(r"\s*@\s+0x", line) or "Check failure stack trace" in line:
            in_fatal = False  # the runtime's C++ stack trace
            continue
        m = re.match(r"F\d{4} [\d:.]+\s+\d+ [^\]]+\] (.*)", line)
        if m or (in_fatal and line.strip()):
            fatal.append((m.group(1) if m else line).strip())
            in_fatal = True
            continue
        if not in_fatal:
            sys.stderr.write(line)
    code = proc.wait()
    if code in (-signal.SIGABRT, 128 + signal.SIGABRT):
        who = f"process {args.process_id} of {args.num_processes}"
        why = " ".join(fatal)[:400] or "no message"
        print(f"mlp-jax: error: {who}: the JAX distributed runtime stopped it (a peer never "
              f"joined {args.coordinator} within {args.dist_timeout} s, or died): {why}",
              file=sys.stderr)
        return 1
    return code


def _interrupt_message(out: str | None) -> str:
    where = f"; what was saved in {out} stays, and --resume continues it" if out else ""
    return f"mlp-jax: interrupted{where}"


def main(argv=None) -> int:
    """The command line. Run as the program (``argv`` None), Ctrl-C ends it at once, from
    before anything heavy is imported (:func:`lifetime.exit_on_interrupt`); called from
    Python with ``argv``, a handler does the same for the call's length. Either way: one
    line, exit status 130; what was saved stays whole (every write is atomic or re-read
    with --resume; one in flight finishes first)."""
    import signal

    from .. import lifetime

    worker = bool(os.environ.get("MLP_JAX_WORKER"))
    program = argv is None and not worker
    if program:
        lifetime.end_with_starter()
    if worker:  # a supervised worker: its supervisor reports, and it ends with it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    elif program:
        lifetime.exit_on_interrupt()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else "").parse_args(argv)
    if args.command in ("train", "sweep") and args.out is None:
        name = os.path.splitext(os.path.basename(args.data))[0] if args.data else args.dataset
        args.out = os.path.join("runs", ("sweep-" if args.command == "sweep" else "") + name)
    # a run's directory (train, sweep) is what --resume continues; predict's --out is a
    # file written whole or not at all
    message = _interrupt_message(args.out if args.command in ("train", "sweep") else None)
    if program:
        lifetime.exit_on_interrupt(message)
    if program or worker:
        return _run(argv, args)

    previous = signal.signal(signal.SIGINT,
                             lambda signum, frame: lifetime.exit_interrupted(message))
    try:
        return _run(argv, args)
    finally:
        signal.signal(signal.SIGINT, previous)


COMPILE_CACHE_MIN_SECONDS = 0.0  # every program: a small one loads faster than it compiles


def compile_cache_dir() -> str | None:
    """Where compiled programs are kept between runs: ``MLP_JAX_COMPILE_CACHE`` (a
    directory; ``0`` or ``off``: nowhere), else ``$XDG_CACHE_HOME/mlp_jax/xla``
    (``~/.cache/mlp_jax/xla``)."""
    setting = os.environ.get("MLP_JAX_COMPILE_CACHE", "")
    if setting.lower() in ("0", "off", "false", "no"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return setting or os.path.join(base, "mlp_jax", "xla")


def _compile_cache(off: bool) -> None:
    """JAX's persistent compilation cache, on by default: a second run of the same shapes
    loads its programs instead of compiling them."""
    where = None if off else compile_cache_dir()
    if where is None:
        return
    try:  # a directory this process cannot write to is a warning, not a failure
        os.makedirs(where, exist_ok=True)
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as e:
        print(f"mlp-jax: warning: no compilation cache: cannot write to {where} "
              f"({e.strerror or e}); compiling afresh (MLP_JAX_COMPILE_CACHE=DIR moves it, "
              "=0 or --no-compile-cache turns it off)", file=sys.stderr)
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", COMPILE_CACHE_MIN_SECONDS)


def _run(argv, args) -> int:
    if (getattr(args, "num_processes", None) or 1) > 1 and not os.environ.get("MLP_JAX_WORKER"):
        return _supervise(argv, args)
    from ..lifetime import release_directories
    from ..parallel import PeerFailure

    _compile_cache(getattr(args, "no_compile_cache", False))
    try:
        code = args.func(args)
    except UsageError as e:
        print(f"mlp-jax: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system failed mid-run (disk full, permissions, ...)
        where = f" {e.filename}" if e.filename else ""
        print(f"mlp-jax: error: cannot write{where}: {e.strerror or e}; what was saved "
              "before is intact (free space or fix permissions, then --resume)",
              file=sys.stderr)
        return 1
    except PeerFailure as e:
        # The distributed runtime's own shutdown would now wait on the lost peer and
        # abort with a C++ trace; say what happened in one line and leave at once.
        print(f"mlp-jax: error: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)
    finally:
        release_directories()  # the command is over (main may be called again in-process)
    if getattr(args, "num_processes", None) and args.num_processes > 1:
        import jax

        jax.distributed.shutdown()  # every process reaches here: a clean, joint exit
    return code

