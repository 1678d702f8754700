"""Training throughput of the memory transformer on the bundled S&P 500 windows, with and without memory.

Prints one table: median training samples/s over a few epochs (an epoch's time includes the memory searches
of every step and the end-of-epoch key refresh), the memory overhead against the same config without memory
per epoch and per step (the epoch less its key refresh), and the CPU cost drivers worth knowing (attention
dropout, batch size, threads, per-position retrieval).

A second table times the default config's training steps with and without memory interleaved on the same
batches: the robust number for the per-step overhead on a shared, noisy machine.

Usage: ``python benchmarks/bench_training.py [--epochs 3] [--quick] [--device cuda] [--steps 60]``. Never
pass/fail: read the numbers. ``--device cuda`` times a GPU (with the trainer's mixed precision); the header names the device.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from course_lib import load_sample, prepare_dataset
from course_lib.model import MemoryTransformerConfig
from course_lib.training import MemoryTransformerTrainer, TrainerConfig


def run(train, mcfg: MemoryTransformerConfig, tcfg: TrainerConfig) -> tuple[float, float]:
    """Median samples/s over the epochs after the first (warm-up), and the fitted trainer's key-refresh time."""
    trainer = MemoryTransformerTrainer(mcfg, tcfg)
    hist = trainer.fit(train)
    sps = hist["samples_per_s"].to_numpy()
    refresh = float("nan")
    if mcfg.use_memory:
        t0 = time.perf_counter()
        trainer.refresh_memory_keys()
        refresh = time.perf_counter() - t0
    return float(np.median(sps[1:] if len(sps) > 1 else sps)), refresh


