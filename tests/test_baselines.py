"""The peers: each round-trips, reports the error of what it restores, and counts real bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightdna.baselines import (
    full_rank,
    keep_fraction_for_rate,
    nncodec_available,
    pool,
    rank_for_rate,
    run_nncodec,
    run_pruning,
    run_rtn,
    run_svd,
    run_zipnn,
    run_zstd,
    zipnn_available,
)
from weightdna.baselines.lossless import ZSTD_LEVEL
from weightdna.baselines.lowrank import decode_svd, encode_svd
from weightdna.baselines.pruning import decode_pruned, encode_pruned
from weightdna.baselines.rtn import decode_rtn, encode_rtn, pack_fields, unpack_fields
from weightdna.codec.dtypes import tensor_bytes
from weightdna.codec.zstdframes import compress_bytes
from weightdna.dna.metrics import error_metrics

W = torch.from_numpy(np.random.default_rng(0).standard_normal((48, 40)).astype(np.float32) * 0.05)


def _check(result, original: torch.Tensor, restored: torch.Tensor, data: bytes) -> None:
    """The reported figures are those of ``restored``, and the bits those of ``data``."""
    expected = error_metrics(original, restored)
    assert result.numel == original.numel()
    assert result.nbytes == len(data)
    assert result.bits_per_weight == pytest.approx(8 * len(data) / original.numel())
    assert result.snr_db == pytest.approx(expected.snr, rel=1e-9)
    assert result.psnr_db == pytest.approx(expected.psnr, rel=1e-9)
    assert result.max_abs_error == pytest.approx(expected.max_abs, rel=1e-9)
    assert result.encode_s >= 0 and result.decode_s >= 0


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_rtn_round_trip(bits: int) -> None:
    data = encode_rtn(W, bits)
    restored = decode_rtn(data, bits, tuple(W.shape), W.dtype)
    _check(run_rtn(W, bits), W, restored, data)
    levels = (1 << (bits - 1)) - 1
    scales = W.abs().amax(dim=1, keepdim=True).half().float() / levels
    assert torch.all((restored - W).abs() <= scales / 2 * 1.01 + 1e-7)


def test_rtn_more_bits_more_snr() -> None:
    snr = [run_rtn(W, bits).snr_db for bits in (2, 4, 8)]
    rate = [run_rtn(W, bits).bits_per_weight for bits in (2, 4, 8)]
    assert snr[0] < snr[1] < snr[2]
    assert rate[0] < rate[1] < rate[2]


def test_packing_round_trip() -> None:
    for bits in (2, 4, 8):
        values = np.random.default_rng(bits).integers(0, 1 << bits, size=37)
        assert np.array_equal(unpack_fields(pack_fields(values, bits), bits, 37), values)


def test_svd_round_trip_and_full_rank() -> None:
    data = encode_svd(W, 5)
    _check(run_svd(W, 5), W, decode_svd(data, 5, tuple(W.shape), W.dtype), data)
    rank = full_rank(tuple(W.shape))
    assert rank == 40
    assert run_svd(W, rank).snr_db > 60  # fp16 factors: near-exact
    assert run_svd(W, 2).snr_db < run_svd(W, 20).snr_db
    assert rank_for_rate((48, 40), 1000) == 40 and rank_for_rate((48, 40), 0.01) == 1


def test_pruning_round_trip() -> None:
    keep = keep_fraction_for_rate(4.0)
    assert 0.15 < keep < 0.25
    data = encode_pruned(W, keep)
    restored = decode_pruned(data, tuple(W.shape), W.dtype)
    _check(run_pruning(W, keep), W, restored, data)
    kept = restored != 0
    assert kept.sum().item() == round(keep * W.numel())
    # The largest magnitudes are the ones kept.
    assert W.abs()[kept].min() >= W.abs()[~kept].max()
    assert run_pruning(W, 1.0).snr_db > 60


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_zstd_is_bit_exact(dtype: torch.dtype) -> None:
    t = W.to(dtype)
    result = run_zstd(t)
    assert result.lossless and result.noise == 0.0 and result.snr_db == float("inf")
    assert result.nbytes == len(compress_bytes(tensor_bytes(t), ZSTD_LEVEL))


@pytest.mark.skipif(not zipnn_available(), reason="zipnn not installed (optional extra)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_zipnn_is_bit_exact(dtype: torch.dtype) -> None:
    t = W.to(dtype)
    before = t.clone()
    result = run_zipnn(t)
    assert result.lossless and result.noise == 0.0 and result.max_abs_error == 0.0
    assert torch.equal(t, before)  # ZipNN reorders its input in place; ours is a copy
    assert 0 < result.bits_per_weight < 8 * t.element_size() + 1


def test_zipnn_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from weightdna.baselines import lossless
    from weightdna.errors import MissingDependencyError

    monkeypatch.setattr(lossless, "zipnn_available", lambda: False)
    with pytest.raises(MissingDependencyError, match="pip install zipnn"):
        lossless.run_zipnn(W)


def test_pool_sums_what_it_pools() -> None:
    a, b = run_rtn(W, 4), run_rtn(W[:10], 4)
    both = pool([a, b])
    assert both.numel == a.numel + b.numel and both.nbytes == a.nbytes + b.nbytes
    assert both.noise == pytest.approx(a.noise + b.noise)
    assert both.tensors == 2


def test_nncodec_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from weightdna.errors import MissingDependencyError

    monkeypatch.setenv("WEIGHTDNA_PEERS_PYTHON", str(tmp_path / "no-python"))
    assert not nncodec_available()
    with pytest.raises(MissingDependencyError, match="setup_peers.sh"):
        run_nncodec({"w": W}, [-24])


@pytest.mark.skipif(
    not nncodec_available(), reason="no .venv-peers (bash bench/peers/setup_peers.sh)"
)
def test_nncodec_round_trip() -> None:
    coarse, fine = run_nncodec({"a.weight": W, "b.weight": W[:8]}, [-16, -28])
    assert coarse.numel == W.numel() + 8 * 40 and coarse.tensors == 2
    assert 0 < coarse.bits_per_weight < fine.bits_per_weight < 16
    assert 0 < coarse.snr_db < fine.snr_db


@pytest.mark.skipif(
    not nncodec_available(), reason="no .venv-peers (bash bench/peers/setup_peers.sh)"
)
def test_nncodec_settings_reach_the_codec() -> None:
    from weightdna.baselines.nncodec import SWEEP

    tensors = {"a.weight": W, "a.bias": W[0]}
    default, = run_nncodec(tensors, [-20])
    rdoq, = run_nncodec(tensors, [-20], setting="rdoq 1.25")
    assert rdoq.setting == "rdoq 1.25, qp -20" and default.setting == "qp -20"
    # RDOQ trades error for bits; the non-weight (bias) QP follows the weights' QP
    assert (rdoq.nbytes, rdoq.noise) != (default.nbytes, default.noise)
    assert set(SWEEP) >= {"default", "rdoq 1"}
