"""A simple, explainable window embedding: PCA of the last few bars of scaled features.

Before the model lesson learns an encoder, the memory needs keys from somewhere. Flattening the last
``lookback`` rows of a window's (train-scaled) features gives a vector that describes "what the recent
bars looked like"; PCA, fitted on the *training* windows only, keeps the ``n_components`` directions with
the most variance, which removes noise and makes the key short (fast search, less curse of dimension).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["WindowEmbedder"]


@dataclass
class WindowEmbedder:
    """PCA on flattened window tails. ``fit`` on training windows, ``transform`` any windows.

    Attributes set by ``fit``: ``mean_`` (flattened mean), ``components_`` (n_components, lookback*F),
    ``explained_variance_ratio_``.
    """

    n_components: int = 32
    lookback: int = 16
    mean_: np.ndarray | None = field(default=None, repr=False)
    components_: np.ndarray | None = field(default=None, repr=False)
    explained_variance_ratio_: np.ndarray | None = field(default=None, repr=False)

    def _flat(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, np.float32)
        if X.ndim != 3:
            raise ValueError(f"windows must be (n, seq_len, n_features), got shape {X.shape}")
        if X.shape[1] < self.lookback:
            raise ValueError(f"lookback={self.lookback} is longer than the windows (seq_len={X.shape[1]})")
        return X[:, -self.lookback:, :].reshape(len(X), -1)

    def fit(self, X_train: np.ndarray) -> WindowEmbedder:
        flat = self._flat(X_train).astype(np.float64)
        if self.n_components > min(flat.shape):
            raise ValueError(f"n_components={self.n_components} > min(n_windows, lookback*features)={min(flat.shape)}")
        self.mean_ = flat.mean(axis=0)
        _, s, vt = np.linalg.svd(flat - self.mean_, full_matrices=False)
        var = s**2
        self.components_ = vt[: self.n_components].astype(np.float32)
        self.explained_variance_ratio_ = (var[: self.n_components] / var.sum()).astype(np.float32)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self.components_ is None:
            raise RuntimeError("call fit(train_windows) before transform")
        return ((self._flat(X) - self.mean_.astype(np.float32)) @ self.components_.T).astype(np.float32)

    def fit_transform(self, X_train: np.ndarray) -> np.ndarray:
        return self.fit(X_train).transform(X_train)
