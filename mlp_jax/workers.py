"""Many independent items over worker processes: the gradient-check matrix, random
sweeps and the derivative corpus (``run_cells``).

Workers are spawned (fork and XLA's threads don't mix), end with their parent however
it ends (``lifetime.die_with_parent``), leave Ctrl-C to the parent, and send results
back through one pipe each.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import multiprocessing.resource_tracker
import os
import signal

from .lifetime import die_with_parent


def _work(fn, items, conn, parent: int) -> None:
    die_with_parent(parent)  # a killed run leaves no worker behind
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to report
    for i, item in items:
        conn.send((i, fn(item)))


def run_cells(fn, items: list, workers: int = 1, progress=None) -> list:
    """``[fn(item) for item in items]``, spread over ``workers`` processes.

    ``fn`` must be a module-level function (workers import it). Each worker
    takes a contiguous block, so neighbouring items (the matrix orders its
    cells by activation) reuse the same worker's compiled ops. Results come back
    through one pipe per worker (no semaphores: a run interrupted or killed leaves
    nothing for the resource tracker to report).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive number of processes; got {workers!r}")
    done = {}
    if workers == 1:
        for i, item in enumerate(items):
            done[i] = fn(item)
            if progress:
                progress(len(done), len(items))
        return [done[i] for i in range(len(items))]
    size = -(-len(items) // workers)
    indexed = list(enumerate(items))
    ctx = multiprocessing.get_context("spawn")  # fork and XLA's threads don't mix
    procs, readers = {}, []
    # Workers start with SIGINT blocked (Ctrl-C is the parent's to report; they ignore it
    # once running). Starting multiprocessing's resource tracker unblocks SIGINT in this
    # thread, so it goes first; the mask is restored after.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    multiprocessing.resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    for w in range(workers):
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_work, daemon=True, args=(
            fn, indexed[w * size:(w + 1) * size], writer, os.getpid()))
        proc.start()
        writer.close()  # the worker's end: EOF here when the worker ends
        readers.append(reader)
        procs[reader] = proc
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        while readers:
            for reader in multiprocessing.connection.wait(readers):
                try:
                    i, result = reader.recv()
                except EOFError:  # that worker ended: with its block done, or in error
                    readers.remove(reader)
                    procs[reader].join(timeout=10)
                    if procs[reader].exitcode != 0:
                        break
                    continue
                done[i] = result
                if progress:
                    progress(len(done), len(items))
            if len(done) < len(items) and any(procs[r].exitcode not in (None, 0)
                                               for r in procs):
                break
        if len(done) < len(items):
            raise RuntimeError("a worker process died; rerun with --workers 1 "
                               "to see its error")
    finally:
        for p in procs.values():
            p.terminate()
    return [done[i] for i in range(len(items))]
