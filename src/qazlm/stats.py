"""How far a reported rate can be trusted: most headline figures of the chat, safety, reward-model and DPO
reports are shares of 10-200 items, where one item moves a rate by 0.5-10 points and two runs of the same recipe
differ by more. Each such rate is reported with its 95% Wilson score interval, so a reader sees whether a
figure is distinguishable from a target or from another model's.

Wilson rather than the normal approximation because it stays inside [0, 1] and behaves at 0% and 100% and at
n = 10; written out rather than scipy's `binomtest(...).proportion_ci` because the DPO win rate counts a tie as
half a win, a share that is not a whole number of successes.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(rate: float, n: int, z: float = Z95) -> tuple[float, float] | None:
    """95% Wilson score interval (low, high) of a share `rate` of `n` items; None when n is 0."""
    if not n:
        return None
    z2n = z * z / n
    centre = (rate + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(rate * (1 - rate) / n + z2n / (4 * n)) / (1 + z2n)
    return max(0.0, centre - half), min(1.0, centre + half)


def interval_text(rate: float | None, n: int) -> str:
    """The interval in whole percent, "[49–69]", or "" when there is nothing to bound."""
    ci = None if rate is None else wilson(rate, n)
    return "" if ci is None else f"[{100 * ci[0]:.0f}–{100 * ci[1]:.0f}]"


def rate_text(rate: float | None, n: int) -> str:
    """A share in percent with its interval, "81.9% [73–88]"; "—" without a rate, no interval without items."""
    return "—" if rate is None else f"{100 * rate:.1f}% {interval_text(rate, n)}".rstrip()
