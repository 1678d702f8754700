"""Smoke test of every trainer path and the torch memory kernel on a GPU (or, without one, on the CPU).

CI has no GPU, so device bugs (a CPU tensor meeting a CUDA buffer) only show up on a learner's Colab. This
script runs, on ``cuda`` when torch sees one: a tiny fit with validation (evaluate every epoch), evaluate,
predict (training memory and online memory), neighbours, a save/load round trip that must reproduce the
predictions exactly, and the memory bank's torch kernel on the device against a numpy brute-force search
with the causal ``as_of`` filter. Without CUDA it runs the same checks on the CPU and says so.

Usage: ``python benchmarks/gpu_smoke.py [--device cuda]``. Prints one PASS/FAIL line per check with its time;
the exit status is 1 if any check failed. About 10-30 s on a laptop CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from course_lib import ExternalMemoryBank, MemoryConfig, make_synthetic_market, prepare_dataset
from course_lib.model import MemoryTransformerConfig
from course_lib.training import MemoryTransformerTrainer, TrainerConfig

SEQ = 16


def check(name: str, fn: Callable[[], str | None], results: list[bool]) -> None:
    """Run one check; print PASS/FAIL, its time and a detail line (the traceback's last line on failure)."""
    t0 = time.perf_counter()
    try:
        detail = fn() or ""
        ok = True
    except Exception as exc:  # noqa: BLE001 - a smoke test reports every failure and carries on
        detail = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(limit=3)
        ok = False
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'}  {name:38s} {time.perf_counter() - t0:7.2f} s  {detail}", flush=True)


def brute_force(keys: np.ndarray, avail: np.ndarray, queries: np.ndarray, as_of: np.ndarray, k: int):
    """Reference search: cosine scores, entries with available_at > as_of removed, top k (scores, slots)."""
    kn = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    s = qn @ kn.T
    s[avail[None, :] > as_of[:, None]] = -np.inf
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, axis=1), idx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    args = parser.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA GPU here.")
    if device.startswith("cuda"):
        print(f"device {device}: {torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}")
    else:
        print(f"no CUDA: ran on {device} (torch {torch.__version__}, {torch.get_num_threads()} threads)")

    splits = prepare_dataset(make_synthetic_market(n_bars=600, seed=3).ohlcv, seq_len=SEQ)
    mcfg = MemoryTransformerConfig(input_dim=splits.train.n_features, seq_len=SEQ, d_model=16, n_heads=2,
                                   n_layers=2, d_ff=24, key_dim=8, n_neighbors=8)
    tcfg = TrainerConfig(epochs=2, batch_size=64, progress=False, seed=0, device=device)
    trainer = MemoryTransformerTrainer(mcfg, tcfg, scaler=splits.scaler)
    results: list[bool] = []
    state: dict[str, pd.DataFrame] = {}

    def fit() -> str:
        hist = trainer.fit(splits.train, splits.val)
        assert hist["val_loss"].notna().all() and np.isfinite(hist["train_loss"]).all(), hist
        return f"val_loss {hist['val_loss'].iloc[-1]:.4f}, amp {trainer.amp_dtype}"

    def evaluate() -> str:
        m = trainer.evaluate(splits.test)
        assert all(np.isfinite(m[k]) for k in ("loss", "mse", "mae", "direction_accuracy")), m
        return f"test loss {m['loss']:.4f}, accuracy {m['direction_accuracy']:.3f}"

    def predict() -> str:
        state["pred"] = p = trainer.predict(splits.test)
        assert p["pred_return"].notna().all() and p["memory_return"].notna().all()
        return f"{len(p)} rows"

    def neighbours() -> str:
        nb = trainer.neighbours(splits.test.subset(np.arange(3)), top=2)
        assert len(nb) == 6 and (nb["neighbour_available_at"] <= nb["time"]).all(), nb
        return "3 windows x top 2, all resolved before the query"

    def round_trip() -> str:
        with tempfile.TemporaryDirectory() as tmp:
            trainer.save(Path(tmp) / "ckpt")
            loaded = MemoryTransformerTrainer.load(Path(tmp) / "ckpt", device=device)
            pd.testing.assert_frame_equal(state["pred"], loaded.predict(splits.test), check_exact=True)
        return "identical predictions"

    def online() -> str:
        t = MemoryTransformerTrainer(mcfg, TrainerConfig(epochs=1, batch_size=64, progress=False, seed=0,
                                                         device=device, predict_memory="online"))
        t.fit(splits.train, splits.val)
        assert t.predict(splits.test)["pred_return"].notna().all()
        return "online memory"

    def bank() -> str:
        rng = np.random.default_rng(0)
        n, d, q, k = 20_000, 32, 256, 16
        keys = rng.normal(size=(n, d)).astype(np.float32)
        avail = np.arange(n, dtype=np.int64) * 10
        queries = rng.normal(size=(q, d)).astype(np.float32)
        as_of = rng.integers(0, 10 * n, q).astype(np.int64)
        mem = ExternalMemoryBank(MemoryConfig(key_dim=d, capacity=n, backend="torch", device=device))
        mem.add(keys, timestamp=avail - 1, available_at=avail)
        res = mem.search(torch.from_numpy(queries).to(device), k=k, as_of=as_of)  # also warms up the kernel
        t0 = time.perf_counter()
        res = mem.search(torch.from_numpy(queries).to(device), k=k, as_of=as_of)
        ms = 1000 * (time.perf_counter() - t0)
        assert res.indices.device.type == torch.device(device).type, res.indices.device
        ref_s, ref_i = brute_force(keys, avail, queries, as_of, k)
        got_s, got_i, mask = (res.scores.cpu().numpy(), res.indices.cpu().numpy(), res.mask.cpu().numpy())
        valid = np.isfinite(ref_s)
        assert (mask == valid).all(), "valid-neighbour masks differ"
        assert np.allclose(got_s[mask], ref_s[valid], atol=1e-4), "scores differ"
        agree = float(np.mean(got_i[mask] == ref_i[valid]))
        assert agree >= 0.99, f"only {agree:.3f} of the slots agree"  # ties in float32 may swap neighbours
        return f"{n} keys x {q} queries, k={k}: {ms:.1f} ms, slots agree {agree:.4f}"

    for name, fn in [("fit(train, val)", fit), ("evaluate(test)", evaluate), ("predict(test)", predict),
                     ("neighbours", neighbours), ("save/load round trip", round_trip),
                     ("predict_memory='online'", online), (f"memory bank torch on {device} vs numpy", bank)]:
        check(name, fn, results)
    print(f"{sum(results)}/{len(results)} checks passed on {device}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
