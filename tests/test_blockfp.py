# test_blockfp.py: the block formats with a shared exponent (FORMAT.md 5.6; python/mixrt/quant/
# blockfp.py and format/quant_element.h): the encoder's rule and edge cases (all-zero blocks,
# subnormal flush, the exponent at both ends, saturation, ties, NaN/Inf refused with the tensor
# named), the bit packing byte for byte, the C++ reference decode equal to the numpy decode bit for
# bit on those edge cases (the kernels against it: test_quant_kernels.py), the reader and writer
# refusing the NaN scale, the activations option's rounding bit for bit against numpy and its
# wiring, the bfp-search planner, and `mixrt-convert --recipe bfp/bfp-search/mxint8/mxfp4` end to
# end on a tiny random model (the CUDA backend refuses the dtypes by name; auto falls back to the
# CPU; the logits against the dequantized weights' are test_convert.py's).
import math

import numpy as np
import pytest

from mixrt import _internal
from mixrt.quant import blockfp, layouts
from mixrt.quant.blockfp import BLOCK_FORMATS

FORMATS = list(BLOCK_FORMATS.values())
IDS = [fmt.name for fmt in FORMATS]
SHAPES = [(5, 576), (3, 577), (16, 64), (2, 1), (7, 1536), (17, 100)]


def random_weights(rng, m, k):
    """Gaussian rows with the edge cases in the first rows: an all-zero block, a subnormal block,
    a block at the top of the float32 range, a power-of-two maximum, exact ties."""
    x = rng.normal(0, 0.02, size=(m, k)).astype(np.float32)
    x[0, :min(k, 32)] = 0
    if m > 1 and k >= 32:
        x[1, :32] = np.float32(1e-42) * rng.integers(-3, 4, size=32)
    if m > 2 and k >= 64:
        x[2, 32:64] = np.float32(3.4e38) * rng.uniform(-1, 1, size=32).astype(np.float32)
        x[2, 32] = np.float32(3.4e38)
    if m > 3 and k >= 32:
        x[3, :32] = rng.integers(-8, 9, size=32) / 8
        x[3, 0] = 1.0
    return x


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_element_values(fmt):
    codes = np.arange(2 ** fmt.bits)
    values = fmt.element_values(codes)
    if fmt.element == "e2m1":
        assert list(values[:8]) == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
        assert list(values[8:]) == [-v for v in values[:8]]
    else:  # two's complement m / 2^(bits-2)
        top = 2 ** (fmt.bits - 1)
        assert sorted(values * 2 ** (fmt.bits - 2)) == list(range(-top, top))
    assert fmt.max_element == values.max()
    assert fmt.bits_per_weight == fmt.bits + 8 / fmt.block


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_encode_rule(fmt):
    """E = floor(log2 max|x|) - emax + 127 per block; every element within half a step of x, or
    saturated at the largest element; the largest element's magnitude is the block's top."""
    rng = np.random.default_rng(1)
    x = (rng.normal(0, 1, size=(8, 256)) * np.exp2(rng.integers(-20, 20, size=(8, 1)))).astype(np.float32)
    codes, exps = blockfp.encode(x, fmt)
    blocks = np.abs(x).reshape(8, -1, fmt.block).max(axis=-1)
    assert (exps == np.floor(np.log2(blocks)) - fmt.emax + 127).all()
    y = blockfp.decode(codes, exps, fmt, 256)
    scale = np.exp2(exps.astype(np.float64) - 127).repeat(fmt.block, axis=1)
    rel = np.abs(y - x) / scale  # error in units of the block's scale
    # largest gap between neighbouring elements: 2^-(bits-2) for integers, 2 for E2M1 (4 -> 6)
    gap = 2.0 if fmt.element == "e2m1" else 2.0 ** -(fmt.bits - 2)
    saturated = np.abs(x) / scale > fmt.max_element
    assert (rel[~saturated] <= gap / 2 + 1e-12).all()
    assert (np.abs(y[saturated]) / scale[saturated] == fmt.max_element).all()


