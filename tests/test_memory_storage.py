"""Memory persistence (round trip, corrupted files, interrupted saves) and the tiered store."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from course_lib import (
    NO_TIME_FILTER,
    ExternalMemoryBank,
    MemoryConfig,
    MemoryFileError,
    TierConfig,
    TieredMemory,
    int8_recall,
)
from course_lib.memory import persistence


def _filled(tmp_path=None):
    rng = np.random.default_rng(0)
    bank = ExternalMemoryBank(MemoryConfig(key_dim=8, value_dim=2, capacity=50, eviction="importance"))
    t = np.arange(60, dtype=np.int64) * 1_000
    bank.add(rng.normal(size=(60, 8)), values=rng.normal(size=(60, 2)), timestamp=t, available_at=t + 500,
             future_return=rng.normal(size=(60, 3)), symbol=["BTCUSDT-PERP"] * 30 + ["SPX"] * 30,
             regime=rng.integers(0, 4, 60), note=rng.normal(size=60))
    bank.search(rng.normal(size=(5, 8)), k=3, as_of=NO_TIME_FILTER)
    return bank


def test_save_load_round_trip(tmp_path):
    bank = _filled()
    path = bank.save(tmp_path / "mem.npz")
    loaded = ExternalMemoryBank.load(path)
    assert len(loaded) == len(bank) and loaded.config == bank.config
    np.testing.assert_array_equal(loaded.keys, bank.keys)
    np.testing.assert_array_equal(loaded.values, bank.values)
    for name in bank.metadata_names:
        np.testing.assert_array_equal(loaded.metadata(name), bank.metadata(name))
    assert loaded.metadata("symbol").dtype.kind == "U" and "BTCUSDT-PERP" in loaded.metadata("symbol")
    assert loaded.metadata("future_return").shape == (50, 3)
    np.testing.assert_array_equal(loaded.access_count, bank.access_count)
    q = np.random.default_rng(3).normal(size=(4, 8))
    a, b = bank.search(q, k=5, as_of=30_000), loaded.search(q, k=5, as_of=30_000)
    np.testing.assert_array_equal(a.indices, b.indices)
    # it keeps working after loading: the ring buffer continues where it stopped
    loaded.add(np.ones((3, 8)), timestamp=[1, 2, 3], available_at=[1, 2, 3])
    assert len(loaded) == 50


def test_load_overrides_backend(tmp_path):
    path = _filled().save(tmp_path / "m.npz")
    assert ExternalMemoryBank.load(path, backend="torch").config.backend == "torch"
    with pytest.raises(ValueError, match="key_dim"):
        ExternalMemoryBank.load(path, key_dim=4)


def test_truncated_and_garbage_files_rejected(tmp_path):
    path = _filled().save(tmp_path / "m.npz")
    raw = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MemoryFileError, match="truncated"):
        ExternalMemoryBank.load(tmp_path / "cut.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(MemoryFileError):
        ExternalMemoryBank.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "plain.npz", keys=np.zeros((2, 8)))
    with pytest.raises(MemoryFileError, match="header"):
        ExternalMemoryBank.load(tmp_path / "plain.npz")


def _rewrite(path, out, header_change=None, array_change=None):
    with np.load(path, allow_pickle=False) as data:
        arrays = {n: data[n] for n in data.files}
    header = json.loads(str(arrays.pop("__header__")))
    if header_change:
        header_change(header)
    if array_change:
        array_change(arrays)
    arrays["__header__"] = np.array(json.dumps(header))
    np.savez(out, **arrays)
    return out


def test_version_and_dimension_mismatch_rejected(tmp_path):
    path = _filled().save(tmp_path / "m.npz")
    newer = _rewrite(path, tmp_path / "v99.npz", header_change=lambda h: h.update(version=99))
    with pytest.raises(MemoryFileError, match="version"):
        ExternalMemoryBank.load(newer)
    with pytest.raises(MemoryFileError, match="key_dim"):
        ExternalMemoryBank.load(path, expect_key_dim=64)
    with pytest.raises(MemoryFileError, match="value_dim"):
        ExternalMemoryBank.load(path, expect_value_dim=5)
    bad = _rewrite(path, tmp_path / "bad.npz", array_change=lambda a: a.update(keys=a["keys"][:, :4]))
    with pytest.raises(MemoryFileError, match="shape"):
        ExternalMemoryBank.load(bad)
    other = _rewrite(path, tmp_path / "other.npz", header_change=lambda h: h.update(format="something-else"))
    with pytest.raises(MemoryFileError, match="something-else"):
        ExternalMemoryBank.load(other)


def test_structurally_broken_files_rejected(tmp_path):
    """A well-formed zip whose arrays or header counters do not add up is refused, never half-loaded."""
    path = _filled().save(tmp_path / "m.npz")
    cases = {
        "no_seq": dict(array_change=lambda a: a.pop("insert_seq")),
        "short_seq": dict(array_change=lambda a: a.update(insert_seq=a["insert_seq"][:3])),
        "no_size": dict(header_change=lambda h: h.pop("size")),
        "huge_pos": dict(header_change=lambda h: h.update(write_pos=10**6)),
        "size_over_capacity": dict(header_change=lambda h: h.update(size=10**6)),
    }
    for name, change in cases.items():
        broken = _rewrite(path, tmp_path / f"{name}.npz", **change)
        with pytest.raises(MemoryFileError):
            ExternalMemoryBank.load(broken)


def test_interrupted_save_keeps_old_file(tmp_path, monkeypatch):
    bank = _filled()
    path = bank.save(tmp_path / "m.npz")
    before = path.read_bytes()
    bank.add(np.ones((5, 8)), timestamp=np.arange(5), available_at=np.arange(5))

    def crashing_savez(file, **arrays):
        with open(file, "wb") as fh:
            fh.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(persistence.np, "savez", crashing_savez)
    with pytest.raises(KeyboardInterrupt):
        bank.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"], "temporary file left behind"
    ExternalMemoryBank.load(path)


def test_save_requires_npz_suffix(tmp_path):
    with pytest.raises(ValueError, match=".npz"):
        _filled().save(tmp_path / "memory.bin")


def test_tiers_demote_promote_and_search(tmp_path):
    rng = np.random.default_rng(0)
    cfg = TierConfig(key_dim=16, hot_capacity=20, warm_capacity=50, cold_capacity=100,
                     cold_path=str(tmp_path / "cold.f32"))
    tm = TieredMemory(cfg)
    keys = rng.normal(size=(150, 16))
    ids = tm.add(keys[:100], available_at=np.arange(100))
    tm.add(keys[100:], available_at=np.arange(100, 150))
    assert tm.tier_sizes() == {"hot": 20, "warm": 50, "cold": 80}
    assert tm.tier_of(ids[:3]).tolist() == ["cold"] * 3 and tm.tier_of([149]).tolist() == ["hot"]
    # every tier is searched: a cold entry's own key finds it
    res = tm.search(keys[:5], k=3, as_of=NO_TIME_FILTER)
    assert res["ids"][:, 0].tolist() == [0, 1, 2, 3, 4] and (res["tier"][:, 0] == 2).all()
    # causal filter across tiers
    res = tm.search(keys[:5], k=3, as_of=2)
    assert set(res["ids"][res["mask"]].tolist()) <= {0, 1, 2}
    # repeated use promotes cold -> warm -> hot
    for _ in range(3):
        tm.search(keys[:5], k=1, as_of=NO_TIME_FILTER)
    tm.manage_tiers()
    assert (tm.tier_of(ids[:5]) == "warm").all()
    for _ in range(3):
        tm.search(keys[:5], k=1, as_of=NO_TIME_FILTER)
    tm.manage_tiers()
    assert (tm.tier_of(ids[:5]) == "hot").all()
    assert sum(tm.tier_sizes().values()) == 150
    assert tm.nbytes()["warm"] < tm.nbytes()["cold"]
    tm.close()


def test_int8_recall_bound():
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(5000, 64))
    assert int8_recall(keys, rng.normal(size=(200, 64)), k=32) >= 0.95


def _drop_field(name):
    def change(h):
        h["fields"] = [f for f in h["fields"] if f != name]
    return change


@pytest.mark.parametrize("field", ["available_at", "timestamp", "importance"])
def test_file_without_core_field_rejected(tmp_path, field):
    """Without available_at in the file every entry would load as always visible: refuse it."""
    path = _filled().save(tmp_path / "m.npz")
    broken = _rewrite(path, tmp_path / "nofield.npz", header_change=_drop_field(field),
                      array_change=lambda a: a.pop(f"meta__{field}"))
    with pytest.raises(MemoryFileError, match=field):
        ExternalMemoryBank.load(broken)


def test_missing_or_invalid_config_is_a_file_error(tmp_path):
    path = _filled().save(tmp_path / "m.npz")
    cases = {
        "no_config": (lambda h: h.pop("config"), "no config"),
        "config_list": (lambda h: h.update(config=[1, 2]), "no config"),
        "bad_backend": (lambda h: h["config"].update(backend="annoy"), "saved config is invalid.*annoy"),
        "bad_dim": (lambda h: h["config"].update(key_dim="eight"), "saved config is invalid"),
        "float_times": (None, "int64"),
    }
    for name, (change, match) in cases.items():
        if change is None:
            broken = _rewrite(path, tmp_path / f"{name}.npz", array_change=lambda a: a.update(
                meta__available_at=a["meta__available_at"].astype(np.float64)))
        else:
            broken = _rewrite(path, tmp_path / f"{name}.npz", header_change=change)
        with pytest.raises(MemoryFileError, match=match):
            ExternalMemoryBank.load(broken)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without a GPU")
def test_bank_saved_on_gpu_loads_on_cpu(tmp_path):
    """The device is a run-time setting: a GPU-built memory must load (on the CPU, with a warning)."""
    path = _filled().save(tmp_path / "m.npz")
    gpu = _rewrite(path, tmp_path / "gpu.npz", header_change=lambda h: h["config"].update(device="cuda"))
    with pytest.warns(RuntimeWarning, match="device='cuda'"):
        bank = ExternalMemoryBank.load(gpu)
    assert bank.config.device == "cpu"
    res = bank.search(np.ones((2, 8)), k=3, as_of=30_000)  # used to fail here with a raw CUDA error
    assert res.mask.all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ExternalMemoryBank.load(gpu, device="cpu", backend="torch").search(np.ones((1, 8)), k=2, as_of=NO_TIME_FILTER).mask.all()
    with pytest.raises(RuntimeError, match="not available on this machine"):
        ExternalMemoryBank.load(gpu, device="cuda")
    fgpu = _rewrite(path, tmp_path / "fgpu.npz", header_change=lambda h: h["config"].update(backend="faiss-gpu"))
    with pytest.warns(RuntimeWarning, match="faiss-gpu"):
        assert ExternalMemoryBank.load(fgpu).config.backend == "faiss"


def _member_data_offsets(path):
    """Byte offset of each zip member's data (after its local header)."""
    import struct
    import zipfile

    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    out = {}
    for info in infos:
        name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
        out[info.filename] = (info.header_offset + 30 + name_len + extra_len, info.file_size)
    return out


