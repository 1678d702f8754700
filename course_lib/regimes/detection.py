"""Market regimes (lesson 07): causal detectors, regime-aware memory and honest scoring.

A regime detector is only useful if it could have run live, so every detector here answers "which regime
are we in, given the bars up to t?" and nothing more:

* :class:`HMMRegimeDetector` fits a Gaussian hidden Markov model (hmmlearn's ``GaussianHMM``) on the
  training period only and applies it to later bars with a **forward filter** written out here in log
  space (:func:`forward_filter`). hmmlearn's own ``predict``/``predict_proba`` run Viterbi and forward-
  backward smoothing over the whole sequence they are given: the probability at t then uses bars after t.
  That smoothed answer is kept, under the name :meth:`HMMRegimeDetector.smooth`, as a labelled look-ahead
  oracle (an upper bound no live system reaches).
* :class:`MarkovSwitchingDetector`: statsmodels' ``MarkovRegression`` (Hamilton's filter), fitted on the
  training period, then run with fixed parameters over the longer sequence; only its *filtered* marginal
  probabilities are used.
* :class:`VolatilityThresholdDetector`: trailing volatility against thresholds taken from the training
  period (the baseline every fancy model must beat).
* :class:`KNNRegimeDetector`: the chapter's memory vote. Memory entries carry a regime label and the time
  that label became known; a query at t retrieves its nearest neighbours among the entries known by t and
  :func:`regime_vote` turns their labels into probabilities. It is **supervised** (it needs past true
  labels), the others are not.

Scoring: unsupervised states have arbitrary numbers, so :func:`align_labels` matches them to true regimes
with the Hungarian assignment, fitted on the training period (fitting it on the test period is a look-ahead
that flatters every detector). :func:`regime_scores` reports balanced accuracy, the adjusted Rand index, the
confusion matrix, switches per year and the detection delay after each true change.

Real data has no ground truth: :func:`label_drawdown_regimes` is a documented causal rule (trailing drawdown
and volatility) to look at next to the well-known episodes in :data:`SP500_EPISODES`, not an accuracy.

Where things are, in the lesson's order: the forward filter (:func:`forward_filter`); the HMM
(:class:`HMMRegimeDetector`: fitted on the training period, filtered vs smoothed); scoring (:func:`align_labels`,
:func:`relabel`, :func:`regime_scores`, :func:`switches_per_year`, :func:`detection_delays`); the memory vote
(:func:`label_available_at`, :func:`regime_vote`, :class:`RegimeAwareMemory` with its regime-restricted search,
:class:`KNNRegimeDetector`); the other detectors of the grid (:class:`MarkovSwitchingDetector`,
:class:`VolatilityThresholdDetector`); real data (:func:`label_drawdown_regimes`, :data:`SP500_EPISODES`).
The experiments live in :mod:`.study`, the input checks in :mod:`.inputs`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from ..data.loaders import DataError
from ..memory.bank import ExternalMemoryBank, SearchResult
from ..memory.config import MemoryConfig
from ..metrics import periods_per_year
from .inputs import _as_frame, _keys_frame, _ns, _paired

__all__ = [
    "CALM_STRESSED",
    "SP500_EPISODES",
    "HMMRegimeDetector",
    "KNNRegimeDetector",
    "MarkovSwitchingDetector",
    "RegimeAwareMemory",
    "RegimeFitWarning",
    "VolatilityThresholdDetector",
    "align_labels",
    "detection_delays",
    "forward_filter",
    "group_regimes",
    "label_available_at",
    "label_drawdown_regimes",
    "min_duration_filter",
    "regime_scores",
    "regime_vote",
    "relabel",
    "switches_per_year",
]

#: The synthetic market's four regimes in two groups a returns-only detector can hope to tell apart.
CALM_STRESSED: dict[str, tuple[str, ...]] = {"calm": ("bull", "sideways"), "stressed": ("bear", "crash")}

#: Well-known S&P 500 stress episodes (start, end, name), for pictures only.
SP500_EPISODES: tuple[tuple[str, str, str], ...] = (
    ("2000-03-24", "2002-10-09", "dot-com bear market"),
    ("2007-10-09", "2009-03-09", "global financial crisis"),
    ("2011-07-22", "2011-10-03", "US downgrade, euro crisis"),
    ("2015-08-17", "2016-02-11", "China devaluation, oil slump"),
    ("2018-09-20", "2018-12-24", "2018 Q4 sell-off"),
)


class RegimeFitWarning(UserWarning):
    """A regime model did not converge from one starting point (it is refitted from others)."""


def forward_filter(log_startprob: np.ndarray, log_transmat: np.ndarray, log_likelihood: np.ndarray,
                   return_loglik: bool = False):
    """Filtered state probabilities ``P(s_t = j | x_1..x_t)`` of a hidden Markov model, in log space.

    ``alpha_0 = log pi + log p(x_0 | s)``; ``alpha_t(j) = logsumexp_i(alpha_{t-1}(i) + log A[i, j]) +
    log p(x_t | s_t = j)``, normalised at each step (so nothing under- or overflows). Row t uses rows
    ``<= t`` of ``log_likelihood`` only: this is the causal half of forward-backward.

    Args:
        log_startprob: (K,) log initial probabilities.
        log_transmat: (K, K) log transition matrix, ``A[i, j] = P(s_{t+1} = j | s_t = i)``.
        log_likelihood: (T, K) emission log-likelihoods ``log p(x_t | s_t = j)``.
        return_loglik: also return the sequence log-likelihood ``log p(x_1..x_T)``.
    """
    ll = np.asarray(log_likelihood, dtype=float)
    if ll.ndim != 2:
        raise ValueError(f"log_likelihood must be (T, K), got shape {ll.shape}.")
    T, K = ll.shape
    log_a = np.asarray(log_transmat, dtype=float)
    trans = np.exp(log_a)
    out = np.empty((T, K))
    total = 0.0
    prev = np.asarray(log_startprob, dtype=float) + (ll[0] if T else 0.0)
    for t in range(T):  # inherently sequential; K is small, so each bar costs a few microseconds
        if t:
            # logsumexp_i(out[t-1, i] + log A[i, j]): out[t-1] is normalised (max <= 0), so exp() is safe
            with np.errstate(divide="ignore"):
                prev = np.log(np.exp(out[t - 1]) @ trans) + ll[t]
        top = np.max(prev)
        if not np.isfinite(top):
            raise ValueError(f"forward_filter: bar {t} is impossible under every state (all log-likelihoods -inf).")
        norm = top + np.log(np.exp(prev - top).sum())
        total += norm
        out[t] = prev - norm
    probs = np.exp(out)
    return (probs, float(total)) if return_loglik else probs


def _state_order(variances: np.ndarray) -> np.ndarray:
    """Fitted states sorted from calm to wild (state 0 = lowest variance): stable names across seeds."""
    return np.argsort(np.asarray(variances, dtype=float), kind="stable")


# ------------------------------------------------------------------------------------------- HMM
class HMMRegimeDetector:
    """Gaussian HMM fitted on the training period, applied causally by a forward filter.

    States are numbered from the calmest (lowest variance of the first column) to the wildest, so state
    numbers mean the same thing across seeds; they are still *not* the true regime names: map them with
    :func:`align_labels` on the training period.

    Args:
        n_regimes: number of hidden states K.
        covariance_type: hmmlearn's ``"diag"`` or ``"full"``.
        n_iter, tol: EM iterations and convergence tolerance (log-likelihood gain per iteration).
        n_init: fits from different seeds whose best log-likelihood is kept (1: one fit).
        max_restarts: extra seeds tried when no fit converged (each failure warns with
            :class:`RegimeFitWarning`; hmmlearn has no restarts of its own).
        stickiness: initial probability of staying in a state (regimes persist; EM then adjusts it).
        seed: first seed; later fits use ``seed + 1, seed + 2, ...``.

    Data are standardised with the training mean and standard deviation (stored, reused for later bars).
    """

    def __init__(self, n_regimes: int = 2, covariance_type: str = "diag", n_iter: int = 200, tol: float = 1e-4,
                 n_init: int = 1, max_restarts: int = 3, stickiness: float = 0.95, seed: int = 0):
        if n_regimes < 1:
            raise ValueError(f"n_regimes must be >= 1, got {n_regimes}.")
        if covariance_type not in ("diag", "full"):
            raise ValueError(f"covariance_type must be 'diag' or 'full', got {covariance_type!r}.")
        if not 0 < stickiness < 1:
            raise ValueError(f"stickiness must be in (0, 1), got {stickiness}.")
        self.n_regimes = n_regimes
        self.covariance_type = covariance_type
        self.n_iter, self.tol = n_iter, tol
        self.n_init, self.max_restarts = max(1, n_init), max(0, max_restarts)
        self.stickiness = stickiness
        self.seed = seed
        self.model_ = None
        self.order_: np.ndarray | None = None
        self.columns_: list[str] | None = None
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self.fitted_until_: pd.Timestamp | None = None
        self.converged_: bool | None = None
        self.seeds_tried_: list[int] = []
        self.loglik_: float | None = None
        self.periods_per_year_: float | None = None

    def __repr__(self) -> str:
        state = f"fitted until {self.fitted_until_}" if self.model_ is not None else "not fitted"
        return f"HMMRegimeDetector(n_regimes={self.n_regimes}, {state})"

    # ---- fitting
    def _standardise(self, frame: pd.DataFrame) -> np.ndarray:
        return (frame.to_numpy(dtype=float) - self.mean_) / self.std_

    def _new_model(self, X: np.ndarray, seed: int):
        from hmmlearn.hmm import GaussianHMM

        K, D = self.n_regimes, X.shape[1]
        rng = np.random.default_rng(seed)
        model = GaussianHMM(K, covariance_type=self.covariance_type, n_iter=self.n_iter, tol=self.tol,
                            random_state=seed, init_params="", params="stmc")
        # our own start (hmmlearn's k-means start costs more than the EM itself): sticky transitions, means
        # near the data's centre, variances spread from calm to wild with a seeded jitter
        model.startprob_ = np.full(K, 1.0 / K)
        off = (1.0 - self.stickiness) / max(K - 1, 1)
        model.transmat_ = np.full((K, K), off) + np.eye(K) * (self.stickiness - off) if K > 1 else np.ones((1, 1))
        model.means_ = X.mean(axis=0) + 0.1 * rng.standard_normal((K, D)) * X.std(axis=0)
        spread = np.geomspace(0.3, 4.0, K) * np.exp(0.3 * rng.standard_normal(K)) if K > 1 else np.ones(1)
        var = X.var(axis=0) + 1e-12
        if self.covariance_type == "diag":
            model.covars_ = spread[:, None] * var[None, :]
        else:
            model.covars_ = np.stack([s * np.diag(var) for s in spread])
        return model

    def _converged(self, model) -> bool:
        mon = model.monitor_
        hist = list(mon.history)
        ok = np.isfinite(hist[-1]) if hist else False
        finished = mon.iter < self.n_iter or (len(hist) > 1 and hist[-1] - hist[-2] < self.tol)
        return bool(ok and finished and np.isfinite(model.transmat_).all())

    def fit(self, train: pd.Series | pd.DataFrame) -> HMMRegimeDetector:
        """Fit on the training period only (a returns Series or a feature DataFrame indexed by bar)."""
        frame = _as_frame(train, "HMMRegimeDetector.fit")
        if len(frame) < 10 * self.n_regimes:
            raise DataError(f"HMMRegimeDetector.fit: {len(frame)} bars are too few for {self.n_regimes} regimes; "
                            "use a longer training period.")
        self.columns_ = list(frame.columns)
        self.mean_ = frame.mean().to_numpy()
        std = frame.std(ddof=0).to_numpy()
        self.std_ = np.where(std > 0, std, 1.0)
        X = self._standardise(frame)
        best, best_ll, any_ok = None, -np.inf, False
        self.seeds_tried_ = []
        seed = self.seed
        fits_left, restarts_left = self.n_init, self.max_restarts
        while fits_left > 0 or (not any_ok and restarts_left > 0):
            if fits_left > 0:
                fits_left -= 1
            else:
                restarts_left -= 1
            self.seeds_tried_.append(seed)
            model = self._new_model(X, seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # hmmlearn's own messages; we judge convergence below
                model.fit(X)
            ok = self._converged(model)
            ll = float(model.score(X)) if np.isfinite(model.transmat_).all() else -np.inf
            if not ok:
                more = "refitting from the next seed" if (fits_left or restarts_left) else "no seeds left"
                warnings.warn(f"HMMRegimeDetector: the EM fit from seed {seed} did not converge within "
                              f"n_iter={self.n_iter} iterations (tol={self.tol}); {more}.", RegimeFitWarning,
                              stacklevel=2)
            if (ok and not any_ok) or ((ok or not any_ok) and ll > best_ll):
                best, best_ll = model, ll
            any_ok = any_ok or ok
            seed += 1
        if not any_ok:
            warnings.warn(f"HMMRegimeDetector: none of {len(self.seeds_tried_)} fits converged; keeping the one with "
                          "the best log-likelihood. Raise n_iter or max_restarts, or use fewer regimes.",
                          RegimeFitWarning, stacklevel=2)
        self.model_, self.loglik_, self.converged_ = best, best_ll, any_ok
        cov = best.covars_
        self.order_ = _state_order(cov[:, 0, 0] if cov.ndim == 3 else cov[:, 0])
        self.fitted_until_ = pd.Timestamp(frame.index[-1]) if isinstance(frame.index, pd.DatetimeIndex) else None
        self.periods_per_year_ = (periods_per_year(frame.index) if isinstance(frame.index, pd.DatetimeIndex)
                                  and len(frame) > 1 else None)  # fmt: skip
        return self

    # ---- applying
    def _check(self, data: pd.Series | pd.DataFrame, where: str) -> tuple[pd.DataFrame, np.ndarray]:
        if self.model_ is None:
            raise RuntimeError(f"{where}: call fit(train) first.")
        frame = _as_frame(data, where)
        if frame.shape[1] != len(self.columns_):
            raise DataError(f"{where}: fitted on {len(self.columns_)} column(s) {self.columns_}, got {frame.shape[1]}.")
        return frame, self._standardise(frame)

    def _frame(self, probs: np.ndarray, index: pd.Index) -> pd.DataFrame:
        out = pd.DataFrame(probs[:, self.order_], index=index, columns=range(self.n_regimes))
        out.columns.name = "regime"
        return out

    def log_likelihood(self, data: pd.Series | pd.DataFrame) -> np.ndarray:
        """(T, K) emission log-likelihoods of the fitted Gaussians, in hmmlearn's state order."""
        _, X = self._check(data, "HMMRegimeDetector.log_likelihood")
        return self.model_._compute_log_likelihood(X)

    def filter(self, data: pd.Series | pd.DataFrame) -> pd.DataFrame:
        """Causal regime probabilities: row t is ``P(regime | bars up to t)``. Pass the whole history up to
        the bars you need (training period included) so the filter starts from the beginning."""
        frame, X = self._check(data, "HMMRegimeDetector.filter")
        m = self.model_
        with np.errstate(divide="ignore"):
            probs = forward_filter(np.log(m.startprob_), np.log(m.transmat_), m._compute_log_likelihood(X))
        return self._frame(probs, frame.index)

    def smooth(self, data: pd.Series | pd.DataFrame) -> pd.DataFrame:
        """LOOK-AHEAD ORACLE: forward-backward probabilities ``P(regime | all bars given)``, hmmlearn's
        ``predict_proba``. Row t uses bars after t; show it as an upper bound, never trade on it."""
        frame, X = self._check(data, "HMMRegimeDetector.smooth")
        out = self._frame(self.model_.predict_proba(X), frame.index)
        out.attrs["look_ahead"] = True
        return out

    def predict(self, data: pd.Series | pd.DataFrame) -> pd.Series:
        """Causal labels: argmax of :meth:`filter` per bar."""
        return _argmax(self.filter(data))

    @property
    def transmat(self) -> pd.DataFrame:
        """Fitted transition matrix in the calm-to-wild state order."""
        o = self.order_
        return pd.DataFrame(self.model_.transmat_[np.ix_(o, o)])

    def state_summary(self, periods: float | None = None) -> pd.DataFrame:
        """Per state: annualised mean and volatility of the first column, expected spell length in bars.

        ``periods``: bars per year; by default inferred from the training bars' spacing
        (:func:`course_lib.periods_per_year`: 252 for exchange days, 365 for a 24/7 market, far more for
        hourly bars). Bars without times need it given.
        """
        if self.model_ is None:
            raise RuntimeError("HMMRegimeDetector: call fit(train) first.")
        if periods is None:
            periods = self.periods_per_year_
            if periods is None:
                raise ValueError("state_summary: the training data had no DatetimeIndex, so the bar frequency is "
                                 "unknown; pass periods=<bars per year> (e.g. 252 for daily stock bars).")
        o = self.order_
        m = self.model_
        cov = m.covars_
        var = (cov[:, 0, 0] if cov.ndim == 3 else cov[:, 0])[o] * self.std_[0] ** 2
        mean = m.means_[o, 0] * self.std_[0] + self.mean_[0]
        stay = np.diag(m.transmat_)[o]
        return pd.DataFrame({"ann_mean": mean * periods, "ann_vol": np.sqrt(var * periods),
                             "mean_spell_bars": 1.0 / np.maximum(1.0 - stay, 1e-12)}).rename_axis("regime")


