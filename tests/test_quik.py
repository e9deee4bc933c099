# test_quik.py: the quik dtype (FORMAT.md 5.7; python/mixrt/quant/quik.py, cpu/quantized_input.h
# and the quik tile kernel): packing and the C++ decode against numpy bit for bit, the per-token
# input rounding, every kernel table against the exact product of the rounded input and the
# decoded weights (and against the scalar twin), the quantizers (fp16 column choice, GPTQ against
# round to nearest), `mixrt-convert --recipe quik` end to end with its options and refusals, the
# token4 activations option, and CUDA's refusal.
import math
import subprocess
import sys

import numpy as np
import pytest

from mixrt import _internal
from mixrt.devtools.decoded_copy import decoded_copy
from mixrt.quant import layouts, quik

IMPLS = _internal.available_kernels()
FAST = [impl for impl in IMPLS if impl != "scalar"]
# (M, K, fp16 columns): K a multiple of 32 or not, no fp16 columns, all of them, SmolLM2's shapes
SHAPES = [(37, 200, 13), (16, 64, 0), (5, 576, 36), (3, 33, 33), (18, 1536, 96), (1, 7, 2)]


def packed(m, k, n_out, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((m, k)) * np.exp2(rng.integers(-6, 3, size=(m, 1)))).astype(np.float32)
    perm = quik.column_order(rng.random(k), k, n_out)
    return quik.pack(quik.quantize_rtn(w, perm, n_out))


@pytest.mark.parametrize("m,k,n_out", SHAPES)
def test_pack_roundtrip_and_cpp_decode_bit_exact(m, k, n_out):
    parts = packed(m, k, n_out, seed=m + k)
    assert [p.nbytes for p in parts] == layouts.part_sizes("quik", m, k, out_cols=n_out)
    p = layouts.unpack_quik(parts, m, k)
    assert all(np.array_equal(a, b) for a, b in zip(quik.pack(p), parts))
    ref = layouts.dequantize("quik", parts, m, k)
    np.testing.assert_array_equal(_internal.dequantize("quik", parts, m, k), ref)
    # the stored formula: q x scale on the 4-bit columns (perm order), the fp16 weights on the others
    kin = k - n_out
    assert np.array_equal(ref[:, p.perm[:kin]], p.q.astype(np.float32) * p.scales.astype(np.float32)[:, None])
    assert np.array_equal(ref[:, p.perm[kin:]], p.out_w.astype(np.float32))
    if kin % 32:  # padding columns hold code 0 (nibble 8)
        codes = parts[1].reshape(m, -1, 16)[:, -1]
        pad = np.concatenate([codes & 15, codes >> 4], axis=1)[:, kin % 32:]
        assert (pad == 8).all()


def test_reader_refuses_a_broken_permutation():
    parts = packed(4, 64, 8, seed=1)
    parts[0] = parts[0].copy()
    parts[0][3] = parts[0][2]
    with pytest.raises(Exception, match="perm is not a permutation"):
        _internal.dequantize("quik", parts, 4, 64)
    parts = packed(4, 64, 8, seed=1)
    parts[2] = np.full(4, np.inf, np.float16)
    with pytest.raises(Exception, match="row scale entry 0 is not finite"):
        _internal.dequantize("quik", parts, 4, 64)


def lowest_inlier(xhat, perm, kin):
    """lo of each token: the smallest x^ of its 4-bit columns (that column rounds to code 0)."""
    return xhat[:, perm[:kin]].min(axis=1) if kin else np.zeros(xhat.shape[0])


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("m,k,n_out", SHAPES)
def test_input_rounding_per_token(bits, m, k, n_out):
    """The 4-bit columns of each token round asymmetrically to `bits` bits between their min and
    max: within half a step (max - min) / (2^bits - 1), min and max exact; fp16 columns exact."""
    parts = packed(m, k, n_out, seed=k)
    perm, kin = parts[0], k - n_out
    rng = np.random.default_rng(k + bits)
    x = (rng.standard_normal((4, k)) * 3 + rng.standard_normal((4, 1))).astype(np.float32)
    x[1] = 2.5  # a constant row: step 0, exact
    _, xhat = _internal.kernel_matmul_quant("scalar", "quik", parts, m, k, x, bits)
    np.testing.assert_array_equal(xhat[:, perm[kin:]], x[:, perm[kin:]])
    if kin:
        xi = x[:, perm[:kin]].astype(np.float64)
        lo, hi = xi.min(axis=1, keepdims=True), xi.max(axis=1, keepdims=True)
        step = (hi - lo) / (2**bits - 1)
        err = np.abs(xhat[:, perm[:kin]] - xi)
        assert np.all(err <= step / 2 * (1 + 1e-5) + 1e-6 * np.abs(xi))
        assert np.array_equal(lowest_inlier(xhat, perm, kin), lo[:, 0].astype(np.float32))