def test_bytes_flipped_in_the_middle_rejected(tmp_path):
    """Corruption inside the file (not a cut): numpy alone loads a flipped array byte silently (it never
    reads far enough for zipfile to check the CRC); the loader checks every member's checksum."""
    path = _filled().save(tmp_path / "m.npz")
    raw = path.read_bytes()
    for member in ("keys.npy", "meta__available_at.npy", "__header__.npy"):
        start, size = _member_data_offsets(path)[member]
        where = start + size // 2
        bad = bytearray(raw)
        bad[where:where + 4] = bytes(b ^ 0x5A for b in bad[where:where + 4])
        (tmp_path / "flip.npz").write_bytes(bytes(bad))
        with pytest.raises(MemoryFileError, match="checksum|corrupt"):
            ExternalMemoryBank.load(tmp_path / "flip.npz")


def _tier_run(chunk_rows, tmp_path, name):
    rng = np.random.default_rng(4)
    keys = rng.normal(size=(400, 8))
    tm = TieredMemory(TierConfig(key_dim=8, hot_capacity=30, warm_capacity=90, cold_capacity=200,
                                 chunk_rows=chunk_rows, cold_path=str(tmp_path / f"{name}.f32")))
    out = []
    for s in range(0, 400, 25):
        tm.add(keys[s:s + 25], available_at=np.arange(s, s + 25))
        res = tm.search(keys[rng.integers(0, s + 25, 12)], k=6, as_of=s + 10)
        out.append((res["ids"], res["scores"]))
        tm.manage_tiers()
    return tm, keys, out