def _argmax(probs: pd.DataFrame) -> pd.Series:
    cols = np.asarray(probs.columns)
    return pd.Series(cols[np.argmax(probs.to_numpy(), axis=1)], index=probs.index, name="regime")


# ------------------------------------------------------------------------------------------ scoring
def group_regimes(regimes: pd.Series, groups: Mapping[str, Sequence[str]] = CALM_STRESSED) -> pd.Series:
    """Rename fine regimes into groups, e.g. bull/sideways -> calm, bear/crash -> stressed."""
    lookup = {r: g for g, members in groups.items() for r in members}
    missing = sorted(set(regimes.unique()) - set(lookup))
    if missing:
        raise ValueError(f"group_regimes: regimes {missing} belong to no group of {dict(groups)}.")
    return regimes.map(lookup).rename(regimes.name)


def align_labels(true: pd.Series, predicted: pd.Series) -> dict[Any, Any]:
    """Map each predicted state to a true regime by the Hungarian assignment (most bars matched).

    Fit it on the TRAINING period (``true`` and ``predicted`` of the training bars) and apply the mapping
    to later bars with :func:`relabel`; fitting it on the test period uses the test labels to score the
    test labels. States left over when there are more states than regimes go to their most frequent regime.
    """
    t, p = _paired(true, predicted, "align_labels")
    table = pd.crosstab(p, t)
    rows, cols = linear_sum_assignment(-table.to_numpy())
    mapping = {_plain(table.index[r]): _plain(table.columns[c]) for r, c in zip(rows, cols)}
    for state in table.index:
        if _plain(state) not in mapping:
            mapping[_plain(state)] = _plain(table.columns[int(np.argmax(table.loc[state].to_numpy()))])
    return mapping


