"""The pass rule both checkers judge by, and the table both reports print.

Per entry, a rule's value (a hand derivative, a custom rule) against a reference:
``|rule - ref| <= rtol (|rule| + |ref|) + absolute``, the absolute terms being the
errors the reference and the rule are known to carry (a floor in units of the block's
scale, measured rounding, finite differences' truncation). A :class:`Comparison` is
the verdict over a block of entries: the worst entry's share of its allowance
(``used``, PASS when <= 1), where it is, and which term allowed the most there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rel_error(a, b) -> float:
    """CS231n's relative error, ``max |a-b| / max(1e-8, |a|+|b|)``, elementwise then max."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)), initial=0.0))


def judge(hand, ref, rtol, absolute):
    """The pass rule entry by entry: ``(used, need, terms)``; ``used`` is
    ``|hand - ref|`` over its allowance (inf where nothing is allowed, or NaN), ``need``
    the share of the absolute terms needed beyond the relative one."""
    ref = np.broadcast_to(np.asarray(ref, np.float64), hand.shape)
    terms = {k: np.broadcast_to(v, hand.shape) for k, v in absolute.items()}
    floor = sum(terms.values()) if terms else np.zeros(hand.shape)
    terms["rtol"] = rtol * (np.abs(hand) + np.abs(ref))
    allowance = terms["rtol"] + floor
    diff = np.abs(hand - ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        used = np.where(diff == 0, 0.0, diff / allowance)  # inf where nothing is allowed
        need = np.where(diff <= terms["rtol"], 0.0, (diff - terms["rtol"]) / floor)
    used = np.where(np.isnan(diff), np.inf, used)  # a NaN gradient fails, never passes
    return used, need, terms


@dataclass(frozen=True)
class Comparison:
    """A block of entries, rule vs a reference, judged by the pass rule.

    Each entry is allowed ``rtol (|hand| + |ref|)`` plus the absolute terms given.
    ``used`` is the worst entry's ``|hand - ref|`` over its allowance: the block passes
    when it is at most 1. ``decided`` names the largest term of that entry's allowance
    (``"none"`` where every term is 0 there: any difference fails). ``absolute_used``
    is the largest share of its absolute terms that any entry needed beyond ``rtol``
    (the measurement behind the floors: headroom is its inverse).
    """

    rel_error: float  # CS231n's metric over the compared entries, for reading
    used: float
    decided: str
    worst_index: tuple[int, ...]
    hand: float  # value of the rule at worst_index
    reference: float
    checked: int  # entries compared
    absolute_used: float
    undecided: int = 0  # entries within their allowance only through the reference's own
    # error bar (the ``bars`` terms), where it is larger than the rest: no verdict there

    @staticmethod
    def of(hand: np.ndarray, ref: np.ndarray, rtol: float, absolute: dict,
           include: np.ndarray | None = None) -> Comparison:
        """``absolute`` maps each absolute term's name to its value (scalar or per entry)."""
        return Comparison.best(hand, [(ref, rtol, absolute)], include)

    @staticmethod
    def none() -> Comparison:
        """Nothing compared (no entry included, or no such reference for this check)."""
        return Comparison(0.0, 0.0, "-", (), float("nan"), float("nan"), 0, 0.0)

    @staticmethod
    def best(hand: np.ndarray, candidates: list, include: np.ndarray | None = None,
             bars: tuple[str, ...] = ()) -> Comparison:
        """The rule against several estimates of the same reference, ``(ref, rtol,
        absolute)`` each: every entry is judged by the one it fits best (finite
        differences' centred and one-sided estimates, where a kink may spoil some).
        ``bars`` names the terms that are the reference's own error: an entry that
        passes with them larger than the rest of its allowance is counted undecided."""
        include = np.ones(hand.shape, bool) if include is None else include
        if not include.any():
            return Comparison.none()
        judged = [judge(hand, ref, rtol, absolute) for ref, rtol, absolute in candidates]
        pick = np.argmin(np.stack([u for u, _, _ in judged]), axis=0)  # per entry
        used, need = (np.choose(pick, [j[k] for j in judged]) for k in (0, 1))
        ref = np.choose(pick, [c[0] for c in candidates])
        used = np.where(include, used, -1.0)
        i = np.unravel_index(int(np.argmax(used)), used.shape)
        terms = judged[pick[i]][2]
        undecided = 0
        if bars:  # decided where some estimate's own error bar is within the rest
            decisive = np.zeros(hand.shape, bool)
            for (ref_c, _, _), (_, _, t) in zip(candidates, judged):
                bar = sum(v for k, v in t.items() if k in bars)
                rest = sum(v for k, v in t.items() if k not in bars)
                decisive |= np.isfinite(ref_c) & (bar <= rest)
            undecided = int(np.sum(include & (used <= 1.0) & ~decisive))
        return Comparison(
            rel_error(hand[include], ref[include]), float(used[i]),
            max(terms, key=lambda k: terms[k][i]) if any(t[i] > 0 for t in terms.values())
            else "none", tuple(int(j) for j in i),
            float(hand[i]), float(ref[i]), int(include.sum()),
            float(np.max(np.where(include, need, 0.0))), undecided)

    @property
    def passed(self) -> bool:
        return self.used <= 1.0


# pragma: no mutate start
@dataclass(frozen=True, kw_only=True)
class Judged:
    """One piece of a derivative (a parameter leaf; an output leaf against an input leaf)
    judged against both references; the checkers' reports are made of these."""

    autodiff: Comparison
    fd: Comparison
    fd_entries: int  # entries finite-differenced (all, or a sample)

    @property
    def passed(self) -> bool:
        return self.autodiff.passed and self.fd.passed


def table(label: str, autodiff: str, rows) -> list[str]:
    """The report's table: one row per block, ``(label, vs autodiff, vs finite
    differences, kink entries, passed)``; ``autodiff`` names the autodiff reference."""
    w = max([len(label)] + [len(r[0]) for r in rows]) + 1
    lines = [f"{'':<{w}}{'vs ' + autodiff:^24}{'vs finite diff':^24}",
             f"{label:<{w}}{'rel err':>8} {'used':>7} {'by':<8}{'rel err':>8} {'used':>7} "
             f"{'by':<8}{'kink':>5}  worst entry (rule vs reference)"]
    for name, ad, fd, kinks, passed in rows:
        worst, tag = (fd, "fd") if fd.used > ad.used else (ad, "ad")
        lines.append(
            f"{name:<{w}}{ad.rel_error:>8.1e} {ad.used:>7.2g} {ad.decided:<8}"
            f"{fd.rel_error:>8.1e} {fd.used:>7.2g} {fd.decided:<8}{kinks:>5}  {tag} "
            f"{list(worst.worst_index)} {worst.hand:.6g} vs {worst.reference:.6g}"
            f"{'' if passed else '  FAIL'}")
    return lines
# pragma: no mutate end
