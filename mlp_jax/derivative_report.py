"""What :func:`mlp_jax.check_derivative` found: per block, per order, under transformations.

A report's verdict is PASS, FAIL or UNDECIDED. FAIL: some entry differs from a reference
by more than its allowance. UNDECIDED: nothing failed, but with a stated tolerance some
entries were judged only by finite differences whose own error bar is larger than the
rule's allowance there (a non-smooth ``f``, an adaptive solver's steps), so a rule wrong
by the tolerance would have passed too; the report says where.
"""

from __future__ import annotations

from dataclasses import dataclass

from .passrule import Comparison, Judged, table


@dataclass(frozen=True, kw_only=True)
class Block(Judged):
    """One output leaf (or the random projections) against one input leaf; complex leaves
    are two blocks each, their real and imaginary parts (``z.real``, ``z.imag``)."""

    output: str
    input: str
    shape: tuple[int, ...]  # (*output leaf shape, *input leaf shape); projections: (K, *input)
    kinks: int  # finite-difference entries on a kink (judged one-sided)
    error: float = 0.0  # the rule's largest |rule - reference| over the block's scale S
    nonsmooth: int = 0  # entries whose estimates at h and 10 h disagree beyond their bars

    @property
    def undecided(self) -> int:
        """Entries no reference decides (finite differences too rough, no autodiff)."""
        return self.fd.undecided if self.autodiff.checked == 0 else 0


@dataclass(frozen=True)
class DerivativeReport:
    """Result of :func:`check_derivative`; ``str(report)`` is a readable table.

    ``passed`` is True only when every order and transformation checked passed and every
    entry was decided; ``verdict`` is ``"PASS"``, ``"FAIL"`` or ``"UNDECIDED"``.
    """

    name: str
    dtype: str
    rule: str  # what was checked
    reference: str  # the rule-free function, or "none"
    mode: str  # "full Jacobian" or "N random projections"
    blocks: tuple[Block, ...]
    directions: Comparison  # along random directions: finite differences
    consistency: Comparison  # forward vs reverse mode
    noise_from: str
    error: float  # the largest |rule - reference| over its block's largest reference entry
    order: int = 1  # the derivative checked: 1, or 2 for the derivative of the rule's, ...
    stated: tuple[float, float] = (0.0, 0.0)  # the rule's stated (rtol, atol)
    vmapped: Comparison = Comparison.none()  # the rule under jax.vmap vs eager, unbatched
    jitted: Comparison = Comparison.none()  # the rule under jax.jit vs eager
    repeats: int = 1  # runs of the rule
    spread: float = 0.0  # their largest run-to-run difference over the block's scale
    higher: tuple[DerivativeReport, ...] = ()  # orders 2, 3, ...

    @property
    def _failed_here(self) -> bool:
        own = [self.directions, self.consistency, self.vmapped, self.jitted]
        return any(not b.passed for b in self.blocks) or any(not c.passed for c in own)

    @property
    def failed(self) -> bool:
        return self._failed_here or any(r.failed for r in self.higher)

    @property
    def undecided(self) -> int:
        return sum(b.undecided for b in self.blocks) + sum(r.undecided for r in self.higher)

    @property
    def verdict(self) -> str:
        return "FAIL" if self.failed else "UNDECIDED" if self.undecided else "PASS"

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    @property
    def failed_order(self) -> int | None:
        """The lowest order that failed (None when none did)."""
        return next((r.order for r in (self, *self.higher) if r._failed_here), None)

    @property
    def used(self) -> float:
        """The largest share of its allowance any entry used: PASS when <= 1."""
        return max([self.directions.used, self.consistency.used, self.vmapped.used,
                    self.jitted.used] + [max(b.autodiff.used, b.fd.used) for b in self.blocks]
                   + [r.used for r in self.higher])

    @property
    def kinks(self) -> int:
        return sum(b.kinks for b in self.blocks)

    @property
    def nonsmooth(self) -> int:
        return sum(b.nonsmooth for b in self.blocks)

    # pragma: no mutate start
    def __str__(self) -> str:
        rtol, atol = self.stated
        what = "derivative" if self.order == 1 else f"order-{self.order} derivative"
        lines = [f"{what} check: {self.name} at {self.dtype}; rule: {self.rule}; "
                 f"reference: {self.reference}; {self.mode}"
                 + (f"; stated rtol {rtol:.2g}, atol {atol:.2g}" if rtol or atol else ""),
                 *table("output  input", "autodiff", [
                     (f"{b.output}  {b.input}", b.autodiff, b.fd, b.kinks, b.passed)
                     for b in self.blocks])]
        lines.append("measured error (largest |rule - ref| / S): "
                     + ", ".join(f"{b.output} {b.input} {b.error:.1e}" for b in self.blocks))
        for b in self.blocks:
            if b.nonsmooth:
                lines.append(f"{b.output}  {b.input}: finite differences not smooth at "
                             f"{b.nonsmooth} entries (h and 10 h disagree beyond their bars)")
            if b.undecided:
                lines.append(f"{b.output}  {b.input}: UNDECIDED at {b.undecided} entries: "
                             "no autodiff reference, and finite differences there carry more "
                             "error than the stated tolerance allows")
        for what, c in (("random directions vs finite differences", self.directions),
                        ("forward vs reverse mode", self.consistency),
                        ("under jax.vmap vs eager", self.vmapped),
                        ("under jax.jit vs eager", self.jitted)):
            if c.checked:
                lines.append(f"{what}: rel err {c.rel_error:.1e}, used {c.used:.2g}"
                             f"{'' if c.passed else '  FAIL'}")
        if self.repeats > 1:
            lines.append(f"{self.repeats} runs of the rule: spread {self.spread:.1e} of S, "
                         "allowed for")
        lines.append(f"rule per entry: |rule - ref| <= rtol (|rule| + |ref|) + noise + floor "
                     f"S{' + stated rtol S + atol' if rtol or atol else ''}; noise measured "
                     f"from {self.noise_from}; 'used' = the worst entry's share of its "
                     "allowance (PASS <= 1)")
        if not self.higher:
            lines.append(self.verdict)
        text = "\n".join(lines)
        for r in self.higher:
            text += "\n\n" + str(r)
        if self.higher:
            failed = self.failed_order
            text += "\n\n" + (f"FAIL (order {failed})" if failed else self.verdict)
        return text
    # pragma: no mutate end