def _plain(x: Any) -> Any:
    """numpy scalars as plain Python values (a mapping prints as {0: 'calm'}, not {np.int64(0): ...})."""
    return x.item() if isinstance(x, np.generic) else x


def relabel(predicted: pd.Series, mapping: Mapping[Any, Any]) -> pd.Series:
    """Apply an :func:`align_labels` mapping; a state never seen in training raises (say which)."""
    unseen = sorted(set(predicted.dropna().unique()) - set(mapping), key=str)
    if unseen:
        raise ValueError(f"relabel: states {unseen} have no mapping (never seen when the mapping was fitted).")
    return predicted.map(dict(mapping)).rename(predicted.name)


def switches_per_year(labels: pd.Series, periods: float | None = None) -> float:
    """Label changes per year (bars per year from the index unless ``periods`` is given)."""
    arr = labels.to_numpy()
    if len(arr) < 2:
        return float("nan")
    p = periods if periods is not None else periods_per_year(pd.DatetimeIndex(labels.index))
    return float((arr[1:] != arr[:-1]).sum() / (len(arr) / p))


def detection_delays(true: pd.Series, predicted: pd.Series) -> pd.DataFrame:
    """One row per true regime change: when, to which regime, and the bars until the detector first says
    that regime (NaN when it never does before the next true change)."""
    t, p = true.align(predicted, join="inner")
    tv, pv = t.to_numpy(), p.to_numpy()
    change = np.flatnonzero(tv[1:] != tv[:-1]) + 1
    ends = np.r_[change[1:], len(tv)]
    rows = []
    for s, e in zip(change, ends):
        hit = np.flatnonzero(pv[s:e] == tv[s])
        rows.append({"time": t.index[s], "regime": tv[s], "spell_bars": int(e - s),
                     "delay": float(hit[0]) if hit.size else np.nan})
    return pd.DataFrame(rows, columns=["time", "regime", "spell_bars", "delay"])


