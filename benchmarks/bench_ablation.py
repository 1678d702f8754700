"""The ablation ladder at full size: what the memory path adds, against plain retrieval and a linear model.

Runs :func:`course_lib.compare_arms` (the function lesson 04 uses at smaller size) on

* ``planted``: lesson 04's planted market (:data:`course_lib.PLANTED_MARKET`, seed 0; the defaults were chosen
  while looking at it),
* ``unseen``: a second planted market no default was tuned on (:data:`course_lib.UNSEEN_MARKET`, seed
  :data:`course_lib.UNSEEN_MARKET_SEED`),
* ``sp500``: the bundled S&P 500 (no planted answer),

and prints one table per market: accuracy per arm and subset, the paired difference to ``no_memory`` with a
t-interval over seeds and a block bootstrap over test windows, then ``full`` against the best retrieval
baseline on the onsets and the gate by window type (onset, aftermath, no motif).

Usage: ``python benchmarks/bench_ablation.py [--market unseen] [--seeds 5] [--epochs 10] [--bars 20000]
[--arms full,no_memory,...] [--set key=value ...] [--workers 2]``. ``--set`` changes a
``MemoryTransformerConfig`` field (``--set gate_inputs=none``) or, prefixed ``trainer.``, a ``TrainerConfig``
field (``--set trainer.weight_decay=0.01``): the way candidate changes were measured. About 5 minutes per planted
market with the arms no_memory, full, knn_analog and raft_linear, and 10 with every arm, on 2 CPU cores
(``--workers 2 --threads 1``).
"""

from __future__ import annotations

import argparse
import ast
import time
from dataclasses import fields, replace

import pandas as pd
import torch

import course_lib as cl
from course_lib.parallel import process_pool


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def configs(sets: list[str], input_dim: int, seq_len: int, epochs: int):
    mcfg = cl.MemoryTransformerConfig(input_dim=input_dim, seq_len=seq_len)
    tcfg = cl.TrainerConfig(epochs=epochs, progress=False, device="cpu")
    mnames, tnames = {f.name for f in fields(mcfg)}, {f.name for f in fields(tcfg)}
    for item in sets:
        key, _, val = item.partition("=")
        if key.startswith("trainer."):
            key = key[len("trainer."):]
            if key not in tnames:
                raise SystemExit(f"--set {item}: TrainerConfig has no field {key!r}")
            tcfg = replace(tcfg, **{key: _value(val)})
        else:
            if key not in mnames:
                raise SystemExit(f"--set {item}: MemoryTransformerConfig has no field {key!r}")
            mcfg = replace(mcfg, **{key: _value(val)})
    return mcfg, tcfg


def ladder(splits, subsets: dict, arms: tuple[str, ...], args):
    """``cl.compare_arms`` on one market with the command line's settings, seeds and worker processes."""
    mcfg, tcfg = configs(args.set, splits.train.n_features, splits.test.seq_len, args.epochs)
    executor = process_pool(args.workers) if args.workers > 1 else None
    try:
        return cl.compare_arms(splits.train, splits.val, splits.test, mcfg, tcfg, arms=arms,
                               seeds=tuple(range(args.seeds)), subsets=subsets, progress=False, executor=executor)
    finally:
        if executor is not None:
            executor.shutdown()


def run_market(name: str, args) -> None:
    t0 = time.perf_counter()
    market = None
    if name == "sp500":
        splits = cl.prepare_dataset(cl.load_sample("sp500"), seq_len=args.sp_seq_len)
        subsets = {}
    else:
        cfg, seed = ((cl.PLANTED_MARKET, 0) if name == "planted" else (cl.UNSEEN_MARKET, cl.UNSEEN_MARKET_SEED))
        market = cl.make_synthetic_market(n_bars=args.bars, seed=seed, config=cfg)
        splits = cl.prepare_dataset(market.ohlcv, seq_len=args.seq_len)
        subsets = cl.motif_subsets(market, splits.test)
    arms = tuple(args.arms.split(","))
    cmp = ladder(splits, subsets, arms, args)
    seconds = time.perf_counter() - t0
    print(f"\n=== {name}: {len(splits.test)} test windows, {args.seeds} seeds, <= {args.epochs} epochs, "
          f"{seconds:.0f} s; changes: {args.set or 'none'} ===")
    with pd.option_context("display.width", 220, "display.max_rows", 200):
        print((cmp.summary * [100, 1, 1, 100, 100, 100, 100, 100]).round(2).to_string())
    if market is not None and "onset" in subsets:
        for base in ("knn_analog", "raft_linear"):
            if "full" in arms and base in arms:
                d = cmp.paired("full", base, "onset")
                print(f"full - {base} on onsets: {cl.read_interval(d['diff'], d['seed_ci_low'], d['seed_ci_high'])}; "
                      f"bootstrap [{100 * d['boot_ci_low']:+.1f}, {100 * d['boot_ci_high']:+.1f}]")
    if args.save:
        import pickle

        with open(f"{args.save}_{name}.pkl", "wb") as fh:
            pickle.dump({"summary": cmp.summary, "per_seed": cmp.per_seed, "predictions": cmp.predictions,
                         "subsets": subsets}, fh)
    contrast = ("onset", "no_motif") if "onset" in subsets else None
    for arm, column in (("full", "gate"), ("full", "blend"), ("attention_only", "gate"), ("blend_only", "blend")):
        if arm in arms:
            print(f"\n{column} of the {arm} arm by window type:")
            print(cl.gate_by_subset(cmp, arm, contrast=contrast, column=column).round(4).to_string())