@pytest.mark.parametrize("impl", IMPLS)
def test_nan_inputs_of_4bit_columns_round_to_code_0(impl):
    """A NaN among a token's 4-bit columns is left out of its min and max and gets code 0 (defined,
    the same in every table); the output stays finite."""
    m, k, n_out = 16, 96, 8
    parts = packed(m, k, n_out, seed=2)
    inliers = parts[0][:k - n_out]
    x = np.random.default_rng(0).standard_normal((3, k)).astype(np.float32)
    x[0, inliers[5]] = np.nan
    x[2, inliers[:40]] = np.nan
    out, xhat = _internal.kernel_matmul_quant(impl, "quik", parts, m, k, x)
    ref_out, ref_xhat = _internal.kernel_matmul_quant("scalar", "quik", parts, m, k, x)
    np.testing.assert_array_equal(xhat, ref_xhat)
    lo = np.nanmin(x[:, inliers], axis=1)
    assert (xhat[0, inliers[5]], xhat[2, inliers[0]]) == (lo[0], lo[2]) and np.isfinite(out).all()


def kernel_bound(parts, m, k, xhat):
    """|fast or scalar kernel - exact W x^|: fp32 rounding of at most K + 16 terms, the fast kernel's
    terms being s (d sum q u) and s lo rowsum, whose magnitudes are bounded by sum |w| (|x^| + 2|lo|)
    over the 4-bit columns (d u = x^ - lo), plus the fp16 columns' |w| |x^|."""
    w = np.abs(layouts.dequantize("quik", parts, m, k).astype(np.float64))
    perm, kin = parts[0], k - parts[3].shape[1]
    lo = np.abs(lowest_inlier(xhat.astype(np.float64), perm, kin))
    scale = np.abs(xhat.astype(np.float64)) @ w.T + 2 * lo[:, None] * w[:, perm[:kin]].sum(axis=1)[None, :]
    return (k + 16) * 2.0**-24 * scale + 1e-30


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [1, 3, 6, 17])
@pytest.mark.parametrize("m,k,n_out", SHAPES)
def test_kernel_equals_dequantized_product(bits, impl, n, m, k, n_out):
    parts = packed(m, k, n_out, seed=m * 100 + k)
    W = layouts.dequantize("quik", parts, m, k).astype(np.float64)
    x = (np.random.default_rng(n + k).standard_normal((n, k)) + 1.5).astype(np.float32)
    out, xhat = _internal.kernel_matmul_quant(impl, "quik", parts, m, k, x, bits)
    assert np.all(np.abs(out - xhat.astype(np.float64) @ W.T) <= kernel_bound(parts, m, k, xhat))


@pytest.mark.skipif(not FAST, reason="no AVX2 on this CPU: only the scalar kernels exist")
@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("n", [1, 5, 16, 33])
@pytest.mark.parametrize("m,k,n_out", SHAPES)
def test_fast_kernel_matches_scalar_twin(impl, n, m, k, n_out):
    parts = packed(m, k, n_out, seed=7 * m + k)
    x = np.random.default_rng(n + k).standard_normal((n, k)).astype(np.float32)
    fast, xhat_fast = _internal.kernel_matmul_quant(impl, "quik", parts, m, k, x)
    ref, xhat_ref = _internal.kernel_matmul_quant("scalar", "quik", parts, m, k, x)
    np.testing.assert_array_equal(xhat_fast, xhat_ref)
    assert np.all(np.abs(fast - ref) <= 2 * kernel_bound(parts, m, k, xhat_ref))


