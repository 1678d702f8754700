"""MemoryTransformerTrainer: causal memory in training and prediction, checkpoints, reproducibility."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

import course_lib.training as training
from course_lib import make_synthetic_market, prepare_dataset
from course_lib.model import MemoryTransformerConfig
from course_lib.training import (
    CheckpointError,
    MemoryTransformerTrainer,
    TrainerConfig,
    compare_memory_vs_local,
    direction_accuracy,
    information_coefficient,
)

SEQ = 16
CONTRACT_COLUMNS = ["pred_return", "p_down", "p_flat", "p_up", "position", "memory_return", "memory_up_share"]


@pytest.fixture(scope="module")
def splits():
    market = make_synthetic_market(n_bars=420, seed=3)
    return prepare_dataset(market.ohlcv, seq_len=SEQ)


def mcfg(**kw) -> MemoryTransformerConfig:
    base = dict(input_dim=7, seq_len=SEQ, d_model=16, n_heads=2, n_layers=2, d_ff=24, key_dim=8, n_neighbors=8)
    base.update(kw)
    return MemoryTransformerConfig(**base)


def tcfg(**kw) -> TrainerConfig:
    base = dict(epochs=2, batch_size=64, progress=False, seed=0, device="cpu")
    base.update(kw)
    return TrainerConfig(**base)


class Recorder:
    """Wraps the memory and records every search (as_of and returned slots)."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def __len__(self):
        return len(self.inner)

    def search(self, queries, k=32, as_of=None):
        res = self.inner.search(queries, k=k, as_of=as_of)
        self.calls.append((np.asarray(as_of).copy(), np.asarray(res.indices).copy(), np.asarray(res.mask).copy()))
        return res

    def __getattr__(self, name):
        return getattr(self.inner, name)


class PlantingTrainer(MemoryTransformerTrainer):
    """After each memory build, plants one entry whose label is only known in the far future.

    Its key copies the latest training window's key (the best possible match for late queries) and its
    outcome is extreme; if causality broke anywhere, it would be retrieved and move predictions.
    """

    plant = True

    def build_memory(self, windows):
        super().build_memory(windows)
        self._plant()

    def load_memory(self, windows, keys, values):
        super().load_memory(windows, keys, values)
        self._plant()

    def _plant(self):
        mem = self.training_memory
        self.planted_slot = None
        if self.plant:
            far = np.array([np.iinfo(np.int64).max - 1], dtype=np.int64)
            slots = mem.bank.add(mem.keys[-1:] * 1.0, values=np.array([[5.0, 0, 0, 1]], np.float32),
                                 timestamp=far, available_at=far)
            self.planted_slot = int(np.asarray(slots)[0])
        mem.bank = Recorder(mem.bank)  # refresh() re-keys through it: Recorder passes update_keys on


