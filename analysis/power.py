"""Why a verdict may differ from the paper's: the power this study's test had at its n.

The paper tested each variant against V with Welch's t-test on 200 trials per pair (20 in the
top 10 %). A significant result there means the observed standardised difference was at least
`smallest_significant_d` at that n; a non-significant one means it was below it. We report, for
our n, the power to detect that smallest paper-significant effect and the power to detect the
effect we observed, with statsmodels' `TTestIndPower` (two-sided, two independent samples; the
t-test's power is the usual approximation for the rank test, whose asymptotic efficiency
against it is >= 0.864 and 0.955 under normal data).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats as sps
from statsmodels.stats.power import TTestIndPower

POWER_GOAL = 0.8


def smallest_significant_d(n1: int, n2: int, alpha: float = 0.05) -> float:
    """The smallest |Cohen's d| a two-sided pooled t-test calls significant at (n1, n2)."""
    dof = n1 + n2 - 2
    return float(sps.t.ppf(1 - alpha / 2, dof) * math.sqrt(1 / n1 + 1 / n2))


def power(d: float, n: int, n_base: int, alpha: float = 0.05) -> float:
    """Power of the two-sided two-sample t-test to detect |d| with n and n_base trials."""
    if not (np.isfinite(d) and n >= 2 and n_base >= 2) or d == 0:
        return np.nan
    return float(TTestIndPower().power(effect_size=abs(d), nobs1=n, ratio=n_base / n, alpha=alpha))


def n_for_power(d: float, alpha: float = 0.05, goal: float = POWER_GOAL) -> float:
    """Trials per group (equal groups) the t-test needs to detect |d| with power `goal`."""
    if not np.isfinite(d) or abs(d) < 1e-6:
        return np.nan
    with warnings.catch_warnings(record=True):  # a failed root search: handled below
        warnings.simplefilter("ignore")
        n = TTestIndPower().solve_power(effect_size=abs(d), power=goal, ratio=1.0, alpha=alpha)
    n = float(np.asarray(n).reshape(-1)[0])
    if np.isfinite(n):
        return float(math.ceil(n))
    # statsmodels' root search fails where the root lies below 2 per group (|d| above about 6,
    # as diverged trials give): power grows with |d|, and d = 3 already needs only 4
    return 2.0 if abs(d) >= 3 else np.nan


def explain(
    paper: str,
    ours: str,
    n: int,
    n_base: int,
    g: float,
    g_lo: float,
    g_hi: float,
    paper_n: int,
    alpha: float = 0.05,
    diverged: int = 0,
) -> dict[str, object]:
    """Power numbers, a cause and one sentence for a verdict that differs from the paper's.

    The cause, where the paper found an effect and we did not: "too few trials" while our
    interval for g still holds an effect the paper's test could call significant, in its
    direction; "real disagreement" once it excludes all of them. Where we found an effect and the
    paper did not: "compatible" while our interval still holds effects too small for the paper's
    test, "real disagreement" once it excludes them. Opposite directions: "real disagreement"."""
    d_paper = smallest_significant_d(paper_n, paper_n, alpha)
    out: dict[str, object] = {
        "paper n": paper_n,
        "smallest d significant at paper n": d_paper,
        "power for that d here": power(d_paper, n, n_base, alpha),
        "power for observed g": power(g, n, n_base, alpha),
        "n per group for 80% power (observed g)": n_for_power(g, alpha),
        "cause": "",
    }
    known = np.isfinite(g_lo) and np.isfinite(g_hi)
    interval = f"our g interval [{_num(g_lo)}, {_num(g_hi)}]"
    parts = []
    if paper in ("worse", "better") and ours not in ("worse", "better"):
        parts.append(
            f"the paper's {paper} result needs |d| >= {d_paper:.2f} at its n = {paper_n}; "
            f"at n = {n} vs {n_base} our test had {_pct(out['power for that d here'])} power "
            f"to detect that effect and {_pct(out['power for observed g'])} for the observed "
            f"g = {_num(g)}"
        )
        need = out["n per group for 80% power (observed g)"]
        if np.isfinite(need):
            parts.append(f"80% power for g = {_num(g)} needs about {need:.0f} trials per group")
        # g > 0: the variant is worse; the paper's effect, in our sign, lies beyond +-d_paper
        holds = g_hi >= d_paper if paper == "worse" else g_lo <= -d_paper
        if known and not holds:
            out["cause"] = "real disagreement"
            parts.append(
                f"{interval} excludes every effect of |d| >= {d_paper:.2f} in the paper's "
                "direction: a real disagreement"
            )
        else:
            out["cause"] = "too few trials"
            if known:
                parts.append(
                    f"{interval} still holds effects of |d| >= {d_paper:.2f} in the paper's "
                    "direction: too few trials to tell"
                )
    elif paper not in ("worse", "better") and ours in ("worse", "better"):
        beyond = (g > 0 and g_lo > d_paper) or (g < 0 and g_hi < -d_paper)
        out["cause"] = "real disagreement" if beyond else "compatible"
        parts.append(
            f"observed g = {_num(g)} [{_num(g_lo)}, {_num(g_hi)}]; the paper's n.s. at "
            f"n = {paper_n} means its observed |d| was below {d_paper:.2f}, which our interval "
            + ("excludes: a real disagreement" if beyond else "does not exclude")
        )
    elif paper != ours:
        out["cause"] = "real disagreement"
        parts.append(f"opposite directions: the paper found {paper}, this study {ours}")
    if diverged:
        parts.append(f"{diverged} trial(s) of this variant diverged (above the fence)")
    out["explanation"] = "; ".join(parts)
    return out


def _pct(value: object) -> str:
    return f"{100 * float(value):.0f}%" if np.isfinite(float(value)) else "unknown"


def _num(value: float) -> str:
    return f"{value:.2f}" if np.isfinite(value) else "n/a"
