# test_cuda_gemv.py: the CUDA weight kernels (cuda/device_weight.h) against the CPU reference decode
# (mixrt::dequantize_row through _internal.dequantize) on the same packed bytes: matvec for every dtype
# and n = 1..8 (both mix schedules), gather_rows and dequantize_f16, on odd shapes (K = 100, 576,
# 1536, 11008; M not a multiple of 8; mix with no, some and only 4-bit columns; outliers). Outputs
# are poisoned with NaN before each launch (gemv_host_io). GPU tests skip without a usable device;
# make_random_mixrt (mixrt.devtools.random_model) is tested on the CPU.
import numpy as np
import pytest

import mixrt
from mixrt import _core, _internal
from mixrt.devtools.random_model import make_random_mixrt, random_weight
from mixrt.quant import layouts

NO_GPU = _core.cuda_unavailable_reason()
gpu = pytest.mark.skipif(NO_GPU != "", reason=f"CUDA backend unavailable: {NO_GPU}")
U = 2.0**-24  # fp32 unit roundoff

SHAPES = [(5, 576), (7, 1536), (3, 11008), (9, 100), (13, 4096), (1, 32), (37, 64)]


def cases():
    for m, k in SHAPES:
        yield "f32", m, k, 0
        yield "f16", m, k, 0
        yield "q8", m, k, 0
        yield "q4", m, k, 0
        for k4 in sorted({0, 32 * ((k // 4) // 32), 32 * (k // 32)}):  # none, a quarter, all
            if k4 <= k:
                yield "mix", m, k, k4


def make(dtype, m, k, k4, seed):
    """(parts, reference W [m, k] float64 from the CPU decode, per-weight scale s [m, k])."""
    rng = np.random.default_rng(seed)
    data = random_weight(rng, dtype, m, k, std=0.05, k4=k4, per_row_outliers=3 if k >= 64 else 0)
    if dtype in ("f32", "f16"):
        parts = [np.ascontiguousarray(data, np.float32 if dtype == "f32" else np.float16)]
    else:
        parts = data
    W = _internal.dequantize(dtype, parts, m, k).astype(np.float64)
    return parts, W, weight_scales(dtype, parts, m, k)


def weight_scales(dtype, parts, m, k):
    """The step s of every weight's grid (0 for f32/f16/q8, whose kernels decode exactly)."""
    s = np.zeros((m, k))
    column_group = np.arange(k) // 32
    if dtype == "q4":
        s = layouts.unpack_q4(parts, m, k)[1].astype(np.float64)[:, column_group]
    elif dtype == "mix":
        mp = layouts.unpack_mix(parts, m, k)
        k2 = k - mp.k4
        s2 = layouts.decode_scales2(mp.scale_code2, mp.super2).astype(np.float64)
        s[:, mp.perm[:k2]] = s2[:, np.arange(k2) // 32]
        s[:, mp.perm[k2:]] = mp.scale4.astype(np.float64)[:, np.arange(mp.k4) // 32]
    return s


def matvec_bound(W, s, x):
    """fp32 accumulation over K terms: about (K + 8) u sum|w||x| off the exact product (as in
    test_quant_kernels.py). The q4 / mix kernels sum f x with f = 1 + q/16 (or 1 + q/4) in [1, 2)
    per group and scale by 16 s (4 s), then subtract the group's input sum: each weight
    contributes terms up to 2 x 16 s |x| twice, so |w| is replaced by |w| + 64 s in that bound."""
    k = W.shape[1]
    return (k + 8) * U * (np.abs(x) @ (np.abs(W) + 64 * s).T) + 1e-30


@gpu
@pytest.mark.parametrize("dtype,m,k,k4", list(cases()))
def test_matvec_equals_reference_product(dtype, m, k, k4):
    seed = m * 100000 + k * 10 + k4
    parts, W, s = make(dtype, m, k, k4, seed)
    w = _internal.CudaWeight(dtype, parts, m, k)
    assert (w.dtype, w.rows, w.cols) == (dtype, m, k)
    rng = np.random.default_rng(seed + 1)
    schedules = ["overlapped", "synchronous"] if dtype == "mix" else ["overlapped"]
    for n in range(1, 9):
        x = rng.standard_normal((n, k)).astype(np.float32)
        exact = x.astype(np.float64) @ W.T
        bound = matvec_bound(W, s, x.astype(np.float64))
        for schedule in schedules:
            y = w.matvec(x, schedule)
            assert y.shape == (n, m)
            assert np.isfinite(y).all(), f"{dtype} n={n} {schedule}: unwritten (NaN) outputs"
            err = np.abs(y - exact)
            assert np.all(err <= bound), (f"{dtype} M={m} K={k} K4={k4} n={n} {schedule}: max err "
                                          f"{err.max():.3g}, max err/bound {(err / bound).max():.3f}")


def decode_tolerance(dtype, parts, m, k):
    """Per-row absolute tolerance of a decoded weight: q4 values q s + m may be computed with one
    fused multiply-add on the GPU (one rounding instead of two): at most 2^-24 x 15 s x 2."""
    return 2 * 15 * U * weight_scales(dtype, parts, m, k).max(axis=1, keepdims=True)


@gpu
@pytest.mark.parametrize("dtype,m,k,k4", list(cases()))
def test_gather_rows_and_dequantize_f16_equal_reference_decode(dtype, m, k, k4):
    parts, W, _ = make(dtype, m, k, k4, seed=m + k + k4)
    w = _internal.CudaWeight(dtype, parts, m, k)
    tol = decode_tolerance(dtype, parts, m, k)
    ids = np.random.default_rng(k).integers(0, m, size=7).astype(np.int32)
    rows = w.gather_rows(ids)
    assert rows.shape == (7, k) and np.isfinite(rows).all()
    assert np.all(np.abs(rows - W[ids]) <= tol[ids])
    f16 = w.dequantize_f16().view(np.float16)
    assert f16.shape == (m, k) and np.isfinite(f16).all()
    # f16 rounding of the fp32 value: within one f16 spacing of the reference rounded to f16.
    ref16 = W.astype(np.float16)
    spacing = np.spacing(np.abs(ref16)).astype(np.float64)
    assert np.all(np.abs(f16.astype(np.float64) - ref16.astype(np.float64)) <= spacing + tol)


@gpu
def test_matvec_rejects_bad_n_and_bad_ids_give_nan():
    parts, _, _ = make("mix", 4, 64, 32, seed=1)
    w = _internal.CudaWeight("mix", parts, 4, 64)
    with pytest.raises(mixrt.MixrtError, match="n must be in 1..8, found 9"):
        w.matvec(np.zeros((9, 64), np.float32))
    with pytest.raises(ValueError, match="schedule"):
        w.matvec(np.zeros((1, 64), np.float32), "eventually")
    rows = w.gather_rows(np.array([1, 4, -1], np.int32))
    assert np.isfinite(rows[0]).all() and np.isnan(rows[1:]).all()


@gpu
def test_device_bytes_cover_the_parts():
    m, k, k4 = 37, 576, 128
    parts, _, _ = make("mix", m, k, k4, seed=2)
    w = _internal.CudaWeight("mix", parts, m, k)
    stored = sum(p.nbytes for p in parts) - 2 * k  # the permutation is stored as u16 on the device
    # plus the staged-input scratch: 8 inputs x (K2p + K2p/32 + K4 + K4/32 floats, each rounded to 4)
    k2p = layouts.padded_k2(k - k4)
    staged = 8 * 4 * sum(-(-v // 4) * 4 for v in (k2p, k2p // 32, k4, k4 // 32))
    assert stored + staged <= w.device_bytes <= stored + staged + 256 * (len(parts) + 1)


@pytest.mark.parametrize("recipe", ["mix", "f16", "q8", "q4", "quik"])
def test_make_random_mixrt_tiny_loads_and_runs(tmp_path, recipe):
    path = tmp_path / f"tiny-{recipe}.mixrt"
    summary = make_random_mixrt(path, shape="tiny", recipe=recipe, bits=4.0, seed=3)
    if recipe == "mix":
        assert 3.0 < summary["linear_bits"] <= 4.0
    model = mixrt.load(str(path), backend="cpu")
    assert model.n_vocab == 32000
    text = model.generate("Hello", max_tokens=4, temperature=0)
    assert isinstance(text, str)
    stats = model.perplexity("Hello world, hello world.", ctx=16)
    assert np.isfinite(stats["ppl"])  # activations stay finite with these weight scales
