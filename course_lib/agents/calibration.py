"""Is a stated confidence of 0.7 right 70% of the time? Calibration fitted on past outcomes only.

An agent says "long, confidence 0.8". Whether that 0.8 means anything is an empirical question the memory can
answer: the agent's resolved decisions pair each stated confidence with a win or a loss. Platt scaling (a
logistic regression on the logit of the confidence; Platt, 1999; two parameters fitted by Newton's method) or
isotonic regression (a monotone step function, scikit-learn's; Zadrozny and Elkan, 2002) map stated confidences to observed win rates. Fitted on the whole history
this would be look-ahead, so :func:`calibrate_confidence` refits as time goes by on the decisions whose
outcome was known *before* each decision.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

__all__ = ["brier_score", "calibrate_confidence", "calibration_report", "reliability_table"]


def brier_score(prob, outcome) -> float:
    """Mean squared difference between the stated probability and the 0/1 outcome (lower is better)."""
    p = np.asarray(prob, dtype=float)
    y = np.asarray(outcome, dtype=float)
    ok = np.isfinite(p) & np.isfinite(y)
    return float(np.mean((p[ok] - y[ok]) ** 2)) if ok.any() else float("nan")


def reliability_table(prob, outcome, n_bins: int = 10) -> pd.DataFrame:
    """Per confidence bin: mean stated probability, observed frequency of wins, count (the reliability diagram)."""
    p = np.asarray(prob, dtype=float)
    y = np.asarray(outcome, dtype=float)
    ok = np.isfinite(p) & np.isfinite(y)
    p, y = p[ok], y[ok]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    rows = [(edges[b], edges[b + 1], p[bins == b].mean(), y[bins == b].mean(), int((bins == b).sum()))
            for b in range(n_bins) if (bins == b).any()]
    return pd.DataFrame(rows, columns=["bin_low", "bin_high", "mean_confidence", "win_rate", "n"])


def _fit(method: str, conf: np.ndarray, win: np.ndarray):
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(conf, win)
        return model.predict

    def logit(c):
        c = np.clip(np.asarray(c, float), 1e-4, 1 - 1e-4)
        return np.log(c / (1 - c))

    a, b = _platt_fit(logit(conf), win)
    return lambda c: 0.5 * (1.0 + np.tanh(0.5 * (a * logit(c) + b)))


def _platt_fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 100) -> tuple[float, float]:
    """Logistic regression of y on x (slope, intercept) by Newton's method with step halving, and a whisper
    of L2 on the slope so a perfectly separable history still gives a finite answer (two parameters: no
    library needed)."""

    def loss(a: float, b: float) -> float:
        z = a * x + b
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * a * a)

    a, b = 0.0, 0.0
    current = loss(a, b)
    for _ in range(steps):
        p = 0.5 * (1.0 + np.tanh(0.5 * (a * x + b)))
        g = np.array([np.sum((p - y) * x) + l2 * a, np.sum(p - y)])
        w = p * (1 - p) + 1e-12
        h = np.array([[np.sum(w * x * x) + l2, np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
        step = np.linalg.solve(h, g)
        t = 1.0
        while t > 1e-8 and loss(a - t * step[0], b - t * step[1]) > current:
            t *= 0.5
        a, b = a - t * step[0], b - t * step[1]
        new = loss(a, b)
        if current - new < 1e-12:
            break
        current = new
    return float(a), float(b)


def calibrate_confidence(decisions: pd.DataFrame, method: str = "isotonic", min_history: int = 50,
                         refit_every: int = 20) -> pd.Series:
    """Calibrated win probability of every decision, each fitted only on outcomes known before it.

    Args:
        decisions: one agent's decisions with ``decided_at``, ``confidence``, ``pnl`` and ``resolved_at``
            (e.g. ``memory.decisions(now=end)``; unresolved rows have NaN ``pnl``).
        method: ``"isotonic"`` or ``"platt"``.
        min_history: resolved outcomes needed before the first fit (NaN before that).
            Decisions without a stated confidence are left out of every fit and stay NaN; a warning says how
            many (also in ``result.attrs["no_confidence"]``).
        refit_every: refit after this many decisions (each fit uses outcomes resolved by the refit's time,
            a subset of what every later decision could know).
    """
    if method not in ("isotonic", "platt"):
        raise ValueError(f"method must be 'isotonic' or 'platt', got {method!r}.")
    need = {"decided_at", "confidence", "pnl", "resolved_at"}
    if need - set(decisions.columns):
        raise ValueError(f"decisions needs the columns {sorted(need)}; missing {sorted(need - set(decisions.columns))}.")
    d = decisions.sort_values(["decided_at"], kind="mergesort")
    decided = d["decided_at"].to_numpy("datetime64[ns]")
    resolved = pd.to_datetime(d["resolved_at"]).to_numpy("datetime64[ns]")
    conf = d["confidence"].to_numpy(float)
    win = (d["pnl"].to_numpy(float) > 0).astype(float)
    stated = np.isfinite(conf)
    if not stated.all():  # record_decision allows a decision without a confidence: fit and score the others
        warnings.warn(f"calibrate_confidence: {int((~stated).sum())} of {len(d)} decisions state no confidence; "
                      "they are left out of every fit and get no calibrated value (NaN).", UserWarning, stacklevel=2)
    known = ~np.isnat(resolved) & np.isfinite(d["pnl"].to_numpy(float)) & stated
    out = np.full(len(d), np.nan)
    predict = None
    for start in range(0, len(d), refit_every):
        train = known & (resolved <= decided[start])
        if train.sum() >= min_history:
            predict = _fit(method, conf[train], win[train])
        if predict is not None:
            block = np.arange(start, min(start + refit_every, len(d)))
            block = block[np.isfinite(conf[block])]
            if len(block):
                out[block] = np.clip(predict(conf[block]), 0.0, 1.0)
    result = pd.Series(out, index=d.index, name="calibrated").reindex(decisions.index)
    result.attrs["no_confidence"] = int((~stated).sum())
    return result


def calibration_report(decisions: pd.DataFrame, method: str = "isotonic", min_history: int = 50,
                       refit_every: int = 20, n_bins: int = 10) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Calibrate each agent's decisions causally; Brier score of the stated and the calibrated confidence on
    the same decisions (those with a calibrated value and a known outcome), and pooled reliability tables."""
    rows, stated, calibrated, wins = [], [], [], []
    for agent, d in decisions.groupby("agent", sort=True):
        cal = calibrate_confidence(d, method, min_history, refit_every)
        ok = cal.notna() & d["pnl"].notna() & d["confidence"].notna()
        y = (d.loc[ok, "pnl"] > 0).astype(float)
        rows.append({"agent": agent, "n": int(ok.sum()), "no_confidence": int(d["confidence"].isna().sum()),
                     "win_rate": float(y.mean()) if ok.any() else np.nan,
                     "mean_confidence": float(d.loc[ok, "confidence"].mean()) if ok.any() else np.nan,
                     "brier_stated": brier_score(d.loc[ok, "confidence"], y),
                     "brier_calibrated": brier_score(cal[ok], y)})
        stated.append(d.loc[ok, "confidence"])
        calibrated.append(cal[ok])
        wins.append(y)
    s, c, y = pd.concat(stated), pd.concat(calibrated), pd.concat(wins)
    tables = {"stated": reliability_table(s, y, n_bins), f"calibrated ({method})": reliability_table(c, y, n_bins)}
    return pd.DataFrame(rows).set_index("agent"), tables