def retrieval_by_size(sizes: list[int], seq_len: int, k: int = 32, temperature: float = 0.05) -> pd.DataFrame:
    """No training: how well plain retrieval reads the unseen market's onsets as the market (and its memory) grows.

    Per size: the motifs of each type the training period holds, the onset test windows, an oracle that knows each
    motif's planted direction, the top-``k`` neighbours' softmax-weighted outcome with the window's last 10 and 16
    returns as the key (cosine, causal ``as_of``; 16 is the transformer's starting key), the neighbours' agreement
    ``|sum w sign(y)|`` on onsets and on no-motif windows, and ``raft_linear``.
    """
    import numpy as np

    from course_lib.analog_index import AnalogIndex

    rows = []
    for n_bars in sizes:
        market = cl.make_synthetic_market(n_bars=n_bars, seed=cl.UNSEEN_MARKET_SEED, config=cl.UNSEEN_MARKET)
        sp = cl.prepare_dataset(market.ohlcv, seq_len=seq_len)
        tr, te = sp.train, sp.test
        sub = cl.motif_subsets(market, te)
        onset, none = sub["onset"], sub["no_motif"]
        y, ytr = np.asarray(te.y, float), np.asarray(tr.y, float)
        planted = cl.planted_direction(market, te)
        ends = market.motifs["end_pos"].to_numpy()
        row = {"bars": n_bars, "motifs per type in memory": int((ends <= tr.end_pos.max()).sum()) // len(market.motif_names),
               "onsets": int(onset.sum()), "oracle %": 100 * np.mean(np.sign(y[onset]) == planted[onset])}
        for lb in (10, 16):
            index = AnalogIndex(lb, "cosine")
            index.add(np.ascontiguousarray(tr.X[:, -lb:, 0], np.float32), tr.end_time_ns(), tr.available_at_ns(),
                      tr.end_pos, ytr)
            hits = index.search(np.ascontiguousarray(te.X[:, -lb:, 0], np.float32), k=k, as_of=te.end_time_ns())
            sim = np.where(hits.mask, hits.similarity, -np.inf)
            w = np.where(hits.mask, np.exp((sim - sim.max(axis=1, keepdims=True)) / temperature), 0.0)
            w /= w.sum(axis=1, keepdims=True)
            out = ytr[np.where(hits.mask, hits.indices, 0)]
            signal, agree = (w * out).sum(axis=1), np.abs((w * np.sign(out)).sum(axis=1))
            row[f"returns {lb} bars %"] = 100 * np.mean(np.sign(signal[onset]) == np.sign(y[onset]))
            if lb == 16:
                row["agreement onset / no motif"] = f"{agree[onset].mean():.2f} / {agree[none].mean():.2f}"
        raft = cl.raft_forecast(tr, sp.val, te, k=k, lookback=16)
        row["raft_linear %"] = 100 * np.mean(np.sign(raft.pred[onset]) == np.sign(y[onset]))
        rows.append(row)
    return pd.DataFrame(rows).set_index("bars").round(1)


