"""orthskip.analysis.stats against hand computations and synthetic data with known answers."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from orthskip.analysis.stats import (
    log_m_over_m_slope,
    loglog_slope,
    mean_ci,
    paired_compare,
    summarize,
)

# Student t with 2 degrees of freedom has the closed-form quantile (2p − 1) / √(2p(1 − p)).
T_975_DF2 = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)


def test_mean_ci_three_values_matches_table_quantile():
    s = mean_ci([1.0, 2.0, 3.0])
    half = T_975_DF2 * 1.0 / math.sqrt(3)
    assert s.n == 3
    assert s.mean == pytest.approx(2.0)
    assert s.std == pytest.approx(1.0)
    assert (s.lo, s.hi) == pytest.approx((2.0 - half, 2.0 + half), rel=1e-12)


def test_mean_ci_ignores_nan_and_inf_and_handles_small_n():
    s = mean_ci([0.5, np.nan, 0.7, np.inf])
    assert s.n == 2 and s.mean == pytest.approx(0.6)
    one = mean_ci([0.3, np.nan])
    assert one.n == 1 and one.mean == pytest.approx(0.3) and math.isnan(one.lo)
    none = mean_ci([np.nan])
    assert none.n == 0 and math.isnan(none.mean)


def test_mean_ci_coverage_is_about_95_percent():
    rng = np.random.default_rng(1)
    hits = 0
    trials = 1500
    for _ in range(trials):
        s = mean_ci(rng.normal(3.0, 2.0, size=5))
        hits += s.lo <= 3.0 <= s.hi
    assert 0.93 <= hits / trials <= 0.97


def test_summarize_groups():
    df = pd.DataFrame({"g": ["a", "a", "a", "b", "b"], "v": [1.0, 2.0, 6.0, 4.0, np.nan]})
    s = summarize(df, ["g"], "v").set_index("g")
    assert s.loc["a", "mean"] == pytest.approx(3.0)
    assert s.loc["a", "std"] == pytest.approx(statistics.stdev([1.0, 2.0, 6.0]))
    assert s.loc["a", "n"] == 3 and s.loc["b", "n"] == 1


def test_paired_compare_against_hand_t_test():
    a = np.array([0.91, 0.93, 0.90, 0.95])
    b = np.array([0.90, 0.90, 0.89, 0.92])
    d = a - b
    t = d.mean() / (d.std(ddof=1) / math.sqrt(4))
    p = 2 * sps.t.sf(abs(t), df=3)
    r = paired_compare(a, b)
    assert r.n_pairs == 4
    assert r.mean_diff == pytest.approx(d.mean())
    assert r.p_value == pytest.approx(p, rel=1e-10)
    assert r.lo < r.mean_diff < r.hi


def test_paired_compare_drops_incomplete_pairs():
    r = paired_compare([1.0, np.nan, 3.0, 5.0], [0.5, 1.0, np.inf, 4.0])
    assert r.n_pairs == 2
    assert r.mean_diff == pytest.approx(0.75)


def test_loglog_slope_exact_power_law():
    m = np.array([2, 4, 8, 16, 32, 64, 128], dtype=float)
    fit = loglog_slope(m, 3.7 / m)
    assert abs(fit.slope + 1.0) < 1e-6
    assert fit.intercept == pytest.approx(math.log(3.7))
    assert abs(fit.lo + 1.0) < 1e-6 and abs(fit.hi + 1.0) < 1e-6


def test_loglog_slope_noisy_interval_covers_true_rate():
    rng = np.random.default_rng(0)
    m = np.repeat([4.0, 8.0, 16.0, 32.0, 64.0], 3)
    hits, trials = 0, 400
    for _ in range(trials):
        y = 0.8 * m**-0.7 * np.exp(rng.normal(0, 0.15, m.size))
        fit = loglog_slope(m, y)
        assert fit.lo < fit.slope < fit.hi
        hits += fit.lo <= -0.7 <= fit.hi
    assert 0.92 <= hits / trials <= 0.98


def test_loglog_slope_skips_non_positive_and_needs_two_depths():
    fit = loglog_slope([1, 2, 4, 8], [0.0, 0.5, 0.25, np.nan])
    assert fit.n == 2 and fit.slope == pytest.approx(-1.0)
    assert math.isnan(fit.lo)  # two points: no interval
    assert math.isnan(loglog_slope([4, 4, 4], [1.0, 2.0, 3.0]).slope)


def test_log_m_over_m_slope_is_local_derivative():
    # d log(log m / m) / d log m = −1 + 1/ln m
    for m0 in (8.0, 100.0):
        est = log_m_over_m_slope([m0, m0 * (1 + 1e-6)])
        assert est == pytest.approx(-1 + 1 / math.log(m0), abs=1e-5)
    assert -1.0 < log_m_over_m_slope([4, 8, 16, 32]) < -0.4