def test_tiers_chunked_scoring_and_swap_remove_stay_exact(tmp_path):
    """Scoring in chunks of 7 rows gives the same answers as one chunk; after many demotions and promotions
    (swap-remove, not compaction) every entry is in exactly one tier with its own key."""
    small, keys, a = _tier_run(7, tmp_path, "small")
    big, _, b = _tier_run(10**6, tmp_path, "big")
    for (ia, sa), (ib, sb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_allclose(sa, sb, atol=1e-6)
    unit = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    ids = np.concatenate([t.ids[:t.n] for t in small.tiers.values()])
    assert len(ids) == len(np.unique(ids)) == 30 + 90 + 200 and small.dropped == 400 - 320
    for t in small.tiers.values():
        np.testing.assert_allclose(t.get(np.arange(t.n)), unit[t.ids[:t.n]], atol=0.02)
    # the dropped entries are the least recently used ones
    alive = set(ids.tolist())
    assert all(small.tier_of([i])[0] == "" for i in range(400) if i not in alive)
    small.close()
    big.close()


def test_tier_search_memory_is_bounded_by_the_chunk(tmp_path):
    import tracemalloc

    rng = np.random.default_rng(0)
    n, q = 60_000, 64
    tm = TieredMemory(TierConfig(key_dim=8, hot_capacity=10, warm_capacity=10, cold_capacity=n,
                                 chunk_rows=2048, cold_path=str(tmp_path / "c.f32")))
    tm.add(rng.normal(size=(n, 8)))
    tracemalloc.start()
    tm.search(rng.normal(size=(q, 8)), k=5, as_of=NO_TIME_FILTER)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < q * n * 4 / 4, f"search held {peak / 2**20:.1f} MiB: scores of the whole tier at once"
    tm.close()