def retrieval_by_memory(n_bars: int, seq_len: int, keep: tuple[int, ...] = (1000, 2000, 4000, 8000),
                        k: int = 32) -> pd.DataFrame:
    """The same test windows, a memory cut to its most recent ``keep`` training windows: ``raft_linear``'s accuracy
    on the unseen market's onsets, which separates the memory's size from the test period's."""
    import numpy as np

    market = cl.make_synthetic_market(n_bars=n_bars, seed=cl.UNSEEN_MARKET_SEED, config=cl.UNSEEN_MARKET)
    sp = cl.prepare_dataset(market.ohlcv, seq_len=seq_len)
    onset = cl.motif_subsets(market, sp.test)["onset"]
    rows = []
    for n in sorted({min(n, len(sp.train)) for n in (*keep, len(sp.train))}):
        recent = sp.train.subset(np.arange(len(sp.train) - n, len(sp.train)))
        raft = cl.raft_forecast(recent, sp.val, sp.test, k=k, lookback=16)
        rows.append({"windows in memory": n, "onsets": int(onset.sum()),
                     "raft_linear onset %": 100 * cl.direction_accuracy(raft.pred[onset], sp.test.y[onset])})
    return pd.DataFrame(rows).set_index("windows in memory").round(1)


def across_draws(args) -> None:
    """The unseen market's settings, several draws (market seeds): one ladder per draw, then the onset differences
    with a t-interval over draws. One draw is one test period; a gain that holds across draws is a property of
    the market's settings, not of a lucky test period."""
    import numpy as np

    rows = []
    arms = tuple(args.arms.split(","))
    for seed in [int(x) for x in args.market_seeds.split(",")]:
        t0 = time.perf_counter()
        market = cl.make_synthetic_market(n_bars=args.bars, seed=seed, config=cl.UNSEEN_MARKET)
        splits = cl.prepare_dataset(market.ohlcv, seq_len=args.seq_len)
        subsets = cl.motif_subsets(market, splits.test)
        onset, y = subsets["onset"], np.asarray(splits.test.y, float)
        cmp = ladder(splits, subsets, arms, args)
        row = {"market seed": seed, "onsets": int(onset.sum()),
               "oracle %": 100 * np.mean(np.sign(y[onset]) == cl.planted_direction(market, splits.test)[onset])}
        for a in arms:
            row[f"{a} %"] = 100 * cmp.summary.loc[(a, "onset"), "accuracy"]
        for other in [a for a in arms if a != "full"]:
            d = cmp.paired("full", other, "onset")
            row[f"full - {other}"] = 100 * d["diff"]
            row[f"full - {other} window CI"] = f"[{100 * d['boot_ci_low']:+.1f}, {100 * d['boot_ci_high']:+.1f}]"
        blend = cl.gate_by_subset(cmp, "full", contrast=("onset", "no_motif"), column="blend")
        row["blend onset - no motif"] = blend.loc["onset - no_motif", "mean"]
        row["seconds"] = round(time.perf_counter() - t0)
        rows.append(row)
        print(pd.DataFrame([row]).to_string(index=False), flush=True)
    table = pd.DataFrame(rows).set_index("market seed")
    print(f"\n=== unseen market settings, {len(rows)} draws of {args.bars} bars, {args.seeds} training seeds each ===")
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        print(table.round(2).to_string())
    for col in [c for c in table if c.startswith("full - ") and not c.endswith("CI")] + ["blend onset - no motif"]:
        ci = cl.t_interval(table[col].to_numpy(float))
        print(f"{col} on onsets, over draws: {ci['diff']:+.3f} [{ci['ci_low']:+.3f}, {ci['ci_high']:+.3f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--market", choices=["planted", "unseen", "sp500", "all"], default="unseen")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--bars", type=int, default=20000,
                        help="bars of each planted market (20,000: the memory holds each motif type about 80 times)")
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--sp-seq-len", type=int, default=64)
    parser.add_argument("--arms", default=",".join(cl.ARMS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workers", type=int, default=1, help="processes training side by side (1: serial)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--save", default=None, help="pickle the summary and predictions to SAVE_<market>.pkl")
    parser.add_argument("--market-seeds", default=None, metavar="SEED,SEED",
                        help="unseen market only: one ladder per market draw, then the onset differences over draws")
    parser.add_argument("--retrieval-sizes", default=None, metavar="BARS,BARS",
                        help="only the training-free table: plain retrieval on the unseen market's onsets per market size")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.market_seeds:
        across_draws(args)
        return
    if args.retrieval_sizes:
        sizes = [int(float(b)) for b in args.retrieval_sizes.split(",")]
        with pd.option_context("display.width", 220):
            print(retrieval_by_size(sizes, args.seq_len).to_string())
            print(f"\nthe {max(sizes)}-bar market's test windows, memory cut to its most recent windows:")
            print(retrieval_by_memory(max(sizes), args.seq_len).to_string())
        return
    for name in (["planted", "unseen", "sp500"] if args.market == "all" else [args.market]):
        run_market(name, args)


if __name__ == "__main__":
    main()
