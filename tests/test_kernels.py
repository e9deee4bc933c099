# test_kernels.py: the kernel ladder (which table the CPU gets, MIXRT_CPU_KERNELS), and every fast
# float/attention/softmax kernel against its scalar twin on the same data, and both against a float64 numpy
# product. Shapes include the real model's K (576, 1536), odd K and M, and batches of 1 (decode) to
# 70 (prefill, crossing the 64-token block). The quantized kernels: tests/test_quant_kernels.py.
import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

from mixrt import _internal

IMPLS = _internal.available_kernels()
HAS_AVX2 = "avx2" in IMPLS
SHAPES = [(1, 1, 1), (1, 7, 5), (1, 576, 576), (3, 192, 576), (5, 1536, 576), (1, 576, 1536), (70, 37, 1536),
          (2, 13, 577)]


def cpu_flags() -> set:
    with open("/proc/cpuinfo") as f:
        line = next((l for l in f if l.startswith("flags")), "flags :")
    return set(line.split(":", 1)[1].split())


def linux_grants_amx_tiles() -> bool:
    """arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0: the tile registers' state (Linux 5.16+)."""
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(158, 0x1023, 18) == 0  # SYS_arch_prctl on x86-64


def test_the_machine_uses_its_highest_kernel_table():
    # This project's machines have AVX2/FMA/F16C, some also AVX-VNNI, AVX-512 VNNI and AMX: the best
    # path must be active (AMX where Linux grants the tile registers, as it does since 5.16).
    flags = cpu_flags()
    expected = ["scalar"]
    if {"avx2", "fma", "f16c"} <= flags:
        expected.append("avx2")
        if "avx_vnni" in flags:
            expected.append("avxvnni")
        if {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"} <= flags:
            expected.append("avx512")
            if {"amx_tile", "amx_int8"} <= flags and linux_grants_amx_tiles():
                expected.append("amx")
    assert IMPLS == expected
    if "MIXRT_CPU_KERNELS" not in os.environ:
        assert _internal.best_kernels() == expected[-1]


def best_kernels_with(value: str) -> subprocess.CompletedProcess:
    code = "from mixrt import _internal; print(_internal.best_kernels())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, MIXRT_CPU_KERNELS=value))


@pytest.mark.parametrize("impl", IMPLS)
def test_environment_forces_a_kernel_table(impl):
    result = best_kernels_with(impl)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == impl


def test_environment_naming_an_unavailable_table_is_refused():
    result = best_kernels_with("avx1024")
    assert result.returncode != 0
    expected = "MIXRT_CPU_KERNELS is 'avx1024', expected one of the kernel tables this build and CPU can run: "
    assert expected + ", ".join(IMPLS) in result.stderr


def products(W, x):
    """(expected float64 product, per-element error scale sum |w||x|)."""
    W64 = W.astype(np.float64)
    x64 = x.astype(np.float64)
    return x64 @ W64.T, np.abs(x64) @ np.abs(W64).T


@pytest.mark.parametrize("n,M,K", SHAPES)
@pytest.mark.parametrize("dtype", ["f32", "f16"])
@pytest.mark.parametrize("impl", IMPLS)
def test_matmul_matches_float64(impl, dtype, n, M, K):
    rng = np.random.default_rng(n * 1000003 + M * 1009 + K)
    W = rng.standard_normal((M, K)).astype(np.float32)
    x = rng.standard_normal((n, K)).astype(np.float32)
    if dtype == "f16":
        W16 = W.astype(np.float16)
        W = W16.astype(np.float32)  # the exact values the kernel sees
        packed = W16.view(np.uint16)
    else:
        packed = W
    out = _internal.kernel_matmul(impl, packed, x)
    expected, scale = products(W, x)
    # fp32 accumulation of K products: the error is bounded by about K * 2^-24 * sum|w||x|
    # (a worst case; we allow exactly that bound).
    err = np.abs(out - expected)
    bound = K * 2.0**-24 * scale + 1e-30
    print(f"matmul {impl} {dtype} n={n} M={M} K={K}: max err {err.max():.3g}, max err/bound {(err / bound).max():.3g}")
    assert np.all(err <= bound)


@pytest.mark.skipif(not HAS_AVX2, reason="no AVX2 on this CPU: only the scalar kernels exist")
@pytest.mark.parametrize("n,M,K", SHAPES)
@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_avx2_matmul_matches_scalar_twin(dtype, n, M, K):  # the avx512 table uses these too
    rng = np.random.default_rng(7 + n + M + K)
    W = rng.standard_normal((M, K)).astype(np.float32)
    x = rng.standard_normal((n, K)).astype(np.float32)
    packed = W.astype(np.float16).view(np.uint16) if dtype == "f16" else W
    fast = _internal.kernel_matmul("avx2", packed, x)
    ref = _internal.kernel_matmul("scalar", packed, x)
    Wv = W.astype(np.float16).astype(np.float32) if dtype == "f16" else W
    _, scale = products(Wv, x)
    # Same data, different summation order: both are within K * 2^-24 * sum|w||x| of the exact
    # value, so they differ by at most twice that.
    diff = np.abs(fast - ref)
    print(f"avx2 vs scalar {dtype} n={n} M={M} K={K}: max diff {diff.max():.3g}")
    assert np.all(diff <= 2 * K * 2.0**-24 * scale + 1e-30)


def f16_bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.astype(np.float16).view(np.uint16))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cache", ["f16", "f32"])
@pytest.mark.parametrize("hd", [1, 7, 8, 15, 16, 17, 64, 100, 128])
@pytest.mark.parametrize("length", [1, 5, 33])
@pytest.mark.parametrize("nq", [1, 2, 3, 5, 8])
def test_attention_kernels(impl, cache, hd, length, nq):
    # scores = q K^T and out = p V for nq queries sharing the cached keys and values (f16 or f32, as
    # a KV cache stores them), against float64 on the same values.
    rng = np.random.default_rng(hd * 100 + length * 10 + nq)
    q = rng.standard_normal((nq, hd)).astype(np.float32)
    K = rng.standard_normal((length, hd)).astype(np.float16 if cache == "f16" else np.float32)
    V = rng.standard_normal((length, hd)).astype(K.dtype)
    stored = (lambda a: f16_bits(a)) if cache == "f16" else (lambda a: a)
    scores, out = _internal.kernel_attention(impl, q, stored(K), stored(V))
    exact_scores, scale = products(K, q)
    # fp32 sums of hd (resp. length) products: within that many roundings of sum |a||b|.
    assert np.all(np.abs(scores - exact_scores) <= hd * 2.0**-24 * scale + 1e-30)
    exact_out, scale = products(V.T, scores)
    assert np.all(np.abs(out - exact_out) <= length * 2.0**-24 * scale + 1e-30)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("length", [1, 7, 8, 9, 100, 1000])