@pytest.mark.skipif("amx" not in IMPLS, reason="no AMX-INT8 (or Linux did not grant the tile registers)")
def test_amx_runs_of_row_tiles():
    """Rows whose unpacked codes exceed the AMX kernel's 1 MiB run (19 tiles of 64 KiB: two runs),
    token counts that leave a tail for the vector kernel, against the scalar twin."""
    m, k, n_out = 300, 4096, 256
    parts = packed(m, k, n_out, seed=5)
    for n in (16, 70):
        x = np.random.default_rng(n).standard_normal((n, k)).astype(np.float32)
        fast, _ = _internal.kernel_matmul_quant("amx", "quik", parts, m, k, x)
        ref, xhat = _internal.kernel_matmul_quant("scalar", "quik", parts, m, k, x)
        assert np.all(np.abs(fast - ref) <= 2 * kernel_bound(parts, m, k, xhat))


def test_column_order_keeps_the_largest_activations_last():
    col_max = np.array([0.1, 9.0, 0.3, 7.0, 0.2, 8.0])
    assert quik.column_order(col_max, 6, 2).tolist() == [0, 2, 3, 4, 1, 5]
    assert quik.column_order(None, 6, 0).tolist() == list(range(6))
    with pytest.raises(ValueError, match="col_max: expected 6 calibration maxima"):
        quik.column_order(None, 6, 2)
    assert quik.out_column_count(576, 0.0625) == 36 and quik.out_column_count(1536, 0.0625) == 96


def test_gptq_beats_round_to_nearest_on_the_layer_output():
    """On correlated inputs, GPTQ's output error tr((W - W') H (W - W')^T) is below round to
    nearest's, with and without fp16 columns, and the fp16 columns take part of the error."""
    rng = np.random.default_rng(3)
    m, k, n = 48, 128, 4096
    x = rng.standard_normal((n, k)) @ (np.eye(k) + 0.3 * rng.standard_normal((k, k)))
    x[:, :4] *= 20  # a few columns with large activations
    h = x.T @ x / n
    w = rng.standard_normal((m, k)).astype(np.float32)
    for n_out in (0, 8):
        perm = quik.column_order(np.abs(x).max(axis=0), k, n_out)
        errs = []
        for p in (quik.quantize_rtn(w, perm, n_out), quik.quantize_gptq(w, h, perm, n_out)):
            d = (quik.decode(p, k) - w).astype(np.float64)
            errs.append(np.einsum("ij,jk,ik->", d, h, d))
        print(f"n_out={n_out}: rtn {errs[0]:.4g}, gptq {errs[1]:.4g}")
        assert errs[1] < 0.8 * errs[0]
    assert set(perm[k - 8:]) >= {0, 1, 2, 3}


@pytest.fixture(scope="module")
def calib_text(tmp_path_factory):
    path = tmp_path_factory.mktemp("quik-calib") / "calib.txt"
    path.write_text(" ".join(f"The number {i} follows {i - 1} in the list of numbers." for i in range(1, 200)))
    return path


