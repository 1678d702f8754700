"""How a forecast is scored, in training, validation and the memory-vs-no-memory comparison alike."""

from __future__ import annotations

import numpy as np
import torch

from ..metrics import direction_accuracy, information_coefficient

__all__: list[str] = []  # direction_accuracy and information_coefficient live in course_lib.metrics


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