def paired_steps(train, mcfg: MemoryTransformerConfig, tcfg: TrainerConfig, steps: int) -> dict[str, float]:
    """Training steps of the memory model and of the same model without memory, interleaved on the same
    batches (memory, local, memory, local, ...), so both see the same machine load: the per-epoch numbers
    above are taken minutes apart and a shared machine drifts by more than the effect being measured.

    A step = forward (with the memory search), loss, backward, clipping, AdamW update: the trainer's own
    methods. A third arm runs the memory model's step with its retrieval done beforehand (``retrieved=``,
    outside the timing): the difference to the full memory step is what the search costs *inside* a
    training step, where it competes with torch for caches and cores (more than the search timed alone,
    the last column). Returns the median step time of each arm, the overheads as medians of the per-batch
    time ratios, and the median time of the search alone (``retrieve`` on the same batches)."""
    from course_lib.model import retrieve

    arms = {}
    for name, cfg in (("memory", mcfg), ("local", replace(mcfg, use_memory=False))):
        trainer = MemoryTransformerTrainer(cfg, replace(tcfg, epochs=1))
        trainer.fit(train)  # warm: memory built, allocator and thread pools settled
        trainer.model.train()
        arms[name] = (trainer, torch.optim.AdamW(trainer.model.parameters(), lr=1e-4))
    X = torch.from_numpy(np.ascontiguousarray(train.X)).to(arms["memory"][0].device)
    Y = torch.from_numpy(np.asarray(train.y, dtype=np.float32)).to(X.device)
    end_ns = train.end_time_ns()
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {"memory": [], "local": [], "searched before": [], "search": []}

    def step(trainer, opt, xb, yb, t, retrieved=None) -> float:
        t0 = time.perf_counter()
        with trainer._autocast():
            out = trainer._forward(xb, t) if retrieved is None else trainer.model(xb, retrieved=retrieved)
            loss, _ = trainer._loss(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), 1.0)
        opt.step()
        if xb.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    mem_trainer, mem_opt = arms["memory"]
    for _ in range(steps):
        idx = rng.choice(len(train), tcfg.batch_size, replace=False)
        xb, yb, t = X[idx], Y[idx], end_ns[idx]
        for name, (trainer, opt) in arms.items():
            times[name].append(step(trainer, opt, xb, yb, t))
        with torch.no_grad(), mem_trainer._autocast():
            query = mem_trainer.model(xb, memory=mem_trainer.memory, as_of=t)["query_key"]
        t0 = time.perf_counter()
        found = retrieve(mem_trainer.memory, query, mcfg.n_neighbors, t)
        times["search"].append(time.perf_counter() - t0)
        times["searched before"].append(step(mem_trainer, mem_opt, xb, yb, t, retrieved=found))
    mem, loc, pre = (np.array(times[k]) for k in ("memory", "local", "searched before"))
    return {"step ms memory": 1e3 * np.median(mem), "step ms no memory": 1e3 * np.median(loc),
            "step overhead %": 100 * (np.median(mem / loc) - 1),
            "overhead without search %": 100 * (np.median(pre / loc) - 1),
            "search ms (alone)": 1e3 * np.median(times["search"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="only the default config with/without memory")
    parser.add_argument("--device", default="cpu", help="torch device to train on: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--steps", type=int, default=60, help="interleaved steps per arm in the side-by-side table")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA GPU here; run on a GPU machine or use --device cpu.")
    splits = prepare_dataset(load_sample("sp500"), seq_len=64)
    train = splits.train
    base = MemoryTransformerConfig(input_dim=train.n_features, seq_len=64)
    tbase = TrainerConfig(epochs=args.epochs, patience=0, progress=False, device=args.device)
    variants: list[tuple[str, MemoryTransformerConfig, TrainerConfig]] = [("default", base, tbase)]
    if not args.quick:
        variants += [
            ("attn_dropout=0.1", replace(base, attn_dropout=0.1), tbase),
            ("dropout=0", replace(base, dropout=0.0), tbase),
            ("batch_size=64", base, replace(tbase, batch_size=64)),
            ("batch_size=256", base, replace(tbase, batch_size=256)),
            ("threads=1", base, replace(tbase, num_threads=1)),
            ("memory_backend=auto", base, replace(tbase, memory_backend="auto")),
            ("fusion=joint", replace(base, fusion="joint"), tbase),
            ("memory_layers=(0,1)", replace(base, memory_layers=(0, 1)), tbase),
            ("retrieval=position", replace(base, retrieval="position"), tbase),
        ]
    rows = []
    for name, mcfg, tcfg in variants:
        with_mem, refresh = run(train, mcfg, tcfg)
        without, _ = run(train, replace(mcfg, use_memory=False), tcfg)
        epoch_mem, epoch_local = len(train) / with_mem, len(train) / without
        rows.append({
            "variant": name, "samples/s memory": with_mem, "samples/s no memory": without,
            "memory overhead %": 100 * (epoch_mem / epoch_local - 1),
            # the same without the once-per-epoch key refresh: what each training step costs
            "step overhead %": 100 * ((epoch_mem - refresh) / epoch_local - 1), "key refresh s": refresh,
            "epoch s (memory)": epoch_mem,
        })
        print(f"done: {name}", flush=True)
    table = pd.DataFrame(rows).set_index("variant")
    if device.type == "cuda":
        where = f"device {args.device} ({torch.cuda.get_device_name(device)}, mixed precision)"
    else:
        where = f"device {args.device} ({torch.get_num_threads()} threads)"
    print(f"\nTraining throughput on {where}, {len(train)} S&P 500 windows (seq_len 64), torch {torch.__version__}, "
          f"median of epochs 2..{args.epochs}")
    print(table.round(2).to_string())
    paired = pd.DataFrame([{"variant": name, **paired_steps(train, mcfg, tcfg, args.steps)}
                           for name, mcfg, tcfg in variants[:1]]).set_index("variant")
    print(f"\nSide by side: {args.steps} training steps per arm, interleaved on the same batches (medians; "
          "overhead = median of the per-batch time ratios; 'without search': the memory step with its "
          "retrieval done beforehand; search alone = the memory's retrieve timed on its own)")
    print(paired.round(2).to_string())


if __name__ == "__main__":
    main()
