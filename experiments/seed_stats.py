"""Statistics over seeds for the experiment tables: mean ± std of per-run numbers, and a paired
test."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float] | None:
  """Mean and sample std (ddof=1; 0 for one value) over seeds; None when empty."""
  if not values:
    return None
  values = np.asarray(values, float)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def paired_test(kd: Sequence[float], student: Sequence[float]) -> dict:
  """Two-sided exact Wilcoxon signed-rank test of KD vs student over paired (seed, volume) values.

  Wilcoxon rather than a paired t-test: with 3–9 pairs normality of the differences cannot be
  checked, and the signed-rank test needs none. The smallest two-sided p it can give is 2 / 2^n
  (0.25 for 3 pairs), so with one seed it cannot reach 0.05 whatever the effect. The paired t-test
  is reported alongside.
  """
  from scipy import stats

  kd, student = np.asarray(kd, float), np.asarray(student, float)
  diff = kd - student
  out = {
    "n": int(len(diff)),
    "mean_diff": float(diff.mean()) if len(diff) else None,
    "wins": int((diff > 0).sum()),
    "wilcoxon_p": None,
    "t_p": None,
    "min_p": 2.0 / 2 ** len(diff),
  }
  if len(diff) >= 1 and np.any(diff != 0):
    out["wilcoxon_p"] = float(
      stats.wilcoxon(kd, student, alternative="two-sided", method="exact").pvalue
    )
  if len(diff) >= 2 and np.std(diff) > 0:
    out["t_p"] = float(stats.ttest_rel(kd, student).pvalue)
  return out
