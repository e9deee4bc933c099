# test_quant_kernels.py: the C++ side of the quantized dtypes on the same packed bytes as the numpy
# reference (python/mixrt/quant/layouts.py): the C++ reference decode equals the numpy decode bit
# for bit, and every kernel (scalar and AVX2) equals the dequantized W times x in fp32 accuracy.
# Random codes cover padding (K not a multiple of 32/64), K4 = 0, outliers and token tiles.
import numpy as np
import pytest

from mixrt import _core
from mixrt.quant import layouts

IMPLS = ["scalar"] + (["avx2"] if _core.best_kernels() == "avx2" else [])
SHAPES = [(5, 576), (7, 1536), (3, 577), (16, 64), (4, 32), (9, 100), (2, 1)]


def random_q8(rng, m, k):
    kp = layouts.groups(k) * 32
    codes = rng.integers(-127, 128, size=(m, kp)).astype(np.int8)
    codes[:, k:] = 0
    scales = rng.uniform(0.001, 0.05, size=(m, kp // 32)).astype(np.float16)
    return layouts.pack_q8(codes, scales)


def random_q4(rng, m, k):
    kp = layouts.groups(k) * 32
    q = rng.integers(0, 16, size=(m, kp)).astype(np.uint8)
    q[:, k:] = 0
    scales = rng.uniform(0.001, 0.05, size=(m, kp // 32)).astype(np.float16)
    mins = rng.uniform(-0.4, 0.0, size=(m, kp // 32)).astype(np.float16)
    return layouts.pack_q4(q, scales, mins)


def random_mix(rng, m, k, k4, outliers_per_row):
    k2 = k - k4
    g2 = layouts.padded_k2(k2) // 32
    b2 = -(-g2 // 16)
    counts = rng.integers(0, outliers_per_row + 1, size=m) if k > 1 else np.zeros(m, int)
    cols = [np.sort(rng.choice(k, size=min(c, k), replace=False)) for c in counts]
    row_ptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.uint32)
    nnz = int(row_ptr[-1])
    mix = layouts.MixParts(
        perm=rng.permutation(k).astype(np.int64),
        q2=rng.integers(0, 4, size=(m, k2)).astype(np.uint8),
        scale_code2=rng.integers(0, 64, size=(m, g2)).astype(np.uint8),
        zero2=rng.integers(0, 4, size=(m, g2)).astype(np.uint8),
        super2=rng.uniform(1e-4, 1e-3, size=(m, b2)).astype(np.float16),
        q4=rng.integers(0, 16, size=(m, k4)).astype(np.uint8),
        scale4=rng.uniform(0.001, 0.05, size=(m, k4 // 32)).astype(np.float16),
        min4=rng.uniform(-0.4, 0.0, size=(m, k4 // 32)).astype(np.float16),
        row_ptr=row_ptr,
        cols=(np.concatenate(cols) if nnz else np.zeros(0)).astype(np.uint16),
        vals=rng.normal(0, 0.5, size=nnz).astype(np.float16))
    return layouts.pack_mix(mix)


def cases():
    for m, k in SHAPES:
        yield "q8", m, k, 0
        yield "q4", m, k, 0
        for k4 in sorted({0, 32 * ((k // 4) // 32), 32 * (k // 32)}):
            yield "mix", m, k, k4


def packed(dtype, m, k, k4, seed):
    rng = np.random.default_rng(seed)
    if dtype == "q8":
        return random_q8(rng, m, k)
    if dtype == "q4":
        return random_q4(rng, m, k)
    return random_mix(rng, m, k, k4, outliers_per_row=3)


@pytest.mark.parametrize("dtype,m,k,k4", list(cases()))
def test_cpp_decode_equals_numpy_decode_bit_for_bit(dtype, m, k, k4):
    parts = packed(dtype, m, k, k4, seed=m * 1000 + k + k4)
    cpp = _core.dequantize(dtype, parts, m, k)
    ref = layouts.dequantize(dtype, parts, m, k)
    assert cpp.dtype == np.float32 and ref.dtype == np.float32
    np.testing.assert_array_equal(cpp, ref)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [1, 3, 6])
@pytest.mark.parametrize("dtype,m,k,k4", list(cases()))
def test_kernel_equals_dequantized_product(impl, n, dtype, m, k, k4):
    seed = m * 1000 + k + k4
    parts = packed(dtype, m, k, k4, seed)
    W = layouts.dequantize(dtype, parts, m, k).astype(np.float64)
    x = np.random.default_rng(seed + n).standard_normal((n, k)).astype(np.float32)
    out = _core.kernel_matmul_quant(impl, dtype, parts, m, k, x)
    exact = x.astype(np.float64) @ W.T
    # fp32 accumulation over K terms: at most about K * 2^-24 * sum|w||x| off the exact product.
    # The fast kernel also rounds each decoded weight differently (fused multiply-add) and adds
    # outliers as separate terms: up to 8 more roundings per term, hence (K + 8).
    scale = np.abs(x.astype(np.float64)) @ np.abs(W).T
    if dtype == "mix":
        V = np.zeros((m, k))
        mp = layouts.unpack_mix(parts, m, k)
        V[layouts.outlier_rows(mp.row_ptr), mp.cols] = mp.vals.astype(np.float64)
        scale += np.abs(x.astype(np.float64)) @ (np.abs(W - V) + np.abs(V)).T
    bound = (k + 8) * 2.0**-24 * scale + 1e-30
    err = np.abs(out - exact)
    print(f"{impl} {dtype} M={m} K={k} K4={k4} n={n}: max err {err.max():.3g}, max err/bound {(err / bound).max():.3f}")
    assert np.all(err <= bound)


def test_mix_rejects_a_broken_permutation():
    parts = packed("mix", 4, 64, 32, seed=1)
    parts[0] = parts[0].copy()
    parts[0][3] = parts[0][4]
    with pytest.raises(RuntimeError, match="perm is not a permutation"):
        _core.dequantize("mix", parts, 4, 64)


def test_mix_rejects_bad_outlier_rows():
    parts = packed("mix", 4, 64, 32, seed=2)
    parts[7] = parts[7].copy()
    parts[7][-1] += 1
    with pytest.raises(RuntimeError, match="row_ptr"):
        _core.dequantize("mix", parts, 4, 64)
