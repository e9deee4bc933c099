# test_quant_kernels.py: the C++ side of the quantized dtypes (q8, q4, mix and the block formats) on
# the same packed bytes as the numpy reference (python/mixrt/quant/layouts.py): the C++ reference decode equals the numpy decode bit
# for bit; the input rounding x -> x^ (8-bit groups of 32, cpu/quantized_input.h) is within half a
# step of x; every kernel table the machine can run (scalar, avx2, avx512: their fast kernels read
# the row tiles repacked from these bytes) equals the dequantized W times x^ in fp32 accuracy, and
# each fast table equals its scalar twin. Random codes cover padding (K not a multiple of 32/64),
# K4 = 0, outliers, token tiles (1 to 17 tokens: whole and partial tiles of 2 and 4, the 16-token
# block), the real widths 576, 1536, 11008 and M not a multiple of the 16-row tile.
import numpy as np
import pytest

from mixrt import _internal
from mixrt.quant import blockfp, layouts

IMPLS = _internal.available_kernels()
FAST = [impl for impl in IMPLS if impl != "scalar"]
SHAPES = [(5, 576), (7, 1536), (3, 577), (16, 64), (4, 32), (9, 100), (2, 1), (11, 11008)]


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
        for name in blockfp.BLOCK_FORMATS:
            yield name, m, k, 0


def packed(dtype, m, k, k4, seed):
    rng = np.random.default_rng(seed)
    if dtype == "q8":
        return random_q8(rng, m, k)
    if dtype == "q4":
        return random_q4(rng, m, k)
    if dtype in blockfp.BLOCK_FORMATS:  # rows of very different magnitudes: exponents far apart
        w = rng.standard_normal((m, k)) * np.exp2(rng.integers(-12, 4, size=(m, 1)))
        return blockfp.quantize(w.astype(np.float32), blockfp.BLOCK_FORMATS[dtype])
    return random_mix(rng, m, k, k4, outliers_per_row=3)


@pytest.mark.parametrize("dtype,m,k,k4", list(cases()))
def test_cpp_decode_equals_numpy_decode_bit_for_bit(dtype, m, k, k4):
    parts = packed(dtype, m, k, k4, seed=m * 1000 + k + k4)
    cpp = _internal.dequantize(dtype, parts, m, k)
    ref = layouts.dequantize(dtype, parts, m, k)
    assert cpp.dtype == np.float32 and ref.dtype == np.float32
    np.testing.assert_array_equal(cpp, ref)


def magnitudes(dtype, parts, m, k):
    """|terms| the fast kernels add per weight, [M, K] float64: the code part and the min/zero part
    of each weight are summed separately (s q x^ and m x^, or s q x^ and s z x^), plus outliers."""
    if dtype == "q8" or dtype in blockfp.BLOCK_FORMATS:
        return np.abs(layouts.dequantize(dtype, parts, m, k).astype(np.float64))
    cols = np.arange(k) // 32
    if dtype == "q4":
        q, scales, mins = layouts.unpack_q4(parts, m, k)
        return (q * np.abs(scales.astype(np.float64))[:, cols]) + np.abs(mins.astype(np.float64))[:, cols]
    mp = layouts.unpack_mix(parts, m, k)
    k2 = k - mp.k4
    A = np.zeros((m, k))
    s2 = layouts.decode_scales2(mp.scale_code2, mp.super2).astype(np.float64)
    A[:, mp.perm[:k2]] = (mp.q2 + mp.zero2[:, cols[:k2]]) * s2[:, cols[:k2]]
    A[:, mp.perm[k2:]] = (mp.q4 * np.abs(mp.scale4.astype(np.float64))[:, cols[:mp.k4]]
                          + np.abs(mp.min4.astype(np.float64))[:, cols[:mp.k4]])
    A[layouts.outlier_rows(mp.row_ptr), mp.cols] += np.abs(mp.vals.astype(np.float64))
    return A


@pytest.mark.parametrize("dtype,m,k,k4", list(cases()))
def test_input_rounding_is_within_half_a_step(dtype, m, k, k4):
    parts = packed(dtype, m, k, k4, seed=m + k)
    x = np.random.default_rng(k).standard_normal((3, k)).astype(np.float32) * np.float32(3)
    x[0, :] = 0.0  # an all-zero input row rounds to zero (scale 0)
    _, xhat = _internal.kernel_matmul_quant("scalar", dtype, parts, m, k, x)
    assert np.all(xhat[0] == 0)
    # Each group of 32 (in the kernel's column order) has step d = max|x| / 127 over the group; the
    # step of any group is at most max|x| / 127 over the row.
    step = np.abs(x).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(xhat - x) <= step / 2 * (1 + 2.0**-20))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [1, 3, 6])