def test_training_and_prediction_never_retrieve_unresolved_entries(splits):
    trainer = PlantingTrainer(mcfg(), tcfg())
    trainer.fit(splits.train, splits.val)
    pred = trainer.predict(splits.test)
    rec = trainer.memory
    assert len(rec.calls) > 0
    train_end = splits.train.end_time_ns()
    avail = dict(zip(trainer.training_memory.slots.tolist(), splits.train.available_at_ns().tolist()))
    for as_of, idx, mask in rec.calls:
        used = idx[mask]
        assert trainer.planted_slot not in used, "the planted future entry was retrieved"
        times = np.repeat(as_of, idx.shape[0] // len(as_of))
        for row in range(len(idx)):
            for slot in idx[row][mask[row]]:
                assert avail[int(slot)] <= times[row], "retrieved a label not yet known at query time"
    # a training query never retrieves itself: its own label is known only after its end time
    assert all(a > t for a, t in zip(splits.train.available_at_ns(), train_end))
    # and the planted entry changes nothing: same predictions without it
    clean = PlantingTrainer(mcfg(), tcfg())
    clean.plant = False
    clean.fit(splits.train, splits.val)
    pd.testing.assert_frame_equal(pred, clean.predict(splits.test))


def test_predict_frame_follows_the_contract(splits):
    trainer = MemoryTransformerTrainer(mcfg(), tcfg(epochs=1))
    hist = trainer.fit(splits.train, splits.val)
    for col in ["train_loss", "train_mse", "train_mae", "train_direction_accuracy", "train_ic", "val_loss", "val_mse",
                "val_mae", "val_direction_accuracy", "val_ic", "lr"]:
        assert col in hist.columns
    pred = trainer.predict(splits.test)
    # every contract column is there, in the documented order (other columns may sit in between)
    assert [c for c in pred.columns if c in CONTRACT_COLUMNS] == CONTRACT_COLUMNS
    assert pred.index.equals(pd.DatetimeIndex(splits.test.end_time, name="time"))
    probs = pred[["p_down", "p_flat", "p_up"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert pred["position"].between(-1, 1).all()
    assert pred["memory_return"].notna().all() and pred["memory_up_share"].between(0, 1).all()
    local = MemoryTransformerTrainer(mcfg(use_memory=False), tcfg(epochs=1))
    local.fit(splits.train, splits.val)
    lp = local.predict(splits.test)
    assert lp["memory_return"].isna().all() and lp["memory_up_share"].isna().all()


def test_online_memory_is_causal_and_uses_resolved_test_windows(splits):
    trainer = MemoryTransformerTrainer(mcfg(), tcfg(epochs=1, predict_memory="online"))
    trainer.fit(splits.train, splits.val)
    test = splits.test
    full = trainer.predict(test)
    # changing the labels of the last 10 test windows must not move any earlier prediction whose query time
    # precedes those labels' availability
    y2 = test.y.copy()
    y2[-10:] = -y2[-10:] * 7
    moved = trainer.predict(replace(test, y=y2))
    first_changed_avail = test.available_at[-10:].min()
    early = full.index < first_changed_avail
    pd.testing.assert_frame_equal(full.loc[early].drop(columns="y"), moved.loc[early].drop(columns="y"))


def test_online_memory_stores_each_window_once(splits):
    """Predicting the training windows themselves (walk-forward's calibration pass) must not store them a
    second time: before the fix, most queries got the same neighbour twice."""
    trainer = MemoryTransformerTrainer(mcfg(), tcfg(epochs=1, predict_memory="online"))
    trainer.fit(splits.train, splits.val)
    train = splits.train
    online = trainer._online_memory(train)
    assert len(online) == len(trainer.memory)  # nothing new: every window is already in memory
    idx = np.r_[np.arange(len(splits.test)), np.arange(len(splits.test))]
    both = splits.test.subset(idx)
    online = trainer._online_memory(both)
    assert len(online) == len(trainer.memory) + int(np.isfinite(splits.test.y).sum())
    times = online.metadata("timestamp")
    assert len(np.unique(times)) == len(times), "a window is stored twice"
    res = online.search(trainer._compute_keys(train.X), k=8, as_of=train.end_time_ns() + 10**15)
    slots = np.where(res.mask, res.indices, -1)
    ts = np.where(res.mask, times[np.maximum(slots, 0)], -1)
    for row in ts:
        row = row[row >= 0]
        assert len(np.unique(row)) == len(row), "the same neighbour returned twice"


def test_save_load_round_trip_reproduces_predictions(splits, tmp_path):
    trainer = MemoryTransformerTrainer(mcfg(), tcfg(epochs=1), scaler=splits.scaler)
    trainer.fit(splits.train, splits.val)
    before = trainer.predict(splits.test)
    trainer.save(tmp_path / "ckpt")
    loaded = MemoryTransformerTrainer.load(tmp_path / "ckpt")
    pd.testing.assert_frame_equal(before, loaded.predict(splits.test), check_exact=True)
    assert loaded.scaler is not None and loaded.scaler.mean_.equals(splits.scaler.mean_.astype(float))
    assert not list((tmp_path / "ckpt").glob(".*")), "temporary files left behind"


def test_mismatched_checkpoint_is_refused(splits, tmp_path):
    trainer = MemoryTransformerTrainer(mcfg(), tcfg(epochs=1))
    trainer.fit(splits.train, splits.val)
    trainer.save(tmp_path / "a")
    other = MemoryTransformerTrainer(mcfg(d_model=32), tcfg(epochs=1))
    with pytest.raises(CheckpointError, match="d_model"):
        other.load_weights(tmp_path / "a")
    # a config edited to claim other sizes no longer fits the saved weights
    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    meta["model_config"]["d_ff"] = 40
    (tmp_path / "a" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        MemoryTransformerTrainer.load(tmp_path / "a")
    meta["version"] = 999
    (tmp_path / "a" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="version"):
        MemoryTransformerTrainer.load(tmp_path / "a")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        MemoryTransformerTrainer.load(tmp_path / "missing")


def test_two_seeded_cpu_runs_are_identical(splits):
    runs = []
    for _ in range(2):
        trainer = MemoryTransformerTrainer(mcfg(), tcfg(epochs=2, seed=5))
        hist = trainer.fit(splits.train, splits.val).drop(columns=["seconds", "samples_per_s"])
        runs.append((hist, trainer.predict(splits.test)))
    pd.testing.assert_frame_equal(runs[0][0], runs[1][0], check_exact=True)
    pd.testing.assert_frame_equal(runs[0][1], runs[1][1], check_exact=True)
    other = MemoryTransformerTrainer(mcfg(), tcfg(epochs=2, seed=6))
    assert not other.fit(splits.train, splits.val)["train_loss"].equals(runs[0][0]["train_loss"])


def test_early_stopping_restores_best_epoch(splits):
    trainer = MemoryTransformerTrainer(mcfg(), tcfg(epochs=6, patience=1, lr=5e-2))
    hist = trainer.fit(splits.train, splits.val)
    assert trainer.best_epoch == int(hist["val_loss"].idxmin())
    np.testing.assert_allclose(trainer.evaluate(splits.val)["loss"], hist["val_loss"].min(), rtol=1e-5)


def test_wrong_window_shape_is_explained(splits):
    trainer = MemoryTransformerTrainer(mcfg(seq_len=SEQ + 4), tcfg())
    with pytest.raises(ValueError, match="seq_len"):
        trainer.fit(splits.train, splits.val)


def test_metrics():
    y = np.array([0.1, -0.2, 0.3, 0.0, -0.1])
    assert direction_accuracy(np.array([1, -1, -1, 5, -1]), y) == 0.75
    assert information_coefficient(y, y) == pytest.approx(1.0)
    assert np.isnan(information_coefficient(np.ones(5), y))


def test_compare_memory_vs_local_structure(splits):
    mask = np.zeros(len(splits.test), dtype=bool)
    mask[::2] = True
    cmp = compare_memory_vs_local(splits.train, splits.val, splits.test, mcfg(), tcfg(epochs=1), seeds=(0, 1),
                                  subsets={"even": mask}, n_boot=200, progress=False)
    assert list(cmp.per_seed.index) == [0, 1]
    assert {"acc_memory", "acc_local", "acc_memory_even"} <= set(cmp.per_seed.columns)
    s = cmp.summary
    assert list(s.index) == ["all", "even"]
    assert (s["boot_ci_low"] <= s["boot_ci_high"]).all() and (s["seed_ci_low"] <= s["diff"]).all()
    assert s.loc["even", "n_test"] == mask.sum()


def test_memory_keys_are_refreshed_with_the_final_weights(splits):
    trainer = MemoryTransformerTrainer(mcfg(), tcfg(epochs=2))
    trainer.set_target_stats(np.asarray(splits.train.y))
    initial = trainer._compute_keys(splits.train.X)
    trainer.fit(splits.train, splits.val)
    current = trainer._compute_keys(splits.train.X)  # the model's key function on the stored windows, now
    assert not np.allclose(current, initial, atol=1e-4), "training did not change the keys: test is vacuous"
    np.testing.assert_allclose(trainer.training_memory.keys, current, rtol=1e-5, atol=1e-6)
    unit = current / np.linalg.norm(current, axis=1, keepdims=True)  # the bank stores unit keys
    np.testing.assert_allclose(trainer.memory.keys[trainer.training_memory.slots], unit, rtol=1e-4, atol=1e-5)


def test_entry_is_eligible_exactly_when_its_label_is_available(splits):
    """available_at == as_of: retrievable (the label is known at that instant); one nanosecond later: not."""
    trainer = MemoryTransformerTrainer(mcfg(), tcfg())
    trainer.set_target_stats(np.asarray(splits.train.y))
    trainer.build_memory(splits.train)
    query = splits.val.subset(np.arange(1))
    t = int(query.end_time_ns()[0])
    key = trainer._compute_keys(query.X)  # the query's own key: a planted copy is its best possible match
    planted = np.asarray(trainer.memory.add(
        np.repeat(key, 2, axis=0), values=np.array([[5.0, 0, 0, 1]] * 2, np.float32),
        timestamp=np.array([t - 1, t - 1]), available_at=np.array([t, t + 1]),
    ))
    model = trainer.model.eval()
    x = torch.from_numpy(query.X)
    with torch.no_grad():
        at_t = model(x, memory=trainer.memory, as_of=np.array([t]))
        later = model(x, memory=trainer.memory, as_of=np.array([t + 1]))
    got = set(at_t["memory_indices"][at_t["memory_mask"]].tolist())
    assert int(planted[0]) in got and int(planted[1]) not in got
    assert {int(planted[0]), int(planted[1])} <= set(later["memory_indices"][later["memory_mask"]].tolist())


def test_amp_dtype_prefers_native_bfloat16_else_float16(monkeypatch):
    trainer = MemoryTransformerTrainer(mcfg(), tcfg())
    assert trainer.amp_dtype is None  # CPU: full precision
    trainer.device = torch.device("cuda")  # only the dtype choice is exercised, no CUDA op runs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    assert trainer.amp_dtype == torch.bfloat16
    # a GPU that only emulates bfloat16 (T4, V100) gets float16 (and the GradScaler in fit)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert trainer.amp_dtype == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # an older torch without the argument
    assert trainer.amp_dtype == torch.float16
    trainer.config.amp = False
    assert trainer.amp_dtype is None


@pytest.fixture(scope="module")
def two_checkpoints(splits, tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    for seed in (0, 1):
        trainer = MemoryTransformerTrainer(mcfg(), tcfg(epochs=1, seed=seed))
        trainer.fit(splits.train, splits.val)
        trainer.save(root / f"seed{seed}")
    return root


@pytest.mark.parametrize("name", ["memory.npz", "model.pt"])
def test_checkpoint_with_a_file_from_another_save_is_refused(two_checkpoints, tmp_path, name):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(two_checkpoints / "seed0", ckpt)
    MemoryTransformerTrainer.load(ckpt)  # intact: loads
    shutil.copy(two_checkpoints / "seed1" / name, ckpt / name)  # valid file, but from another save
    with pytest.raises(CheckpointError, match=rf"{name}.*different saves.*interrupted.*Re-save"):
        MemoryTransformerTrainer.load(ckpt)
    (ckpt / name).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=name):
        MemoryTransformerTrainer.load(ckpt)


def test_interrupted_save_leaves_a_refused_checkpoint(splits, two_checkpoints, tmp_path, monkeypatch):
    """A crash after the data files were replaced but before config.json: new weights + old config."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(two_checkpoints / "seed0", ckpt)
    other = MemoryTransformerTrainer.load(two_checkpoints / "seed1")

    def crash(trainer) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(training.checkpoint, "trainer_meta", crash)
    with pytest.raises(KeyboardInterrupt):
        other.save(ckpt)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="model.pt.*interrupted"):
        MemoryTransformerTrainer.load(ckpt)
    other.save(ckpt)  # re-saving repairs it
    MemoryTransformerTrainer.load(ckpt)


def test_bootstrap_scores_the_same_windows_as_the_headline_accuracy(splits, monkeypatch):
    """Zero-label windows are dropped by direction_accuracy; the bootstrap must drop them too."""
    test = splits.train.subset(np.arange(40))  # any 40 windows: the stub never looks at X
    y = np.where(np.arange(40) % 2 == 0, 0.0, np.where(np.arange(40) % 4 == 1, 0.01, -0.01))  # half are zero
    test = replace(test, y=y)

    class FixedTrainer:
        """Predicts the label's sign on moving windows in both arms; on zero labels memory says 0, local +1."""

        def __init__(self, model_config, trainer_config):
            self.use_memory = model_config.use_memory

        def fit(self, train, val):
            return None

        def predict(self, windows):
            sig = np.sign(windows.y)
            if not self.use_memory:
                sig = np.where(windows.y == 0, 1.0, sig)
            return pd.DataFrame({"direction_signal": sig, "pred_return": sig * 0.01})

    monkeypatch.setattr(training.ablation, "MemoryTransformerTrainer", FixedTrainer)
    cmp = compare_memory_vs_local(splits.train, splits.val, test, mcfg(), tcfg(), seeds=(0, 1), n_boot=200,
                                  progress=False)
    row = cmp.summary.loc["all"]
    assert row["acc_memory"] == row["acc_local"] == 1.0 and row["diff"] == 0.0
    assert row["n_test"] == 40 and row["n_scored"] == 20
    # before the fix the zero-label windows (memory "right" by sign(0) == sign(0)) centred this near +0.5
    assert row["boot_ci_low"] == row["boot_ci_high"] == 0.0


def test_evaluate_computes_its_loss_on_the_models_device(splits, monkeypatch):
    """evaluate() used to rebuild the outputs as CPU tensors from numpy and hand them to _loss, which divides by
    the model's ``target_scale`` buffer: on CUDA/MPS that is "Expected all tensors to be on the same device",
    so fit(train, val) crashed after epoch 1. The meta device refuses that mix like CUDA does, so a buffer
    put there reproduces the bug on a CPU-only machine."""
    trainer = MemoryTransformerTrainer(mcfg(use_memory=False), tcfg())
    raw = trainer._run(splits.val)  # real outputs, computed on the CPU
    monkeypatch.setattr(trainer, "_run", lambda windows, memory=None: raw)
    trainer.device = torch.device("meta")
    trainer.model.target_scale = torch.tensor(1.0, device="meta")  # the buffer "on the GPU"
    real_loss, seen = trainer._loss, []

    def spy(out, y):
        loss, parts = real_loss(out, y)  # raises on mixed devices, as CUDA does
        seen.append(loss.device.type)
        return torch.zeros(()), parts  # a meta loss has no value to report

    monkeypatch.setattr(trainer, "_loss", spy)
    metrics = trainer.evaluate(splits.val)
    assert seen == ["meta"] and np.isfinite(metrics["mse"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_path_runs_on_cuda(splits, tmp_path):
    """fit with validation (evaluate each epoch), predict (train and online memory), neighbours, save/load."""
    trainer = MemoryTransformerTrainer(mcfg(), tcfg(device="cuda"))
    hist = trainer.fit(splits.train, splits.val)
    assert hist["val_loss"].notna().all()
    pred = trainer.predict(splits.test)
    assert pred["memory_return"].notna().all()
    assert len(trainer.neighbours(splits.test.subset(np.arange(3)), top=2)) == 6
    trainer.save(tmp_path / "ckpt")
    loaded = MemoryTransformerTrainer.load(tmp_path / "ckpt", device="cuda")
    pd.testing.assert_frame_equal(pred, loaded.predict(splits.test), check_exact=True)
    online = MemoryTransformerTrainer(mcfg(), tcfg(device="cuda", epochs=1, predict_memory="online"))
    online.fit(splits.train, splits.val)
    assert online.predict(splits.test)["pred_return"].notna().all()


def test_a_memory_model_without_memory_is_refused(splits, tmp_path):
    """predict/evaluate before fit() (or from a checkpoint saved without memory) once ran local-only silently."""
    trainer = MemoryTransformerTrainer(mcfg(), tcfg())
    for call in (trainer.predict, trainer.evaluate):
        with pytest.raises(RuntimeError, match=r"call fit\(\) or build_memory"):
            call(splits.test)
    trainer.save(tmp_path / "early")  # saved before fit: no memory.npz
    loaded = MemoryTransformerTrainer.load(tmp_path / "early")
    with pytest.raises(RuntimeError, match="no memory has been built"):
        loaded.predict(splits.test)
    trainer.set_target_stats(np.asarray(splits.train.y))
    trainer.build_memory(splits.train)
    assert trainer.predict(splits.test)["memory_return"].notna().all()
    local = MemoryTransformerTrainer(mcfg(use_memory=False), tcfg())
    assert local.predict(splits.test)["pred_return"].notna().all()  # no memory needed


def test_train_metrics_score_the_batches_predictions_like_validation(splits, monkeypatch):
    """train_mse/mae/ic come from the batches' own forecasts, and train accuracy drops zero labels as
    direction_accuracy does (it once counted a zero label as a hit whenever p_up <= p_down)."""
    y = np.asarray(splits.train.y, dtype=np.float64).copy()
    y[::3] = 0.0  # many zero labels: no direction to get right
    train = replace(splits.train, y=y)
    trainer = MemoryTransformerTrainer(mcfg(use_memory=False), tcfg(epochs=1))
    row_of = {int(t): i for i, t in enumerate(train.end_time_ns())}
    seen = []
    real_forward = trainer._forward

    def spy(xb, as_of, memory=None):
        out = real_forward(xb, as_of, memory)
        if trainer.model.training:
            sig = (out["probs"][:, 2] - out["probs"][:, 0]).detach().numpy()
            seen.append((np.array([row_of[int(t)] for t in as_of]), out["pred_return"].detach().numpy(), sig))
        return out

    monkeypatch.setattr(trainer, "_forward", spy)
    row = trainer.fit(train, splits.val).iloc[0]
    rows = np.concatenate([r for r, _, _ in seen])
    pred = np.concatenate([p for _, p, _ in seen]).astype(np.float64)
    sig = np.concatenate([s for _, _, s in seen])
    assert sorted(rows) == list(range(len(train)))
    yy = y[rows]
    assert row["train_direction_accuracy"] == pytest.approx(direction_accuracy(sig, yy), abs=1e-12)
    old_rule = np.mean((sig > 0) == (yy > 0))  # zero labels counted as hits when sig <= 0
    assert row["train_direction_accuracy"] != pytest.approx(old_rule, abs=1e-6)
    assert row["train_mse"] == pytest.approx(np.mean((pred - yy) ** 2), rel=1e-6)
    assert row["train_mae"] == pytest.approx(np.mean(np.abs(pred - yy)), rel=1e-6)
    assert row["train_ic"] == pytest.approx(information_coefficient(pred, yy), abs=1e-9)


def test_trainer_fits_without_blend_recent_key_or_learned_temperature(splits):
    trainer = MemoryTransformerTrainer(mcfg(knn_blend=False, key_bars=0, learn_temperature=False), tcfg(epochs=1))
    scale = float(trainer.model.layers[-1].memory.log_scale)
    hist = trainer.fit(splits.train, splits.val)
    assert np.isfinite(hist["val_loss"]).all() and hist["val_blend"].isna().all()
    pred = trainer.predict(splits.test)
    assert pred["blend"].isna().all() and pred["memory_return"].notna().all()
    assert float(trainer.model.layers[-1].memory.log_scale) == scale  # the temperature stayed fixed


@pytest.mark.parametrize("refresh", [dict(refresh_keys=False), dict(refresh_every=2)])
def test_checkpoint_written_during_fit_loads_into_the_trainer_fit_returns(splits, tmp_path, refresh):
    """Between key refreshes the memory's keys lag the weights; the best-epoch checkpoint once stored them as
    they were, so the reloaded trainer retrieved other neighbours than the one fit() returned."""
    # one epoch: it is the best one and no refresh ran after it, so the checkpoint is written between refreshes
    trainer = MemoryTransformerTrainer(mcfg(), tcfg(epochs=1, checkpoint_dir=str(tmp_path / "ckpt"), **refresh))
    trainer.fit(splits.train, splits.val)
    loaded = MemoryTransformerTrainer.load(tmp_path / "ckpt")
    pd.testing.assert_frame_equal(trainer.predict(splits.test), loaded.predict(splits.test), check_exact=True)
    np.testing.assert_array_equal(loaded.training_memory.keys, trainer.training_memory.keys)


def test_fresh_checkpoint_keys_leave_the_training_trajectory_alone(splits, tmp_path):
    """Writing fresh keys to the checkpoint must not refresh the live memory (refresh_keys=False means stale)."""
    runs = []
    for ckpt in (None, str(tmp_path / "ckpt")):
        trainer = MemoryTransformerTrainer(mcfg(), tcfg(epochs=2, refresh_keys=False, checkpoint_dir=ckpt))
        runs.append(trainer.fit(splits.train, splits.val).drop(columns=["seconds", "samples_per_s"]))
    pd.testing.assert_frame_equal(runs[0], runs[1], check_exact=True)


def test_comparison_on_an_executor_equals_the_serial_run(splits):
    """The executor path (futures, results gathered in task order) gives the serial numbers exactly."""
    from concurrent.futures import ThreadPoolExecutor

    kw = dict(seeds=(0, 1), n_boot=50, progress=False)
    small = mcfg(n_layers=1)
    serial = compare_memory_vs_local(splits.train, splits.val, splits.test, small, tcfg(epochs=1), **kw)
    with ThreadPoolExecutor(max_workers=1) as pool:  # one worker: torch's global RNG is not shared concurrently
        pooled = compare_memory_vs_local(splits.train, splits.val, splits.test, small, tcfg(epochs=1),
                                         executor=pool, **kw)
    pd.testing.assert_frame_equal(serial.per_seed, pooled.per_seed)
    pd.testing.assert_frame_equal(serial.summary, pooled.summary)