def regime_scores(true: pd.Series, predicted: pd.Series, periods: float | None = None) -> dict[str, Any]:
    """Scores of ``predicted`` against ``true`` on the same bars, both in the same label space.

    Returns ``balanced_accuracy`` (mean recall over true regimes: a detector that always says "calm" scores
    1/K, not the calm share), ``accuracy``, ``ari`` (adjusted Rand index: 0 for chance, 1 for a perfect
    partition, blind to label names), ``confusion`` (true x predicted counts), ``switches_per_year`` and the
    true one, ``detection_delay`` (mean bars from a true change to its first detection), its median and
    ``detected_share`` (changes detected before the next one). Unsupervised states must be mapped first with
    :func:`align_labels` fitted on the training period.
    """
    from sklearn.metrics import adjusted_rand_score, balanced_accuracy_score

    t, p = _paired(true, predicted, "regime_scores")
    if not set(p.unique()) & set(t.unique()):
        raise ValueError("regime_scores: predicted labels share no name with the true regimes; map the states "
                         "with align_labels(true_train, predicted_train) on the TRAINING period, then relabel().")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when a predicted label is not a true class
        bal = float(balanced_accuracy_score(t, p))
    labels = sorted(set(t.unique()) | set(p.unique()), key=str)
    conf = pd.crosstab(pd.Categorical(t, labels), pd.Categorical(p, labels), dropna=False)
    conf.index.name, conf.columns.name = "true", "predicted"
    out: dict[str, Any] = {"balanced_accuracy": bal, "accuracy": float((t.to_numpy() == p.to_numpy()).mean()),
                           "ari": float(adjusted_rand_score(t, p)), "confusion": conf, "n_bars": int(len(t))}
    if isinstance(true, pd.Series) and isinstance(true.index, pd.DatetimeIndex) and isinstance(predicted, pd.Series):
        tt, pp = true.align(predicted, join="inner")
        ok = tt.notna() & pp.notna()
        tt, pp = tt[ok], pp[ok]
        out["switches_per_year"] = switches_per_year(pp, periods)
        out["true_switches_per_year"] = switches_per_year(tt, periods)
        d = detection_delays(tt, pp)
        out["detection_delay"] = float(d["delay"].mean()) if d["delay"].notna().any() else float("nan")
        out["detection_delay_median"] = float(d["delay"].median()) if d["delay"].notna().any() else float("nan")
        out["detected_share"] = float(d["delay"].notna().mean()) if len(d) else float("nan")
    return out


