"""Statistics over seeds: t-intervals, paired comparisons, log–log rate fits.

Everything here works on plain arrays or tidy DataFrames so that figures and tables
share one definition of "mean and 95 % interval".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

CELL_COLUMNS = ("dataset", "arch", "variant", "skip", "depth", "seed")


@dataclass(frozen=True)
class MeanCI:
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN for n < 2
    lo: float
    hi: float
    n: int


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> MeanCI:
    """Mean and Student-t interval of the finite values (NaN interval when n < 2)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return MeanCI(np.nan, np.nan, np.nan, np.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return MeanCI(mean, np.nan, np.nan, np.nan, 1)
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / np.sqrt(n)
    return MeanCI(mean, std, mean - half, mean + half, n)


def summarize(
    df: pd.DataFrame, by: Sequence[str], value: str, confidence: float = 0.95
) -> pd.DataFrame:
    """Per group of ``by``: mean, std, ci_lo, ci_hi, n (finite values only)."""
    rows = []
    for key, g in df.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        s = mean_ci(g[value].to_numpy(), confidence)
        rows.append((*key, s.mean, s.std, s.lo, s.hi, s.n))
    cols = [*by, "mean", "std", "ci_lo", "ci_hi", "n"]
    return pd.DataFrame(rows, columns=cols)


@dataclass(frozen=True)
class PairedResult:
    mean_diff: float
    lo: float
    hi: float
    p_value: float
    n_pairs: int


def paired_compare(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> PairedResult:
    """Mean of a − b over pairs where both are finite, t-interval and paired t-test p-value."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = int(a.size)
    if n == 0:
        return PairedResult(np.nan, np.nan, np.nan, np.nan, 0)
    ci = mean_ci(a - b, confidence)
    p = float(sps.ttest_rel(a, b).pvalue) if n >= 2 else np.nan
    return PairedResult(ci.mean, ci.lo, ci.hi, p, n)


def paired_vs_reference(
    cells: pd.DataFrame,
    value: str = "test_acc",
    reference: str = "identity",
    by: Sequence[str] = ("dataset", "arch", "depth"),
    confidence: float = 0.95,
    group: str = "variant",
) -> pd.DataFrame:
    """Each variant (column ``group``) against the ``reference`` variant within ``by``, paired
    on seed. Tables without a ``variant`` column (older results) are grouped by ``skip``.

    A pair counts only when both runs have a finite value (a diverged run has none);
    ``n_diverged`` says how many seeds of the variant were lost that way.
    """
    by = list(by)
    if group not in cells.columns:
        group = "skip"
    ref = cells[cells[group] == reference].set_index([*by, "seed"])[value]
    rows = []
    for key, g in cells[cells[group] != reference].groupby([*by, group], sort=True):
        g = g.set_index([*by, "seed"])[value]
        common = g.index.intersection(ref.index)
        res = paired_compare(g.loc[common].to_numpy(), ref.loc[common].to_numpy(), confidence)
        n_div = int((~np.isfinite(g.to_numpy(dtype=float))).sum())
        rows.append((*key, res.mean_diff, res.lo, res.hi, res.p_value, res.n_pairs, n_div))
    cols = [*by, group, "mean_diff", "ci_lo", "ci_hi", "p_value", "n_pairs", "n_diverged"]
    return pd.DataFrame(rows, columns=cols)


@dataclass(frozen=True)
class SlopeFit:
    slope: float
    lo: float
    hi: float
    intercept: float  # of log y = intercept + slope · log m (natural logs)
    n: int


def loglog_slope(
    m: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> SlopeFit:
    """Least-squares fit of log y = a + b log m; t-interval of b on n − 2 degrees of freedom.

    Points with non-finite or non-positive m or y are left out (log undefined).
    """
    m = np.asarray(m, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(m) & np.isfinite(y) & (m > 0) & (y > 0)
    lm, ly = np.log(m[ok]), np.log(y[ok])
    n = int(lm.size)
    if n < 2 or np.unique(lm).size < 2:
        return SlopeFit(np.nan, np.nan, np.nan, np.nan, n)
    fit = sps.linregress(lm, ly)
    if n > 2:
        half = float(sps.t.ppf(0.5 + confidence / 2, df=n - 2)) * float(fit.stderr)
    else:
        half = np.nan  # two points: exact line, no interval
    return SlopeFit(float(fit.slope), fit.slope - half, fit.slope + half, float(fit.intercept), n)


def log_m_over_m_slope(m: Sequence[float] | np.ndarray) -> float:
    """Log–log slope of the O(log m / m) prediction (seeds/000) fitted over the same depths.

    log(log m / m) is not a line in log m, so the prediction's "exponent" depends on the
    depths; fitting it exactly as the data are fitted makes the two comparable. Local
    slope is −1 + 1/ln m, i.e. shallower than −1.
    """
    m = np.asarray(m, dtype=float)
    m = np.unique(m[np.isfinite(m) & (m > 1)])
    return loglog_slope(m, np.log(m) / m).slope
