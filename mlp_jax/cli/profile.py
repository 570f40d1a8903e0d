"""``train --profile``: where a run's seconds went, on stderr after its result.

Phases are wall-clock spans between marks, the first from the process's start (Linux's
``/proc``; elsewhere from the command's), so they add up to the run's wall time. Inside
them, JAX's own monitoring events give the time spent tracing and lowering programs and
compiling them (or loading them from the compilation cache).
"""

from __future__ import annotations

import os
import sys
import time


def since_process_start() -> float | None:
    """Seconds since this process started (Linux), None where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class Profile:
    """Marks phases; ``report()`` prints them with JAX's compile-time totals. Off: every
    call does nothing (so the command's code reads the same either way)."""

    def __init__(self, on: bool):
        self.on, self.rows, self.compile = on, [], {}
        if not on:
            return
        self.rows.append(("start-up: Python, the imports (jax's too), the options",
                          since_process_start()))
        self.t = time.perf_counter()
        import jax.monitoring

        self._listener = self._event  # the same object to unregister
        jax.monitoring.register_event_duration_secs_listener(self._listener)

    def _event(self, event: str, seconds: float, **_) -> None:
        if event.startswith("/jax/core/compile/"):
            count, total = self.compile.get(event, (0, 0.0))
            self.compile[event] = (count + 1, total + seconds)

    def mark(self, phase: str) -> None:
        """The span since the last mark was ``phase``."""
        if self.on:
            now = time.perf_counter()
            self.rows.append((phase, now - self.t))
            self.t = now

    def report(self) -> None:
        if not self.on:
            return
        import jax.monitoring

        jax.monitoring.unregister_event_duration_listener(self._listener)
        known = [s for _, s in self.rows if s is not None]
        lines = ["where the time went (--profile):"]
        lines += [f"  {name:<58} {'?' if s is None else f'{s:6.2f}'} s"
                  for name, s in self.rows]
        lines.append(f"  {'total':<58} {sum(known):6.2f} s")

        def total(what):
            return sum(self.compile.get(f"/jax/core/compile/{e}", (0, 0.0))[1] for e in what)
        programs = self.compile.get("/jax/core/compile/backend_compile_duration", (0, 0.0))[0]
        lines.append(f"  of which, in any phase: tracing and lowering "
                     f"{total(('jaxpr_trace_duration', 'jaxpr_to_mlir_module_duration')):.2f}"
                     f" s;\n  XLA compiling or loading from the compilation cache "
                     f"{total(('backend_compile_duration',)):.2f} s ({programs} programs)")
        print("\n".join(lines), file=sys.stderr, flush=True)