# ------------------------------------------------------------------------------ memory vote (kNN)
def label_available_at(index: pd.DatetimeIndex, delay: int) -> pd.DatetimeIndex:
    """When the label of each bar becomes known: ``delay`` bars later (``NaT`` past the data's end).

    A true regime is only known in hindsight: here "``delay`` bars after the fact"; a label of the bar's
    own window outcome over h bars would use ``delay = h``.
    """
    if delay < 0:
        raise ValueError(f"delay must be >= 0 bars, got {delay}.")
    index = pd.DatetimeIndex(index).as_unit("ns")
    pos = np.arange(len(index)) + delay
    return pd.DatetimeIndex(index[np.minimum(pos, len(index) - 1)]).where(pos < len(index))


def regime_vote(result: SearchResult, classes: Sequence[Any], weighting: str = "similarity",
                temperature: float = 0.1, field: str = "regime") -> np.ndarray:
    """Turn a memory search into a distribution over the neighbours' regimes: (q, len(classes)).

    ``weighting="count"``: the share of valid neighbours in each regime (the chapter's ``Counter`` vote);
    ``"similarity"``: each neighbour weighted by ``softmax(score / temperature)`` over the valid ones, so a
    close analog counts more than a distant one. Entries hidden by ``as_of`` or missing are ignored; a query
    with no valid neighbour gets the uniform distribution.
    """
    if weighting not in ("count", "similarity"):
        raise ValueError(f"weighting must be 'count' or 'similarity', got {weighting!r}.")
    classes = list(classes)
    mask = np.asarray(result.mask, dtype=bool)
    labels = np.asarray(result.metadata(field))
    scores = np.asarray(result.scores, dtype=float)
    if weighting == "count":
        w = mask.astype(float)
    else:
        z = np.where(mask, scores / temperature, -np.inf)
        zmax = np.max(z, axis=1, keepdims=True)
        w = np.where(mask, np.exp(z - np.where(np.isfinite(zmax), zmax, 0.0)), 0.0)
    out = np.stack([(w * (labels == c)).sum(axis=1) for c in classes], axis=1)
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 0, out / np.where(total > 0, total, 1.0), 1.0 / len(classes))


def min_duration_filter(labels: pd.Series, min_duration: int) -> pd.Series:
    """Causal debounce: switch to a new label only after it was the raw label ``min_duration`` bars in a row.

    Removes one-bar flickers at the cost of ``min_duration - 1`` bars of delay; uses no later bar.
    """
    if min_duration < 1:
        raise ValueError(f"min_duration must be >= 1, got {min_duration}.")
    raw = labels.to_numpy()
    if min_duration == 1 or len(raw) == 0:
        return labels.copy()
    out = raw.copy()
    current, run_label, run = raw[0], raw[0], 0
    for t, x in enumerate(raw):  # a state machine over the past; O(n)
        run = run + 1 if x == run_label else 1
        run_label = x
        if x != current and run >= min_duration:
            current = x
        out[t] = current
    return pd.Series(out, index=labels.index, name=labels.name)