def test_edge_cases():
    rng = np.random.default_rng(2)
    x = random_weights(rng, 4, 64)
    fmt = BLOCK_FORMATS["bfp6"]
    codes, exps = blockfp.encode(x, fmt)
    y = blockfp.decode(codes, exps, fmt, 64)
    assert (exps[0, :2] == 0).all() and (codes[0, :32] == 0).all()  # all-zero blocks: E 0, codes 0
    assert (exps[1, :2] == 0).all() and (y[1, :32] == 0).all()  # subnormal blocks flush to zero
    assert (exps[2, 2] == 254) and np.isfinite(y[2]).all()  # the top of float32: E 254, no overflow
    assert y[2, 32] == np.float32(31 / 16 * 2.0 ** 127)  # 3.4e38 saturates at the largest bfp6 element
    assert y[3, 0] == 1.0  # a power-of-two maximum is kept exactly (no saturation)
    # the exponent 255 (OCP's NaN scale) is never written
    assert blockfp.encode(np.full((1, 32), 3.4e38, np.float32), BLOCK_FORMATS["mxfp4"])[1].max() == 252


def test_ties_round_to_even():
    fmt = BLOCK_FORMATS["mxfp4"]
    x = np.array([[4.0, 5.0, 2.5, 0.25, -0.75, -5.0] + [0.0] * 26], np.float32)  # scale 1 (max 4..6)
    codes, exps = blockfp.encode(x, fmt)
    assert exps[0, 0] == 127
    assert list(blockfp.decode(codes, exps, fmt, 6)[0]) == [4, 4, 2, 0, -1, -4]
    fmt = BLOCK_FORMATS["bfp4"]  # elements m / 4, scale 1 for max in [1, 2)
    x = np.array([[1.0, 0.125, 0.375, -0.625] + [0.0] * 28], np.float32)
    codes, exps = blockfp.encode(x, fmt)
    assert list(blockfp.decode(codes, exps, fmt, 4)[0]) == [1.0, 0.0, 0.5, -0.5]


