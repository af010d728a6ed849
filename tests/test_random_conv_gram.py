"""Random-conv Gram accumulated over filter chunks equals the Gram of the full features."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from kernelfit.features.random_conv import RandomConvFeatures
from kernelfit.features.random_conv_gram import accumulate_gram, symmetrize_lower


def _map(n_filters, standardize, seed=0, init="zca", power=1.0):
    return RandomConvFeatures((8, 8, 3), n_filters=n_filters, patch_size=3, pool=2,
                              n_patches=300, dtype="float64", standardize=standardize,
                              filter_init=init, seed=seed, power=power)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(2, 12), m=st.integers(0, 5), n_filters=st.integers(1, 20),
       chunk=st.integers(1, 9), batch=st.integers(1, 7), standardize=st.booleans(),
       init=st.sampled_from(["zca", "gaussian"]), seed=st.integers(0, 3),
       threads=st.integers(1, 3), power=st.sampled_from([1.0, 0.5, 0.7]))
def test_chunked_gram_equals_full_gram(n, m, n_filters, chunk, batch, standardize, init, seed,
                                       threads, power):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 8 * 8 * 3))
    Xt = rng.random((m, 8 * 8 * 3))
    full = _map(n_filters, standardize, seed, init, power)
    F = full.fit_transform(X)
    Ft = full.transform(Xt) if m else None
    acc = _map(n_filters, False, seed, init, power).fit(X)
    acc.standardize = standardize
    st_ = accumulate_gram(acc, X, Xt if m else None, filter_chunk=chunk, batch_size=batch,
                          threads=threads)
    G = st_["G"]
    symmetrize_lower(G)
    scale = max(1.0, np.abs(F @ F.T).max())
    np.testing.assert_allclose(G, F @ F.T, atol=1e-9 * scale)
    np.testing.assert_allclose(st_["sq"], np.einsum("ij,ij->i", F, F), atol=1e-9 * scale)
    if m:
        np.testing.assert_allclose(st_["C"], Ft @ F.T, atol=1e-9 * scale)
        np.testing.assert_allclose(st_["sq_test"], np.einsum("ij,ij->i", Ft, Ft),
                                   atol=1e-9 * scale)
    assert st_["n_done"] == n_filters


def test_threads_run_the_batches_in_parallel_threads(monkeypatch):
    import threading

    seen = set()
    real = RandomConvFeatures._chunk_block

    def spy(self, *a, **k):
        seen.add(threading.get_ident())
        return real(self, *a, **k)

    monkeypatch.setattr(RandomConvFeatures, "_chunk_block", spy)
    X = np.random.default_rng(1).random((40, 8 * 8 * 3))
    fmap = _map(6, False).fit(X)
    one = accumulate_gram(fmap, X, None, batch_size=4, threads=1)
    assert seen == {threading.get_ident()}
    seen.clear()
    two = accumulate_gram(fmap, X, None, batch_size=4, threads=2)
    assert threading.get_ident() not in seen and len(seen) >= 1
    np.testing.assert_allclose(two["G"], one["G"], rtol=1e-12, atol=1e-12)


def test_checkpoints_are_the_grams_of_smaller_maps_and_resume():
    rng = np.random.default_rng(5)
    X = rng.random((9, 192))
    big = _map(300, False).fit(X)
    seen = {}
    accumulate_gram(big, X, None, filter_chunk=64, stop_at=[130, 256],
                    on_checkpoint=lambda k, s: seen.setdefault(k, {
                        "G": s["G"].copy(), "sq": s["sq"].copy(), "C": s["C"].copy(),
                        "sq_test": s["sq_test"].copy(), "n_done": s["n_done"],
                        "stages": {k2: dict(v) for k2, v in s["stages"].items()}}))
    assert sorted(seen) == [130, 256]
    small = _map(130, False).fit(X)
    F = small.transform(X)
    G = seen[130]["G"].copy()
    symmetrize_lower(G)
    np.testing.assert_allclose(G, F @ F.T, rtol=1e-10, atol=1e-9)
    # resuming from the 130-filter state gives the same final Gram as one pass
    resumed = accumulate_gram(big, X, None, filter_chunk=50, start_from=seen[130])
    once = accumulate_gram(big, X, None, filter_chunk=300)
    np.testing.assert_allclose(resumed["G"], once["G"], rtol=1e-10, atol=1e-9)
    st_ = once["stages"]
    assert st_["conv"]["flop"] > 0 and st_["gram"]["flop"] > 0


def test_float32_gram_matches_float64():
    rng = np.random.default_rng(2)
    X = rng.random((20, 192))
    m32 = RandomConvFeatures((8, 8, 3), n_filters=40, patch_size=3, pool=2, power=1.0,
                             n_patches=300, dtype="float32", standardize=False).fit(X)
    m32.standardize = True
    s32 = accumulate_gram(m32, X, None, filter_chunk=16)
    F = _map(40, True).fit_transform(X)
    G = s32["G"].astype(np.float64)
    symmetrize_lower(G)
    np.testing.assert_allclose(G, F @ F.T, rtol=2e-4, atol=2e-3 * np.abs(F @ F.T).max())


def test_resume_point_reads_back_exactly_without_a_memory_map(tmp_path):
    import pytest

    from kernelfit.errors import DataError
    from kernelfit.reproduce.conv_run import _read_npy_into

    rng = np.random.default_rng(0)
    for arr in (rng.random((5000, 7), dtype=np.float32), rng.random(4100), np.zeros((0, 3))):
        p = tmp_path / "a.npy"
        np.save(p, arr)
        dst = np.full_like(arr, -1)
        _read_npy_into(p, dst, rows=1000)
        np.testing.assert_array_equal(dst, arr)
    np.save(tmp_path / "b.npy", np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(DataError, match="expected"):
        _read_npy_into(tmp_path / "b.npy", np.zeros((4, 5), dtype=np.float32))
    raw = (tmp_path / "b.npy").read_bytes()
    (tmp_path / "c.npy").write_bytes(raw[:-8])
    with pytest.raises(DataError, match="truncated"):
        _read_npy_into(tmp_path / "c.npy", np.zeros((4, 4), dtype=np.float32))


def test_saving_a_resume_point_removes_smaller_ones_only(tmp_path):
    """A run cut short that starts over below a deeper resume point (its own points were
    lost) must not delete the deeper one: hours of accumulation."""
    from kernelfit.reproduce.conv_run import _latest_ckpt, _load_ckpt, _save_ckpt

    def state(k):
        return {"G": np.full((3, 3), k, dtype=np.float32), "sq": np.zeros(3),
                "C": np.zeros((2, 3), dtype=np.float32), "sq_test": np.zeros(2),
                "n_done": k, "stages": {}}

    _save_ckpt(tmp_path, 16, state(16))
    _save_ckpt(tmp_path, 4, state(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gram-000004", "gram-000016"]
    _save_ckpt(tmp_path, 8, state(8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gram-000008", "gram-000016"]
    assert _latest_ckpt(tmp_path) == 16
    assert _load_ckpt(tmp_path, 16)["G"][0, 0] == 16
