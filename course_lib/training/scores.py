"""How a forecast is scored, in training, validation and the memory-vs-no-memory comparison alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

__all__ = ["direction_accuracy", "information_coefficient"]


def direction_accuracy(signal: np.ndarray, y: np.ndarray) -> float:
    """Share of samples where ``sign(signal) == sign(y)``, ignoring zero (or missing) labels.

    A zero label has no direction to get right; a zero (flat) signal on a moving market counts as a miss.
    :func:`~course_lib.compare_memory_vs_local` scores its bootstrap samples with the same rule.
    """
    signal, y = np.asarray(signal, dtype=float), np.asarray(y, dtype=float)
    ok = (y != 0) & np.isfinite(y) & np.isfinite(signal)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.sign(signal[ok]) == np.sign(y[ok])))


def information_coefficient(pred: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation between forecasts and outcomes (the quant's IC)."""
    pred, y = pd.Series(np.asarray(pred, dtype=float)), pd.Series(np.asarray(y, dtype=float))
    ok = pred.notna() & y.notna()
    if ok.sum() < 3 or pred[ok].nunique() < 2:
        return float("nan")
    return float(pred[ok].rank().corr(y[ok].rank()))


def forecast_scores(pred: np.ndarray, signal: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """MSE and MAE of the return forecast (return units), direction accuracy of ``signal``, rank IC."""
    return {
        "mse": float(np.mean((pred - y) ** 2)),
        "mae": float(np.mean(np.abs(pred - y))),
        "direction_accuracy": direction_accuracy(signal, y),
        "ic": information_coefficient(pred, y),
    }


def train_scores(preds: list[torch.Tensor], signals: list[torch.Tensor], y: np.ndarray) -> dict[str, float]:
    """An epoch's training-batch predictions scored like validation (``train_`` prefixed).

    ``preds``/``signals``: per-batch return forecasts and ``p_up - p_down`` in the order the batches ran; ``y``
    the labels in that same order.
    """
    pred = torch.cat(preds).cpu().numpy().astype(np.float64)
    signal = torch.cat(signals).cpu().numpy()
    return {f"train_{name}": value for name, value in forecast_scores(pred, signal, y).items()}