@pytest.mark.parametrize("down_proj", ["q8", "quik"])
def test_convert_and_run(tiny_hf, calib_text, tmp_path, down_proj):
    """The recipe stores every decoder linear weight as quik (ffn_down as down_proj) with
    round(0.0625 K) fp16 columns chosen by calibration, records its choices, and runs like its
    dequantized copy up to the per-token 8-bit rounding of the inputs (measured 1-2% of the
    largest logit here; the bound of test_convert.py's 8-bit group rounding, 4%, applies) and
    further off at 4 bits (token4); CUDA refuses the dtype by name and auto falls back."""
    import mixrt
    from mixrt.convert import convert
    from mixrt.format import read_mixrt

    out = tmp_path / "quik.mixrt"
    summary = convert(tiny_hf, out, "quik", calib=calib_text, calib_tokens=512, down_proj=down_proj,
                      progress=False)
    info = read_mixrt(out)
    linear = {t.name: t for t in info.tensors.values() if t.name.startswith("blk.") and len(t.dims) == 2}
    for name, t in linear.items():
        want = "q8" if name.endswith("ffn_down.weight") and down_proj == "q8" else "quik"
        assert t.dtype_name == want
        if want == "quik":
            n_out = layouts.derived_counts("quik", [s for _, s in t.parts], t.dims[0])["out_cols"]
            assert n_out == round(0.0625 * t.dims[1])
    meta = info.metadata
    assert info.header["version_minor"] == 3
    assert (meta["mixrt.recipe"], meta["mixrt.recipe.down_proj"], meta["mixrt.recipe.outlier_cols"],
            meta["mixrt.recipe.method"], meta["mixrt.recipe.calib_file"]) == ("quik", down_proj, 0.0625, "gptq",
                                                                            "calib.txt")
    stored = sum(sum(layouts.part_sizes(t.dtype_name, *t.dims, **layouts.derived_counts(
        t.dtype_name, [s for _, s in t.parts], t.dims[0]))) for t in linear.values())
    assert math.isclose(summary["linear_bits"], 8 * stored / sum(math.prod(t.dims) for t in linear.values()))
    for t in mixrt.load(out, backend="cpu").tensors():  # what `mixrt info` shows
        if t["dtype"] == "quik":
            n_out = round(0.0625 * t["dims"][1])
            assert (t["n_cols_4bit"], t["n_outliers"]) == (t["dims"][1] - n_out, t["dims"][0] * n_out)
    tokens = [1, 450, 783, 338, 263]
    a8 = mixrt.load(out, backend="cpu").eval_logits(tokens)
    a4 = mixrt.load(out, backend="cpu", activations="token4").eval_logits(tokens)
    dense = mixrt.load(decoded_copy(out, tmp_path / "d.mixrt")).eval_logits(tokens)
    moved8, moved4 = (np.abs(a - dense).max() / np.abs(dense).max() for a in (a8, a4))
    print(f"down_proj {down_proj}: logits moved {moved8:.4f} (8-bit inputs), {moved4:.4f} (4-bit)")
    assert 0 < moved8 <= 0.04 and moved4 > 2 * moved8
    for threads in (1, 3):
        assert np.array_equal(mixrt.load(out, backend="cpu", threads=threads).eval_logits(tokens), a8)
    with pytest.raises(mixrt.MixrtError, match="has dtype quik, which the CUDA backend does not implement"):
        mixrt.load(out, backend="cuda")
    model = mixrt.load(out, backend="auto")
    assert model.backend == "cpu" and "dtype quik" in model.backend_note


def test_no_calibration_without_fp16_columns(tiny_hf, tmp_path):
    from mixrt.convert import convert
    from mixrt.format import read_mixrt

    out = tmp_path / "rtn.mixrt"
    convert(tiny_hf, out, "quik", calib=None, outlier_cols=0, progress=False)
    meta = read_mixrt(out).metadata
    assert meta["mixrt.recipe.method"] == "rtn" and meta["mixrt.recipe.outlier_cols"] == 0


@pytest.mark.parametrize("args,status,message", [
    (["--recipe", "quik", "--no-calib"], 1, "calib: the quik recipe picks its fp16 columns by their activations"),
    (["--recipe", "quik", "--outlier-cols", "1.5"], 2, "argument --outlier-cols: expected a number in [0, 1], found 1.5"),
    (["--recipe", "quik", "--outlier-cols", "nan"], 2, "argument --outlier-cols: expected a number in [0, 1], found nan"),
    (["--recipe", "quik", "--down-proj", "q4"], 2, "argument --down-proj: invalid choice: 'q4'"),
    (["--recipe", "quik", "--bits", "4"], 1, "bits: expected only with the mix, bfp and bfp-search recipes"),
    (["--recipe", "quik", "--calib-method", "sequential"], 1, "quik: needs the runtime calibration method"),
    (["--recipe", "q4", "--outlier-cols", "0.1"], 1, "outlier_cols: expected only with the quik recipe, found 0.1 for q4"),
    (["--recipe", "mix", "--down-proj", "quik"], 1, "down_proj: expected only with the quik recipe, found quik for mix"),
])
def test_convert_refusals(tiny_hf, tmp_path, args, status, message):
    result = subprocess.run([sys.executable, "-m", "mixrt.convert.cli", str(tiny_hf), "-o",
                             str(tmp_path / "out.mixrt"), *args], capture_output=True, text=True)
    assert result.returncode == status and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.mixrt").exists()