class RegimeAwareMemory:
    """Memory entries that carry a regime label, searchable over all entries or restricted to one regime.

    One :class:`ExternalMemoryBank` per regime plus one over everything: a restricted search is an exact
    search of that regime's entries (no over-fetch-and-filter that would return fewer than ``k``). Every
    search states its time (``as_of``) and sees only entries with ``available_at <= as_of``; an entry's
    ``available_at`` must cover both its outcome and its label (the later of the two).
    """

    def __init__(self, key_dim: int, regimes: Sequence[Any]):
        self.key_dim = key_dim
        self.regimes = list(regimes)
        self._entries: dict[str, list] = {"keys": [], "timestamp": [], "available_at": [], "regime": [],
                                          "future_return": []}
        self._banks: dict[Any, ExternalMemoryBank] | None = None
        self._all: ExternalMemoryBank | None = None

    def __len__(self) -> int:
        return sum(len(k) for k in self._entries["keys"])

    def add(self, keys: Any, regime: Any, timestamp: Any, available_at: Any, future_return: Any = None) -> None:
        """Store entries (keys (n, key_dim); regime, timestamp, available_at (n,); optional outcomes)."""
        keys = np.asarray(keys, dtype=np.float32)
        n = len(keys)
        reg = np.asarray(regime)
        unknown = sorted(set(reg.tolist()) - set(self.regimes), key=str)
        if unknown:
            raise ValueError(f"RegimeAwareMemory.add: regimes {unknown} are not in {self.regimes}.")
        fr = np.full(n, np.nan) if future_return is None else np.asarray(future_return, dtype=float)
        for name, val in (("keys", keys), ("timestamp", timestamp), ("available_at", available_at),
                          ("regime", reg), ("future_return", fr)):
            self._entries[name].append(val)
        self._banks = None

    def _build(self) -> None:
        e = {name: np.concatenate([np.asarray(x) if name in ("keys", "regime", "future_return") else _ns(x)
                                   for x in vals]) if vals else np.zeros(0)
             for name, vals in self._entries.items()}
        code = {r: i for i, r in enumerate(self.regimes)}
        codes = np.array([code[r] for r in e["regime"].tolist()], dtype=np.int64)
        self._banks = {}
        for r, i in code.items():
            sel = codes == i
            self._banks[r] = self._bank(e, sel, codes)
        self._all = self._bank(e, np.ones(len(codes), dtype=bool), codes)

    def _bank(self, e: dict, sel: np.ndarray, codes: np.ndarray) -> ExternalMemoryBank:
        bank = ExternalMemoryBank(MemoryConfig(key_dim=self.key_dim, capacity=max(int(sel.sum()), 1),
                                               backend="numpy"))
        if sel.any():
            bank.add(e["keys"][sel], timestamp=e["timestamp"][sel], available_at=e["available_at"][sel],
                     regime=codes[sel], future_return=e["future_return"][sel])
        return bank

    def search(self, queries: Any, k: int, as_of: Any, regime: Any = None) -> SearchResult:
        """kNN search at times ``as_of``; ``regime`` (one label or one per query) restricts each query to the
        entries of that regime. The result's ``metadata("regime")`` holds regime *codes* (positions in
        ``self.regimes``)."""
        if self._banks is None:
            self._build()
        q = np.array(queries, dtype=np.float32)  # a writable copy (torch warns on read-only views)
        if regime is None:
            return self._all.search(q, k=k, as_of=as_of)
        reg = np.asarray(regime, dtype=object)
        reg = np.full(len(q), reg.item(), dtype=object) if reg.ndim == 0 else reg
        from ..memory.time_filter import NO_TIME_FILTER, query_times

        times = query_times(as_of, len(q), "RegimeAwareMemory.search")
        scores = np.zeros((len(q), k), np.float32)
        slots = np.full((len(q), k), -1, np.int64)
        meta: dict[str, np.ndarray] = {}
        for r in pd.unique(reg):
            rows = np.flatnonzero(reg == r)
            if r not in self._banks:
                raise ValueError(f"RegimeAwareMemory.search: unknown regime {r!r}; known: {self.regimes}.")
            res = self._banks[r].search(q[rows], k=k, as_of=NO_TIME_FILTER if times is None else times[rows])
            scores[rows], slots[rows] = res.scores, res.indices
            for name in res.metadata_names:
                arr = res.metadata(name)
                if name not in meta:
                    meta[name] = np.empty((len(q), k), dtype=arr.dtype)
                meta[name][rows] = arr
        mask = slots >= 0
        zeros = np.zeros((len(q), k, self.key_dim), np.float32)
        return SearchResult(scores, slots, mask, zeros, np.zeros((len(q), k, 0), np.float32), "numpy", meta)

    def forecast(self, queries: Any, k: int, as_of: Any, regime: Any = None) -> np.ndarray:
        """Mean outcome of the valid neighbours per query (NaN where none): the kNN forecaster."""
        res = self.search(queries, k=k, as_of=as_of, regime=regime)
        fr = np.where(res.mask, res.metadata("future_return"), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(fr, axis=1)


class KNNRegimeDetector:
    """The memory vote: a bar's regime is what its nearest past neighbours were labelled. SUPERVISED.

    :meth:`fit` stores one entry per bar: its key, its true regime and the time that label became known
    (``label_delay`` bars later by default, :func:`label_available_at`). :meth:`filter` searches, for each
    query bar t, the ``k`` most similar entries whose label was known at t (``as_of = t``: never itself, a
    later bar or an unknown label) and votes (:func:`regime_vote`). Giving :meth:`fit` labels of bars after
    the training period is allowed and causal: they are used only once known, as a live system would.
    """

    def __init__(self, k: int = 32, weighting: str = "similarity", temperature: float = 0.1, label_delay: int = 20,
                 min_duration: int = 1):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        if label_delay < 1:
            raise ValueError(f"label_delay must be >= 1 bar, got {label_delay}: a bar's true regime is known after "
                             "the bar at the earliest, and with a delay of 0 each bar would retrieve its own label "
                             "(a vote that copies the answer).")  # fmt: skip
        self.k, self.weighting, self.temperature = k, weighting, temperature
        self.label_delay, self.min_duration = label_delay, min_duration
        self.classes_: list[Any] | None = None
        self.memory_: RegimeAwareMemory | None = None

    def __repr__(self) -> str:
        return f"KNNRegimeDetector(k={self.k}, weighting={self.weighting!r}, label_delay={self.label_delay})"

    def fit(self, keys: pd.DataFrame, labels: pd.Series, available_at: Any = None,
            classes: Sequence[Any] | None = None) -> KNNRegimeDetector:
        """Store ``keys`` (DataFrame indexed by bar time) with their true ``labels`` (aligned Series; NaN =
        unknown, not stored). ``available_at`` overrides ``label_delay``."""
        frame = _keys_frame(keys, None, "KNNRegimeDetector.fit")
        lab = labels.reindex(frame.index)
        avail = label_available_at(frame.index, self.label_delay) if available_at is None else available_at
        avail = pd.DatetimeIndex(avail) if not isinstance(avail, pd.DatetimeIndex) else avail
        if len(avail) != len(frame):
            raise ValueError(f"available_at needs one time per key row ({len(frame)}), got {len(avail)}.")
        early = np.asarray(avail.notna() & (avail.as_unit("ns").asi8 <= frame.index.as_unit("ns").asi8))
        if early.any():
            raise ValueError(f"available_at {avail[early][0]} is not after its own bar {frame.index[early][0]}: a "
                             "label is known after its bar at the earliest; otherwise each bar retrieves its own "
                             "label. Use label_available_at(index, delay) with delay >= 1.")  # fmt: skip
        keep = lab.notna().to_numpy()
        self.classes_ = list(classes) if classes is not None else sorted(pd.unique(lab[keep]).tolist(), key=str)
        mem = RegimeAwareMemory(frame.shape[1], self.classes_)
        mem.add(frame.to_numpy()[keep], lab.to_numpy()[keep], frame.index[keep], avail[keep])
        self.memory_ = mem
        return self

    def filter(self, keys: pd.DataFrame) -> pd.DataFrame:
        """Regime probabilities per query bar (columns = classes), each from entries known at that bar."""
        if self.memory_ is None:
            raise RuntimeError("KNNRegimeDetector: call fit(keys, labels) first.")
        frame = _keys_frame(keys, None, "KNNRegimeDetector.filter")
        res = self.memory_.search(frame.to_numpy(), k=self.k, as_of=frame.index)
        codes = list(range(len(self.classes_)))
        probs = regime_vote(res, codes, self.weighting, self.temperature)
        out = pd.DataFrame(probs, index=frame.index, columns=self.classes_)
        out.columns.name = "regime"
        return out

    def predict(self, keys: pd.DataFrame) -> pd.Series:
        """Argmax of the vote, debounced by ``min_duration`` (causal)."""
        return min_duration_filter(_argmax(self.filter(keys)), self.min_duration)


# ------------------------------------------------------------------------------ Markov switching
class MarkovSwitchingDetector:
    """statsmodels' ``MarkovRegression`` (switching mean and variance) with *filtered* probabilities only.

    :meth:`fit` estimates the parameters on the training period (EM from a calm-to-wild start, no random
    search); :meth:`filter` builds the same model on the longer series and runs Hamilton's filter with the
    fitted parameters fixed (``model.filter(params)``): row t depends on bars up to t. :meth:`smooth` is
    the look-ahead oracle (Kim smoother). States are sorted calm to wild, like :class:`HMMRegimeDetector`.
    One series only (a returns Series), scaled by its training standard deviation.
    """

    def __init__(self, n_regimes: int = 2, switching_variance: bool = True, trend: str = "c", em_iter: int = 100,
                 stickiness: float = 0.95):
        if n_regimes < 2:
            raise ValueError(f"MarkovRegression needs n_regimes >= 2, got {n_regimes}.")
        self.n_regimes = n_regimes
        self.switching_variance = switching_variance
        self.trend = trend
        self.em_iter = em_iter
        self.stickiness = stickiness
        self.params_: np.ndarray | None = None
        self.scale_: float | None = None
        self.order_: np.ndarray | None = None
        self.fitted_until_: pd.Timestamp | None = None
        self.llf_: float | None = None

    def __repr__(self) -> str:
        state = f"fitted until {self.fitted_until_}" if self.params_ is not None else "not fitted"
        return f"MarkovSwitchingDetector(n_regimes={self.n_regimes}, {state})"

    def _series(self, data: pd.Series | pd.DataFrame, where: str) -> pd.Series:
        frame = _as_frame(data, where)
        if frame.shape[1] != 1:
            raise DataError(f"{where}: MarkovRegression models one series; pass a returns Series "
                            f"(got {frame.shape[1]} columns).")
        return frame.iloc[:, 0]

    def _model(self, y: np.ndarray):
        from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

        return MarkovRegression(y, k_regimes=self.n_regimes, trend=self.trend,
                                switching_variance=self.switching_variance)

    def _start(self, model, y: np.ndarray) -> np.ndarray:
        K = self.n_regimes
        off = (1.0 - self.stickiness) / (K - 1)
        P = np.full((K, K), off) + np.eye(K) * (self.stickiness - off)
        spread = np.geomspace(0.3, 4.0, K) * np.var(y)
        start = []
        for name in model.param_names:
            trans = re.fullmatch(r"p\[(\d+)->(\d+)\]", name)
            idx = re.search(r"\[(\d+)\]$", name)
            if trans:
                start.append(P[int(trans[1]), int(trans[2])])
            elif name.startswith("sigma2"):
                start.append(spread[int(idx[1])] if idx else float(np.var(y)))
            else:
                start.append(float(np.mean(y)) if name.startswith("const") else 0.0)
        return np.asarray(start)

    def fit(self, train: pd.Series | pd.DataFrame) -> MarkovSwitchingDetector:
        y = self._series(train, "MarkovSwitchingDetector.fit")
        self.scale_ = float(y.std(ddof=0)) or 1.0
        yy = y.to_numpy() / self.scale_
        model = self._model(yy)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # maxiter=0 (EM only) makes statsmodels warn about its BFGS step
            res = model.fit(start_params=self._start(model, yy), em_iter=self.em_iter, search_reps=0, maxiter=0,
                            disp=False)
        self.params_ = np.asarray(res.params, dtype=float)
        if not np.isfinite(self.params_).all():
            raise RuntimeError("MarkovSwitchingDetector.fit: the EM produced NaN parameters; use fewer regimes or "
                               "a longer training period.")
        self.llf_ = float(res.llf)
        names = model.param_names
        if self.switching_variance:
            var = [self.params_[names.index(f"sigma2[{i}]")] for i in range(self.n_regimes)]
        else:
            var = [self.params_[names.index(f"const[{i}]")] for i in range(self.n_regimes)]
        self.order_ = _state_order(var)
        self.fitted_until_ = pd.Timestamp(y.index[-1]) if isinstance(y.index, pd.DatetimeIndex) else None
        return self

    def _run(self, data, where: str, smooth: bool) -> pd.DataFrame:
        if self.params_ is None:
            raise RuntimeError(f"{where}: call fit(train) first.")
        y = self._series(data, where)
        model = self._model(y.to_numpy() / self.scale_)
        res = model.smooth(self.params_) if smooth else model.filter(self.params_)
        probs = np.asarray(res.smoothed_marginal_probabilities if smooth else res.filtered_marginal_probabilities)
        out = pd.DataFrame(probs[:, self.order_], index=y.index, columns=range(self.n_regimes))
        out.columns.name = "regime"
        return out

    def filter(self, data: pd.Series | pd.DataFrame) -> pd.DataFrame:
        """Causal probabilities ``P(regime_t | bars up to t)`` (Hamilton filter, parameters fixed)."""
        return self._run(data, "MarkovSwitchingDetector.filter", smooth=False)

    def smooth(self, data: pd.Series | pd.DataFrame) -> pd.DataFrame:
        """LOOK-AHEAD ORACLE: Kim-smoothed probabilities (row t uses the bars after t)."""
        out = self._run(data, "MarkovSwitchingDetector.smooth", smooth=True)
        out.attrs["look_ahead"] = True
        return out

    def predict(self, data: pd.Series | pd.DataFrame) -> pd.Series:
        return _argmax(self.filter(data))


# ---------------------------------------------------------------------------- volatility threshold
class VolatilityThresholdDetector:
    """Trailing volatility against thresholds learned on the training period.

    The volatility at t is the standard deviation of the last ``window`` returns up to t (fewer at the very
    start). ``quantiles`` are the training-period quantiles that separate the regimes (default: equal
    shares); regime 0 is the calmest. Probabilities are one-hot: this rule has no notion of doubt.
    """

    def __init__(self, n_regimes: int = 2, window: int = 20, quantiles: Sequence[float] | None = None):
        if n_regimes < 1 or window < 2:
            raise ValueError(f"need n_regimes >= 1 and window >= 2, got {n_regimes}, {window}.")
        q = np.linspace(0, 1, n_regimes + 1)[1:-1] if quantiles is None else np.asarray(quantiles, dtype=float)
        if len(q) != n_regimes - 1 or np.any(np.diff(q) <= 0) or np.any((q <= 0) | (q >= 1)):
            raise ValueError(f"quantiles must be {n_regimes - 1} increasing values in (0, 1), got {quantiles}.")
        self.n_regimes, self.window, self.quantiles = n_regimes, window, q
        self.thresholds_: np.ndarray | None = None
        self.fitted_until_: pd.Timestamp | None = None

    def __repr__(self) -> str:
        return f"VolatilityThresholdDetector(n_regimes={self.n_regimes}, window={self.window})"

    def trailing_vol(self, returns: pd.Series | pd.DataFrame) -> pd.Series:
        r = _as_frame(returns, "VolatilityThresholdDetector").iloc[:, 0]
        return r.rolling(self.window, min_periods=2).std()

    def fit(self, train: pd.Series | pd.DataFrame) -> VolatilityThresholdDetector:
        vol = self.trailing_vol(train).dropna()
        if vol.empty:
            raise DataError("VolatilityThresholdDetector.fit: need at least 2 training returns.")
        self.thresholds_ = np.quantile(vol.to_numpy(), self.quantiles)
        self.fitted_until_ = pd.Timestamp(vol.index[-1]) if isinstance(vol.index, pd.DatetimeIndex) else None
        return self

    def predict(self, data: pd.Series | pd.DataFrame) -> pd.Series:
        if self.thresholds_ is None:
            raise RuntimeError("VolatilityThresholdDetector: call fit(train) first.")
        vol = self.trailing_vol(data)
        labels = np.searchsorted(self.thresholds_, vol.fillna(0.0).to_numpy(), side="right")
        return pd.Series(labels, index=vol.index, name="regime")

    def filter(self, data: pd.Series | pd.DataFrame) -> pd.DataFrame:
        labels = self.predict(data)
        out = pd.DataFrame(np.eye(self.n_regimes)[labels.to_numpy()], index=labels.index,
                           columns=range(self.n_regimes))
        out.columns.name = "regime"
        return out


# ------------------------------------------------------------------------------------- real data
def label_drawdown_regimes(close: pd.Series, drawdown_window: int | None = None, vol_window: int = 21,
                           correction: float = 0.10, bear: float = 0.20, high_vol: float = 0.25,
                           periods: float | None = None) -> pd.Series:
    """A causal labelling rule for an index without ground truth: ``calm``, ``correction`` or ``bear``.

    At bar t, with the trailing drawdown ``dd_t = close_t / max(close over the last drawdown_window bars) - 1``
    and the trailing annualised volatility ``vol_t`` of the last ``vol_window`` log returns:

    * ``bear`` if ``dd_t <= -bear`` (a fall of 20% or more from the one-year high, the usual definition);
    * ``correction`` if ``dd_t <= -correction`` or ``vol_t >= high_vol``;
    * ``calm`` otherwise.

    Every input is known at the close of t. It is a *description* to compare detectors with, not a truth.
    ``periods`` (bars per year, for the volatility) is inferred from the bars' spacing by default
    (:func:`course_lib.periods_per_year`: hourly bars are not 252 a year); ``drawdown_window`` defaults to one
    year of bars (``round(periods)``: 252 on exchange days).
    """
    if not 0 < correction < bear < 1:
        raise ValueError(f"need 0 < correction < bear < 1, got correction={correction}, bear={bear}.")
    if periods is None:
        if not isinstance(close.index, pd.DatetimeIndex):
            raise ValueError("label_drawdown_regimes: close has no DatetimeIndex, so the bar frequency is unknown; "
                             "pass periods=<bars per year> (e.g. 252 for daily stock bars).")
        periods = periods_per_year(close.index)
    if drawdown_window is None:
        drawdown_window = int(round(periods))
    peak = close.rolling(drawdown_window, min_periods=1).max()
    dd = close / peak - 1.0
    vol = np.log(close).diff().rolling(vol_window, min_periods=2).std() * np.sqrt(periods)
    out = pd.Series("calm", index=close.index, name="regime", dtype=object)
    out[(dd <= -correction) | (vol >= high_vol)] = "correction"
    out[dd <= -bear] = "bear"
    return out.astype(str)
