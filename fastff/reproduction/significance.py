"""The statistics behind the claims: a difference in test error between two models, its
interval, and the tests that say whether it is there or whether it is small.

Two models scored on one test set are paired example by example. With one seed each, what
varies is only the test set's sample of examples: McNemar's exact test and the interval of a
difference of paired proportions say whether the two *trained nets* differ. With several seeds
(each its own weights and training stream, one test set for all), the models' runs are paired
by seed, and two questions have two tests:

* across seeds: the paired t-test on the per-seed differences, and its t interval. This is the
  test of the initialization claims (another seed is another initialization and another stream).
  Its power is small with few seeds: with 3 seeds, p < 0.005 needs |t| > 14.1 (t with 2
  degrees of freedom), so the per-seed differences must agree to within about a fourteenth of
  their mean; with 5 seeds |t| > 5.6; a sign test could never get there (2 / 2^n is 0.25 and
  0.0625).
* pooled over seeds: the Cochran-Mantel-Haenszel test stratified by seed, which for pairs
  matched example by example is McNemar's test on the discordant examples summed over the
  seeds (exact: a binomial test). It counts the test sets' sampling in every seed at once,
  not the spread between seeds.
"""
import math

import numpy as np


def _z(level):
    """The two-sided normal quantile of ``level`` (0.005: 2.807) (scipy)."""
    from scipy import stats
    return float(stats.norm.ppf(1 - level / 2))


def discordant(correct_a, correct_b):
    """(examples only ``a`` gets right, examples only ``b`` gets right)."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def paired_interval(correct_a, correct_b, level):
    """The difference in error, ``a`` minus ``b`` (a fraction), of two models on one test
    set, with its two-sided ``1 - level`` interval (the normal interval of a difference of
    paired proportions). Returns (difference, low, high)."""
    n = len(correct_a)
    only_a, only_b = discordant(correct_a, correct_b)
    diff = (only_b - only_a) / n  # a's errors are b's, less what only a gets right, ...
    var = max(((only_a + only_b) / n - diff * diff) / n, 0.0)
    half = _z(level) * math.sqrt(var)
    return diff, diff - half, diff + half


def seed_interval(errors_a, errors_b, level):
    """The mean over seeds of the difference in error ``a`` minus ``b`` (``errors_*``:
    {seed: error}, the same seeds), the two-sided ``1 - level`` t interval over seeds and the
    paired t-test's p-value. Returns (difference, low, high, p)."""
    from scipy import stats
    seeds = sorted(errors_a)
    diff = np.array([errors_a[s] - errors_b[s] for s in seeds], np.float64)
    mean = float(diff.mean())
    if len(diff) < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(diff.std(ddof=1))
    if sd < 1e-12:  # the same difference in every seed: no spread to test against
        return mean, mean, mean, (1.0 if abs(mean) < 1e-12 else 0.0)
    half = float(stats.t.ppf(1 - level / 2, len(diff) - 1)) * sd / math.sqrt(len(diff))
    return mean, mean - half, mean + half, float(stats.ttest_1samp(diff, 0.0).pvalue)


def matched_pooled(outcomes_a, outcomes_b):
    """The Cochran-Mantel-Haenszel test of two models' paired test outcomes, stratified by
    seed (``outcomes_*``: {seed: boolean array}, the same seeds and test set): for pairs matched
    example by example it is McNemar's test on the discordant examples of every seed summed,
    here exact (a two-sided binomial test). Returns (p, only a right, only b right)."""
    from scipy import stats
    only_a = only_b = 0
    for seed in sorted(outcomes_a):
        a, b = discordant(outcomes_a[seed], outcomes_b[seed])
        only_a, only_b = only_a + a, only_b + b
    if only_a + only_b == 0:
        return 1.0, 0, 0
    return float(stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue), only_a, only_b