def test_bfp8_equals_mxint8_on_uniform_blocks():
    """The paper's BFP is MXINT with blocks of 16: where both halves of a 32-block share their
    exponent, bfp8 and mxint8 store the same values."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(6, 128)).astype(np.float32)
    x[:, ::16] = 1.5  # every 16-block's maximum in [1, 2)
    a, b = BLOCK_FORMATS["bfp8"], BLOCK_FORMATS["mxint8"]
    assert (blockfp.decode(*blockfp.encode(x, a), a, 128) == blockfp.decode(*blockfp.encode(x, b), b, 128)).all()


@pytest.mark.parametrize("name", ["nan", "inf"])
def test_non_finite_refused_with_tensor_named(name):
    x = np.zeros((2, 32), np.float32)
    x[1, 5] = float(name)
    with pytest.raises(ValueError, match=r"blk\.0\.attn_q\.weight: not finite at row 1, column 5"):
        blockfp.encode(x, BLOCK_FORMATS["bfp6"], "blk.0.attn_q.weight")


def test_bit_stream_layout():
    """Codes are one LSB-first bit stream per row: bit b of code j is bit j x bits + b."""
    fmt = BLOCK_FORMATS["bfp3"]
    codes = np.zeros((1, 32), np.uint8)
    codes[0, :3] = [0b101, 0b011, 0b110]
    stream, _ = blockfp.pack(codes, np.zeros((1, 2), np.uint8), fmt)
    # bits: 101 | 110 | 011 from bit 0 -> byte 0 = 0b10_011_101, byte 1 = 0b0000000_1
    assert stream.shape == (1, 12) and list(stream[0, :2]) == [0b10011101, 0b00000001]
    fmt = BLOCK_FORMATS["mxfp4"]
    codes = np.zeros((1, 32), np.uint8)
    codes[0, :2] = [0x3, 0xC]
    assert blockfp.pack(codes, np.zeros((1, 1), np.uint8), fmt)[0][0, 0] == 0xC3


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
@pytest.mark.parametrize("m,k", SHAPES)
def test_cpp_decode_bit_exact(fmt, m, k):
    rng = np.random.default_rng(m * 1000 + k)
    parts = blockfp.quantize(random_weights(rng, m, k), fmt)
    assert [p.nbytes for p in parts] == layouts.part_sizes(fmt.name, m, k)
    codes, exps = blockfp.unpack(parts, fmt, m, k)
    assert (blockfp.pack(codes, exps, fmt)[0] == parts[0]).all()
    ref = layouts.dequantize(fmt.name, parts, m, k)
    cpp = _internal.dequantize(fmt.name, list(parts), m, k)
    assert ref.view(np.uint32).tolist() == cpp.view(np.uint32).tolist()


def test_nan_scale_refused():
    fmt = BLOCK_FORMATS["mxfp4"]
    codes, exps = blockfp.encode(np.ones((2, 32), np.float32), fmt)
    exps[1, 0] = 255
    parts = blockfp.pack(codes, exps, fmt)
    with pytest.raises(Exception, match="shared exponent 1 is 255, expected at most 254"):
        _internal.dequantize("mxfp4", list(parts), 2, 32)
    from mixrt.format import FormatError, MixrtWriter

    with pytest.raises(FormatError, match="mxfp4 shared exponents expected at most 254"):
        MixrtWriter._quantized_parts(type("T", (), {"name": "t", "dtype": 11, "sizes": [32, 2]})(), parts)


@pytest.mark.parametrize("recipe,bits,dtype", [("bfp", None, "bfp6"), ("bfp", 4, "bfp4"),
                                               ("mxint8", None, "mxint8"), ("mxfp4", None, "mxfp4")])
def test_convert_and_run(tiny_hf, tmp_path, recipe, bits, dtype):
    import mixrt
    from mixrt.convert import convert
    from mixrt.format import read_mixrt

    out = tmp_path / f"{dtype}.mixrt"
    convert(tiny_hf, out, recipe, bits=bits, progress=False)
    info = read_mixrt(out)
    fmt = BLOCK_FORMATS[dtype]
    linear = [t for t in info.tensors.values() if t.name.startswith("blk.") and len(t.dims) == 2]
    assert linear and all(t.dtype_name == dtype for t in linear)
    assert info.metadata["mixrt.recipe"] == recipe and info.header["version_minor"] == 2
    assert info.metadata["mixrt.recipe.block_format"] == dtype
    assert info.metadata["mixrt.recipe.group_size"] == fmt.block
    stored = sum(sum(layouts.part_sizes(dtype, *t.dims)) for t in linear)  # K padded to 32: > w + 8/B
    assert math.isclose(info.metadata["mixrt.recipe.linear_bits"], 8 * stored / sum(math.prod(t.dims) for t in linear))
    # the CPU runs it (its logits against the dequantized weights': test_convert.py)
    assert np.isfinite(mixrt.load(out, backend="cpu").eval_logits([1, 5, 9, 13])).all()
    # the CUDA backend does not implement the block formats: refused by name, auto falls back
    with pytest.raises(mixrt.MixrtError, match=f"has dtype {dtype}, which the CUDA backend does not implement"):
        mixrt.load(out, backend="cuda")
    model = mixrt.load(out, backend="auto")
    assert model.backend == "cpu" and f"dtype {dtype}" in model.backend_note


@pytest.mark.parametrize("args,message", [
    (["--recipe", "bfp", "--bits", "7"], "bits: the bfp recipe expected one of 8, 6, 5, 4, 3, found 7"),
    (["--recipe", "mxfp4", "--bits", "4"], "bits: expected only with the mix, bfp and bfp-search recipes"),
    (["--recipe", "bfp-search", "--bits", "3"], "bfp-search: bits: expected at least 3.5"),
    (["--recipe", "bfp-search", "--no-calib"], "calib: the bfp-search recipe measures each format's cost"),
])
def test_convert_refusals(tiny_hf, tmp_path, args, message):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "mixrt.convert.cli", str(tiny_hf), "-o",
                             str(tmp_path / "out.mixrt"), *args], capture_output=True, text=True)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.mixrt").exists()


@pytest.mark.parametrize("bits", [8, 6, 5, 4, 3])
@pytest.mark.parametrize("k", [576, 100, 7])
def test_activation_rounding_matches_numpy(bits, k):
    """The runtime's activations option (cpu/activation_rounding.h) rounds like the numpy
    encoder of bfp<bits>, bit for bit, the edge cases included."""
    rng = np.random.default_rng(bits * 100 + k)
    x = (rng.normal(0, 1, size=(9, k)) * np.exp2(rng.integers(-30, 30, size=(9, 1)))).astype(np.float32)
    x[:4] = random_weights(rng, 4, k)
    x[4, :min(k, 16)] = np.float32(1e-40)
    fmt = BLOCK_FORMATS[f"bfp{bits}"]
    want = blockfp.decode(*blockfp.encode(x, fmt), fmt, k)
    got = _internal.round_to_bfp(x, bits)
    assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist()


def test_activations_option(tiny_hf, tmp_path):
    """activations="bfp<w>" rounds every matmul input (the rounding itself is checked bit for bit
    above; its effect on real perplexity is measured by tools/quant_table.py): the logits move
    by less than 4% of their largest magnitude at bfp8 (the 8-bit rounding bound of test_convert.py)
    and far more at bfp3, are the same for any thread count, and the option is refused by name
    where it cannot run (auto falls back to the CPU)."""
    import mixrt
    from mixrt.convert import convert

    path = tmp_path / "f16.mixrt"
    convert(tiny_hf, path, "f16", progress=False)
    tokens = [1, 5, 9, 13, 2, 7]
    plain = mixrt.load(path, backend="cpu").eval_logits(tokens)
    a8 = mixrt.load(path, backend="cpu", activations="bfp8").eval_logits(tokens)
    a3 = mixrt.load(path, backend="cpu", activations="bfp3").eval_logits(tokens)
    moved8, moved3 = (np.abs(a - plain).max() / np.abs(plain).max() for a in (a8, a3))
    assert 0 < moved8 <= 0.04 and moved3 > 4 * moved8
    for threads in (1, 3):
        assert np.array_equal(mixrt.load(path, backend="cpu", threads=threads, activations="bfp8").eval_logits(tokens), a8)
    with pytest.raises(ValueError, match="activations: 'bfp6' runs on the CPU backend only"):
        mixrt.load(path, backend="cuda", activations="bfp6")
    with pytest.raises(ValueError, match="activations: expected None or one of bfp8"):
        mixrt.load(path, activations="bfp7")
    model = mixrt.load(path, backend="auto", activations="bfp6")
    assert model.backend == "cpu" and "activations bfp6" in model.backend_note


def test_plan_widths_spends_the_budget_by_kl_per_byte():
    """Greedy upgrades from the smallest formats: within the budget, the largest KL saving per
    added byte first; a budget below the smallest formats is refused."""
    from mixrt.quant.width_plan import plan_widths

    sizes = [{"a": 10, "b": 20, "c": 30}] * 3
    costs = [{"a": 9.0, "b": 1.0, "c": 0.0},  # a -> b saves 0.8 per byte
             {"a": 2.0, "b": 1.5, "c": 1.4},  # saves little
             {"a": 6.0, "b": 3.0, "c": 0.5}]  # a -> b 0.3 per byte, b -> c 0.25
    weights = 8 * 90  # so that `bits` = bytes / 90
    plan = plan_widths(costs, sizes, weights, 30 / 90)
    assert plan.choice == ["a", "a", "a"] and plan.bytes == 30
    plan = plan_widths(costs, sizes, weights, 50 / 90)
    assert plan.choice == ["b", "a", "b"] and plan.bytes == 50 and plan.predicted_kl == 1.0 + 2.0 + 3.0
    plan = plan_widths(costs, sizes, weights, 90 / 90)
    assert plan.choice == ["c", "c", "c"]
    with pytest.raises(ValueError, match="bits: expected at least"):
        plan_widths(costs, sizes, weights, 29 / 90)


def test_bfp_search_records_its_choices(tiny_hf, tmp_path):
    """--recipe bfp-search: each linear matrix in one of bfp6..bfp3, the average within --bits,
    the formats' counts and the predicted KL in the metadata; a larger budget predicts less KL."""
    from mixrt.convert import convert
    from mixrt.format import read_mixrt

    plans = {}
    for bits in (4.5, 5.5):
        out = tmp_path / f"s{bits}.mixrt"
        convert(tiny_hf, out, "bfp-search", bits=bits, calib_tokens=256, progress=False)
        info = read_mixrt(out)
        linear = [t for t in info.tensors.values() if t.name.startswith("blk.") and len(t.dims) == 2]
        kinds = {t.dtype_name for t in linear}
        assert kinds <= {"bfp6", "bfp5", "bfp4", "bfp3"}
        meta = info.metadata
        assert meta["mixrt.recipe"] == "bfp-search" and meta["mixrt.recipe.bits_target"] == bits
        assert meta["mixrt.recipe.linear_bits"] <= bits
        counts = dict(part.split(":") for part in meta["mixrt.recipe.format_counts"].split(","))
        assert sum(map(int, counts.values())) == len(linear)
        assert all(int(counts[k]) == sum(t.dtype_name == k for t in linear) for k in counts)
        assert meta["mixrt.recipe.calib_file"] == "self"
        plans[bits] = meta["mixrt.recipe.predicted_kl"]
    assert plans[5.5] < plans[4.5]
