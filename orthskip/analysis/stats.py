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
    """Log–log slope of the O(log m / m) prediction (the Orthogonal Skip Connections paper)
    fitted over the same depths.

    log(log m / m) is not a line in log m, so the prediction's "exponent" depends on the
    depths; fitting it exactly as the data are fitted makes the two comparable. Local
    slope is −1 + 1/ln m, i.e. shallower than −1.
    """
    m = np.asarray(m, dtype=float)
    m = np.unique(m[np.isfinite(m) & (m > 1)])
    return loglog_slope(m, np.log(m) / m).slope


# ---------------------------------------------------------------- rate-model comparison

# log g(m) of each rate model y = C · g(m) (the power law's g is m^(−a), a fitted)
RATE_MODELS: tuple[str, ...] = ("log_m_over_m", "inv_m", "power", "constant")
RATE_MODEL_LABELS: dict[str, str] = {
    "log_m_over_m": "C·log m / m",
    "inv_m": "C / m",
    "power": "C·m^(−a)",
    "constant": "C",
}
_LOG_SHAPE = {
    "log_m_over_m": lambda lm: np.log(lm) - lm,
    "inv_m": lambda lm: -lm,
    "constant": lambda lm: np.zeros_like(lm),
}


@dataclass(frozen=True)
class ModelFit:
    c: float  # the constant C
    a: float  # the exponent (power law only; NaN otherwise)
    rss: float  # residual sum of squares of log y
    aic: float
    bic: float
    k: int  # fitted parameters, the noise variance included


@dataclass(frozen=True)
class RateComparison:
    fits: dict[str, ModelFit]
    best: str  # lowest criterion; "" when nothing could be fitted
    margin: float  # criterion of the runner-up minus that of the best (≥ 0)
    exponent: float  # a of the power law
    exponent_lo: float  # bootstrap percentile interval over seeds
    exponent_hi: float
    m_min: int
    m_max: int
    n_points: int
    n_seeds: int
    criterion: str


def _fit_model(name: str, lm: np.ndarray, ly: np.ndarray) -> ModelFit:
    """Least squares on log y; Gaussian likelihood on the log scale with σ² = RSS / n."""
    n = lm.size
    if name == "power":
        design = np.column_stack([np.ones(n), -lm])
        coef, *_ = np.linalg.lstsq(design, ly, rcond=None)
        log_c, a = float(coef[0]), float(coef[1])
        resid = ly - design @ coef
        k = 3
    else:
        shape = _LOG_SHAPE[name](lm)
        log_c = float(np.mean(ly - shape))  # the one-parameter least-squares solution
        resid = ly - shape - log_c
        a, k = np.nan, 2
    rss = float(resid @ resid)
    # a perfect fit has no finite likelihood: floor the variance at float precision
    loglik_term = n * np.log(max(rss / n, np.finfo(float).tiny))
    return ModelFit(
        float(np.exp(log_c)), a, rss, loglik_term + 2 * k, loglik_term + k * np.log(n), k
    )


def _rate_points(m, y, seeds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = np.asarray(m, dtype=float)
    y = np.asarray(y, dtype=float)
    s = np.zeros_like(m) if seeds is None else np.asarray(seeds)
    # log m / m is 0 at m = 1 (log undefined): every model is fitted on m ≥ 2 so that the
    # criteria compare the same data
    ok = np.isfinite(m) & np.isfinite(y) & (m >= 2) & (y > 0)
    return np.log(m[ok]), np.log(y[ok]), s[ok]


def _m_range(lm: np.ndarray) -> tuple[int, int]:
    if lm.size == 0:
        return 0, 0
    return int(np.rint(np.exp(lm.min()))), int(np.rint(np.exp(lm.max())))


def compare_rate_models(
    m: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    seeds: Sequence[int] | np.ndarray | None = None,
    *,
    criterion: str = "aic",
    n_boot: int = 1000,
    confidence: float = 0.95,
    rng_seed: int = 0,
) -> RateComparison:
    """Fit each of RATE_MODELS to y vs m by least squares on log y, every (m, seed) point a
    replicate; rank them by AIC or BIC.

    The exponent's interval resamples whole seeds with replacement (each drawn seed brings all
    its depths) ``n_boot`` times and takes percentiles of the refitted a; with one seed (or
    seeds None) it is NaN. Points with m < 2, y ≤ 0 or non-finite values are left out.
    """
    if criterion not in ("aic", "bic"):
        raise ValueError(f"criterion {criterion!r}: expected 'aic' or 'bic'")
    lm, ly, s = _rate_points(m, y, seeds)
    n_seeds = int(np.unique(s).size) if seeds is not None else 0
    n = int(lm.size)
    if n < 4 or np.unique(lm).size < 2:  # below 4 points the power law has ≤ 1 residual dof
        nan_fit = ModelFit(np.nan, np.nan, np.nan, np.nan, np.nan, 0)
        return RateComparison({k: nan_fit for k in RATE_MODELS}, "", np.nan, np.nan, np.nan,
                              np.nan, *_m_range(lm), n, n_seeds, criterion)  # fmt: skip
    fits = {name: _fit_model(name, lm, ly) for name in RATE_MODELS}
    score = {name: getattr(f, criterion) for name, f in fits.items()}
    order = sorted(score, key=score.get)
    margin = float(score[order[1]] - score[order[0]])
    lo = hi = np.nan
    if n_seeds >= 2:
        rng = np.random.default_rng(rng_seed)
        labels = np.unique(s)
        members = [np.flatnonzero(s == lab) for lab in labels]
        boots = []
        for _ in range(n_boot):
            idx = np.concatenate([members[j] for j in rng.integers(len(labels), size=len(labels))])
            if np.unique(lm[idx]).size >= 2:
                boots.append(_fit_model("power", lm[idx], ly[idx]).a)
        if boots:
            q = (1 - confidence) / 2
            lo, hi = (float(v) for v in np.quantile(boots, [q, 1 - q]))
    return RateComparison(fits, order[0], margin, fits["power"].a, lo, hi, *_m_range(lm), n,
                          n_seeds, criterion)  # fmt: skip


def rate_model_curve(name: str, fit: ModelFit, m: np.ndarray) -> np.ndarray:
    """y = C · g(m) of a fitted model on the depths m."""
    m = np.asarray(m, dtype=float)
    if name == "power":
        return fit.c * m ** (-fit.a)
    return fit.c * np.exp(_LOG_SHAPE[name](np.log(m)))


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    k = order.size
    adj = np.maximum.accumulate((k - np.arange(k)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out