def test_softmax_rows(impl, length):
    # softmax(scale s) per row against float64, on scores spread over +-40 and on rows with every
    # score equal. Relative error of each probability: the fp32 argument x - m carries up to
    # 2^-24 |x - m| (absolute, so as much relative in exp), exp itself 2e-7 at most (libm's expf in
    # the scalar table, a polynomial in the vector ones: measured 3.4e-7 in all, arguments
    # included), and the fp32 sum of len terms and the division len + 4 roundings of 2^-24.
    rng = np.random.default_rng(length)
    s = (rng.uniform(-40, 40, size=(4, length))).astype(np.float32)
    s[3] = 2.5
    scale = np.float32(0.125)  # a power of two: scale s is exact
    got = _internal.kernel_softmax(impl, s, scale)
    x = s.astype(np.float64) * scale
    gap = x.max(axis=1, keepdims=True) - x
    exact = np.exp(-gap)
    exact /= exact.sum(axis=1, keepdims=True)
    assert np.all(np.abs(got - exact) <= (2.0**-24 * (gap + length + 4) + 2e-7) * exact + 1e-30)
    assert np.allclose(got.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_f16_cache_against_f32_cache(impl):
    # The cache rounds keys and values to f16: each value moves by at most 2^-11 of itself
    # (relative half step, normal range), so a score moves by at most 2^-11 sum |q||k| and an output
    # by at most 2^-11 sum p |v| over the f32 cache's exact result, plus the fp32 sums' roundoff.
    rng = np.random.default_rng(11)
    hd, length, nq = 64, 300, 3
    q = rng.standard_normal((nq, hd)).astype(np.float32)
    K = rng.standard_normal((length, hd)).astype(np.float32)
    V = rng.standard_normal((length, hd)).astype(np.float32)
    scores, out = _internal.kernel_attention(impl, q, f16_bits(K), f16_bits(V))
    exact_scores, scale = products(K, q)
    assert np.all(np.abs(scores - exact_scores) <= (2.0**-11 + hd * 2.0**-24) * scale)
    exact_out, scale = products(V.T, scores)  # with the kernel's own scores as probabilities
    assert np.all(np.abs(out - exact_out) <= (2.0**-11 + length * 2.0**-24) * scale)


@pytest.mark.parametrize("impl", IMPLS)
def test_cache_store_rounds_to_nearest_even_half(impl):
    # Every exponent from subnormal halves to overflow, ties, and values around the limits: the
    # kernel's rounding (F16C or the portable float_to_half) equals numpy's float16 cast bit for bit.
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(20000) * np.exp2(rng.integers(-30, 18, size=20000))).astype(np.float32)
    halves = np.arange(0, 0x7C00, 7, dtype=np.uint16).view(np.float16).astype(np.float32)
    ties = (halves[:-1] + np.diff(halves) / 2).astype(np.float32)  # midpoints of neighbouring halves
    edges = np.array([0.0, -0.0, 65504, 65519.99, 65520, -65520, 1e10, 2.0**-25, 2.0**-25 * 1.0001,
                      2.0**-24, 2.0**-14, 2.0**-14 * (1 - 2.0**-12), np.inf, -np.inf], np.float32)
    for values in (x, halves, ties, edges):
        got = _internal.kernel_to_f16(impl, values)
        with np.errstate(over="ignore"):  # numpy warns where it rounds to infinity, as it should
            expected = values.astype(np.float16).view(np.uint16)
        np.testing.assert_array_equal(got, expected)


def test_f16_conversion_is_exact_for_every_half_value():
    # All 63488 finite halves, as a 1-row matrix times unit vectors: the scalar half_to_float and
    # F16C must both reproduce numpy's conversion exactly.
    bits = np.arange(0, 65536, dtype=np.uint16)
    finite = bits[np.isfinite(bits.view(np.float16))]
    for impl in IMPLS:
        W = finite.reshape(-1, 1).copy()
        out = _internal.kernel_matmul(impl, W, np.ones((1, 1), np.float32))[0]
        np.testing.assert_array_equal(out, finite.view(np.float16).astype(np.float32))