@pytest.mark.parametrize("dtype,m,k,k4", list(cases()))
def test_kernel_equals_dequantized_product(impl, n, dtype, m, k, k4):
    seed = m * 1000 + k + k4
    parts = packed(dtype, m, k, k4, seed)
    W = layouts.dequantize(dtype, parts, m, k).astype(np.float64)
    x = np.random.default_rng(seed + n).standard_normal((n, k)).astype(np.float32)
    out, xhat = _internal.kernel_matmul_quant(impl, dtype, parts, m, k, x)
    exact = xhat.astype(np.float64) @ W.T
    # fp32 accumulation over K terms: at most about K * 2^-24 * sum |term| off the exact product,
    # where the fast kernels' terms are the code and min/zero parts of each weight (magnitudes);
    # the scalar reference also rounds each decoded weight: up to 8 more roundings, hence (K + 8).
    scale = np.abs(xhat.astype(np.float64)) @ magnitudes(dtype, parts, m, k).T
    bound = (k + 8) * 2.0**-24 * scale + 1e-30
    err = np.abs(out - exact)
    print(f"{impl} {dtype} M={m} K={k} K4={k4} n={n}: max err {err.max():.3g}, max err/bound {(err / bound).max():.3f}")
    assert np.all(err <= bound)


@pytest.mark.skipif(not FAST, reason="no AVX2 on this CPU: only the scalar kernels exist")
@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("n", [1, 2, 5, 9, 17])
@pytest.mark.parametrize("dtype,m,k,k4", list(cases()))
def test_fast_kernel_matches_scalar_twin(impl, n, dtype, m, k, k4):
    parts = packed(dtype, m, k, k4, seed=7 * m + k + k4)
    x = np.random.default_rng(n + k).standard_normal((n, k)).astype(np.float32)
    fast, xhat_fast = _internal.kernel_matmul_quant(impl, dtype, parts, m, k, x)
    ref, xhat_ref = _internal.kernel_matmul_quant("scalar", dtype, parts, m, k, x)
    np.testing.assert_array_equal(xhat_fast, xhat_ref)  # the same rounded input
    # Both are within (K + 8) * 2^-24 * sum |term| of the exact W x^, so within twice that apart.
    scale = np.abs(xhat_ref.astype(np.float64)) @ magnitudes(dtype, parts, m, k).T
    assert np.all(np.abs(fast - ref) <= 2 * (k + 8) * 2.0**-24 * scale + 1e-30)


def test_mix_rejects_a_broken_permutation():
    parts = packed("mix", 4, 64, 32, seed=1)
    parts[0] = parts[0].copy()
    parts[0][3] = parts[0][4]
    with pytest.raises(RuntimeError, match="perm is not a permutation"):
        _internal.dequantize("mix", parts, 4, 64)


def test_mix_rejects_bad_outlier_rows():
    parts = packed("mix", 4, 64, 32, seed=2)
    parts[7] = parts[7].copy()
    parts[7][-1] += 1
    with pytest.raises(RuntimeError, match="row_ptr"):
        _internal.dequantize("mix", parts, 4, 64)


@pytest.mark.parametrize("dtype,k4", [("q8", 0), ("q4", 0), ("mix", 32)])
def test_non_finite_and_huge_inputs_round_to_defined_codes(dtype, k4):
    """NaN, infinite and huge (3e38) activations: the input rounding gives code 0 to what is not a
    number and to every value of a block whose max is not finite (its scale, NaN or inf, then makes
    that block's contribution NaN), never converting a non-finite float to an integer (undefined
    behaviour); a row of subnormal values (1 / max overflows) rounds to zero; finite rows stay as
    they were; every kernel table computes the same as the scalar one, NaN for NaN."""
    m, k = 16, 128
    parts = packed(dtype, m, k, k4, seed=11)
    x = np.random.default_rng(3).standard_normal((6, k)).astype(np.float32)
    x[1, 5], x[2, 40], x[3, 70], x[4, :] = np.nan, np.inf, 3e38, -np.inf
    x[5] *= np.float32(1e-40)
    clean, _ = _internal.kernel_matmul_quant("scalar", dtype, parts, m, k, x[:1])
    ref, xhat = _internal.kernel_matmul_quant("scalar", dtype, parts, m, k, x)
    np.testing.assert_array_equal(ref[0], clean[0])
    assert np.isnan(ref[1]).all() and not np.isfinite(ref[2]).any() and not np.isfinite(ref[4]).any()
    assert np.isfinite(xhat[0]).all() and np.isnan(xhat[1, 5]) and np.isnan(xhat[4]).all()
    assert np.all(xhat[5] == 0) and np.all(ref[5] == 0)
    for impl in IMPLS:
        out, xhat_impl = _internal.kernel_matmul_quant(impl, dtype, parts, m, k, x)
        np.testing.assert_array_equal(xhat_impl, xhat, err_msg=impl)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(ref), err_msg=impl)
        # the finite row within the fp32 bound of test_fast_kernel_matches_scalar_twin
        scale = np.abs(xhat[0].astype(np.float64)) @ magnitudes(dtype, parts, m, k).T
        assert np.all(np.abs(out[0] - ref[0]) <= 2 * (k + 8) * 2.0**-24 * scale + 1e-30), impl
