# test_convert.py: the converter (mixrt.convert), the format writer and reader (mixrt.format) and
# the generators mixrt.devtools.gguf_to_hf / random_model, on SmolLM2 and on generated models;
# needs no C++.
# Run: python -m pytest tests/test_convert.py -q -s  (-s shows the measurements)
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
import sentencepiece
from safetensors.numpy import load_file, save_file

from conftest import SMOLLM2_HF_FILES

import mixrt.convert
from mixrt.convert import ConversionError, convert, open_source
from mixrt.devtools.decoded_copy import decoded_copy
from mixrt.devtools.gguf_to_hf import gguf_to_hf
from mixrt.devtools.hf_to_gguf import write_gguf
from mixrt.devtools.random_model import SHAPES, make_random_model, weight_plan
from mixrt.format import ALIGNMENT, FormatError, MixrtWriter, read_mixrt

LAYER_KINDS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
               "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")


def assert_same_model(path_a, path_b, ignored_keys=("mixrt.source",)):
    """Same metadata (but ignored_keys) and bit-identical tensors with the same dtypes and dims."""
    a, b = read_mixrt(path_a), read_mixrt(path_b)
    assert a.metadata.keys() == b.metadata.keys()
    for key, value in a.metadata.items():
        if key not in ignored_keys:
            assert np.array_equal(value, b.metadata[key]) if isinstance(value, np.ndarray) \
                else value == b.metadata[key], key
    assert list(a.tensors) == list(b.tensors)
    for name, tensor in a.tensors.items():
        other = b.tensors[name]
        assert (tensor.dtype, tensor.dims) == (other.dtype, other.dims), name
        assert np.array_equal(tensor.array(), other.array()), name


def temp_leftovers(directory: Path) -> list:
    return [p.name for p in directory.iterdir() if ".tmp" in p.name]


# ---- the format writer and reader --------------------------------------------------------------

def test_metadata_round_trip(tmp_path):
    entries = {"t.int": -5, "t.bool": True, "t.float": 0.25, "t.str": "héllo ▁",
               "t.strings": ["a", "", "▁b"], "t.f32": np.array([1.5, -2.0], np.float32),
               "t.i32": np.array([1, -2, 3], np.int32)}
    with MixrtWriter(tmp_path / "m.mixrt") as writer:
        writer.add_metadata(entries)
    metadata = read_mixrt(tmp_path / "m.mixrt").metadata
    assert metadata["t.bool"] == 1 and metadata["t.int"] == -5 and metadata["t.float"] == 0.25
    assert metadata["t.str"] == "héllo ▁" and metadata["t.strings"] == ["a", "", "▁b"]
    assert metadata["t.f32"].dtype == np.float32 and metadata["t.f32"].tolist() == [1.5, -2.0]
    assert metadata["t.i32"].dtype == np.int32 and metadata["t.i32"].tolist() == [1, -2, 3]


@pytest.mark.parametrize("value", [{"a": 1}, [1, 2], np.zeros(3), np.zeros((2, 2), np.float32),
                                   None, np.int64(3)])
def test_metadata_without_format_type_is_refused(tmp_path, value):
    with pytest.raises(TypeError, match="t.key"), MixrtWriter(tmp_path / "m.mixrt") as writer:
        writer.add_metadata({"t.key": value})
    assert list(tmp_path.iterdir()) == []


def test_layout_is_aligned_and_exact(tmp_path):
    arrays = {"a": np.arange(3, dtype=np.float32), "b": np.ones((5, 7), np.float32),
              "c": np.full((2, 3, 4), 0.5, np.float32)}
    with MixrtWriter(tmp_path / "m.mixrt") as writer:
        writer.add_metadata({"general.name": "x"})
        for name, dtype in (("a", "f32"), ("b", "f16"), ("c", "f32")):
            writer.declare_tensor(name, dtype, arrays[name].shape)
        for name, array in arrays.items():
            writer.write_tensor(name, array)
    file = read_mixrt(tmp_path / "m.mixrt")
    header, raw = file.header, (tmp_path / "m.mixrt").read_bytes()
    assert header["file_size"] == len(raw) == header["data_offset"] + header["data_size"]
    assert header["data_offset"] % ALIGNMENT == 0
    data, end = raw[header["data_offset"]:], 0
    for name, tensor in file.tensors.items():
        (offset, size), = tensor.parts
        assert offset % ALIGNMENT == 0 and offset >= end
        assert data[end:offset] == bytes(offset - end)  # zero padding
        assert size == arrays[name].size * (2 if tensor.dtype == 1 else 4)
        assert np.array_equal(tensor.array(), arrays[name])
        end = offset + size
    assert end == header["data_size"]


@pytest.mark.parametrize("array, message", [
    (np.ones((3, 2), np.float32), r"tensor w: dims expected \[2, 3\], found \[3, 2\]"),
    (np.array([[1, 2, np.nan]] * 2, np.float32), "tensor w: values expected finite"),
    (np.array([[1, 2, 1e6]] * 2, np.float32), "tensor w: values expected within the f16 range"),
])
def test_writer_refuses_bad_data_and_leaves_no_file(tmp_path, array, message):
    with pytest.raises(FormatError, match=message), MixrtWriter(tmp_path / "m.mixrt") as writer:
        writer.declare_tensor("w", "f16", (2, 3))
        writer.write_tensor("w", array)
    assert list(tmp_path.iterdir()) == []


def test_writer_requires_declared_order_and_every_tensor(tmp_path):
    with pytest.raises(FormatError, match="out of order, expected a next"), \
            MixrtWriter(tmp_path / "m.mixrt") as writer:
        writer.declare_tensor("a", "f32", (1,))
        writer.declare_tensor("b", "f32", (1,))
        writer.write_tensor("b", np.zeros(1, np.float32))
    with pytest.raises(FormatError, match="declared but never written: b"), \
            MixrtWriter(tmp_path / "m.mixrt") as writer:
        writer.declare_tensor("a", "f32", (1,))
        writer.declare_tensor("b", "f32", (1,))
        writer.write_tensor("a", np.zeros(1, np.float32))
    assert list(tmp_path.iterdir()) == []


# ---- SmolLM2: the GGUF path against the Hugging Face path --------------------------------------

@pytest.fixture(scope="session")
def smollm2_hf(smollm2_gguf, tmp_path_factory) -> Path:
    """SmolLM2 as a Hugging Face checkpoint, made from the GGUF by the independent tool."""
    return gguf_to_hf(smollm2_gguf, SMOLLM2_HF_FILES, tmp_path_factory.mktemp("smollm2-hf"))


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_gguf_and_hf_paths_agree(request, smollm2_hf, tmp_path, dtype):
    from_gguf = request.getfixturevalue(f"smollm2_{dtype}")
    summary = convert(smollm2_hf, tmp_path / "hf.mixrt", dtype=dtype, progress=False)
    print(f"\nSmolLM2 from the HF directory, {dtype}: {summary}")
    assert_same_model(from_gguf, tmp_path / "hf.mixrt")
    assert read_mixrt(tmp_path / "hf.mixrt").metadata["mixrt.source"] == f"hf:{smollm2_hf.name}"


@pytest.mark.real_model
def test_f16_is_f32_rounded(smollm2_f16, smollm2_f32):
    f16, f32 = read_mixrt(smollm2_f16), read_mixrt(smollm2_f32)
    assert f16.metadata["mixrt.recipe"] == "f16" and f32.metadata["mixrt.recipe"] == "f32"
    for name, tensor in f16.tensors.items():
        exact = f32.tensors[name].array()
        if len(tensor.dims) == 1:  # norms stay f32
            assert tensor.dtype == 0 and np.array_equal(tensor.array(), exact), name
        else:
            assert tensor.dtype == 1, name
            assert np.array_equal(tensor.array(), exact.astype(np.float16)), name


@pytest.mark.real_model
def test_smollm2_hyperparameters_and_tied_head(smollm2_f16, smollm2_gguf):
    file = read_mixrt(smollm2_f16)
    meta = file.metadata
    assert {key: meta[f"llama.{key}"] for key in (
        "vocab_size", "hidden_size", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_size",
        "context_length", "tie_word_embeddings")} == dict(
        vocab_size=49152, hidden_size=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64,
        ffn_size=1536, context_length=8192, tie_word_embeddings=1)
    assert meta["llama.rope_theta"] == 100000.0 and abs(meta["llama.rms_norm_eps"] - 1e-5) < 1e-9
    assert meta["general.architecture"] == "llama"
    assert meta["mixrt.source"] == f"gguf:{smollm2_gguf.name}"
    assert meta["mixrt.converter_version"] == mixrt.__version__
    assert "output.weight" not in file.tensors and len(file.tensors) == 2 + 30 * len(LAYER_KINDS)
    assert file.tensors["token_embd.weight"].dims == (49152, 576)


def measure_subprocess(script: str, *args) -> dict:
    """Runs a Python snippet in a fresh interpreter; it prints one JSON line of measurements."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


# Peak RSS from VmHWM: getrusage's ru_maxrss would include the forking pytest process's peak.
MEASURE = """
    import json, re, sys, time
    from pathlib import Path
    from mixrt.convert import convert, open_source
    src, out, recipe, what = sys.argv[1:]
    start = time.perf_counter()
    if what == "open":
        open_source(Path(src))
    else:
        convert(src, out, recipe=recipe, calib=None, progress=False)
    status = Path("/proc/self/status").read_text()
    print(json.dumps({"seconds": time.perf_counter() - start,
                      "peak_rss": int(re.search(r"VmHWM:\\s*(\\d+) kB", status)[1]) * 1024}))
"""


def linear_weight_error(converted, reference) -> float:
    """Relative Frobenius error of the decoder linear weights of two read_mixrt files."""
    squared_error = squared_norm = 0.0
    for name, tensor in reference.tensors.items():
        if name.startswith("blk.") and len(tensor.dims) == 2:
            exact = tensor.dequantize().astype(np.float64)
            squared_error += np.sum((converted.tensors[name].dequantize() - exact) ** 2)
            squared_norm += np.sum(exact ** 2)
    return math.sqrt(squared_error / squared_norm)


def check_quantized_file(file, recipe: str) -> float:
    """The storage a recipe implies (norms f32, embeddings f16 by default, decoder linear layers
    in the recipe's dtype) and the mixrt.recipe.linear_bits key equal to the bytes in the tensor
    table. Returns those bits."""
    linear_bytes = linear_weights = 0
    for name, tensor in file.tensors.items():
        if len(tensor.dims) == 1:
            assert tensor.dtype_name == "f32", name
        elif name in ("token_embd.weight", "output.weight"):
            assert tensor.dtype_name == file.metadata["mixrt.recipe.embed_dtype"], name
        else:
            assert tensor.dtype_name == recipe, name
            linear_bytes += sum(size for _, size in tensor.parts)
            linear_weights += math.prod(tensor.dims)
    bits = 8 * linear_bytes / linear_weights
    assert file.metadata["mixrt.recipe"] == recipe and file.header["version_minor"] == 1
    assert file.metadata["mixrt.recipe.linear_bits"] == pytest.approx(bits, rel=1e-12)
    return bits


# Relative Frobenius error bounds of the decoder linear weights of each recipe (SmolLM2 comes as
# Q4_1, which q4 stores exactly: its groups of 32 are the same).
RECIPE_ERRORS = {"q8": 0.01, "q4": 0.1, "mix": 0.35}


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["f16", "f32", "q8", "q4", "mix"])
def test_conversion_time_and_peak_memory(smollm2_gguf, smollm2_f32, tmp_path, recipe):
    """Peak RSS of a whole conversion minus that of only opening the source (interpreter, gguf
    reader, tokenizer metadata) stays within 3x the largest tensor as float32 (dequantized
    float32, stored copy, temporaries): the converter streams tensor by tensor instead of holding
    the model (135M parameters, 513 MiB as float32). Quantized recipes also report their bits per
    weight and weight error (mix at the default 2.9 bits, round to nearest)."""
    opened = measure_subprocess(MEASURE, smollm2_gguf, "-", recipe, "open")
    converted = measure_subprocess(MEASURE, smollm2_gguf, tmp_path / "m.mixrt", recipe, "convert")
    largest = 49152 * 576 * 4
    streaming = converted["peak_rss"] - opened["peak_rss"]
    file = read_mixrt(tmp_path / "m.mixrt")
    size = file.header["file_size"]
    parameters = sum(math.prod(tensor.dims) for tensor in file.tensors.values())
    print(f"\nSmolLM2 GGUF -> {recipe}: {converted['seconds']:.1f} s, peak RSS "
          f"{converted['peak_rss'] / 2**20:.0f} MiB ({opened['peak_rss'] / 2**20:.0f} MiB after "
          f"opening the source, so {streaming / 2**20:.0f} MiB for the tensors; largest tensor "
          f"{largest / 2**20:.0f} MiB as float32), {size / 2**20:.1f} MiB, "
          f"{8 * size / parameters:.3f} bits per parameter")
    assert streaming <= 3 * largest
    assert converted["seconds"] < (120 if recipe == "mix" else 60)
    if recipe in RECIPE_ERRORS:
        bits = check_quantized_file(file, recipe)
        error = linear_weight_error(file, read_mixrt(smollm2_f32))
        print(f"decoder linear layers: {bits:.4f} bits per weight, relative Frobenius error "
              f"{error:.4f}")
        assert error < RECIPE_ERRORS[recipe] and bits <= {"q8": 8.5, "q4": 5, "mix": 2.9}[recipe]


# ---- generated models and the Hugging Face path ------------------------------------------------

@pytest.fixture
def tiny_copy(tiny_hf, tmp_path) -> Path:
    """A private copy of the tiny model to break in one way."""
    return Path(shutil.copytree(tiny_hf, tmp_path / "tiny"))


@pytest.fixture(scope="session")
def tiny_f32(tiny_hf, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-f32") / "tiny.mixrt"
    convert(tiny_hf, out, dtype="f32", progress=False)
    return out


def test_random_model_converts(random_model, spm_tokenizer):
    file = read_mixrt(random_model)
    meta = file.metadata
    vocab = sentencepiece.SentencePieceProcessor(model_file=str(spm_tokenizer / "tokenizer.model")).vocab_size()
    assert meta["mixrt.source"] == "hf:hf" and meta["mixrt.recipe"] == "f16"
    assert (meta["llama.vocab_size"], meta["llama.hidden_size"], meta["llama.n_layers"],
            meta["llama.n_heads"], meta["llama.n_kv_heads"], meta["llama.ffn_size"],
            meta["llama.context_length"], meta["llama.tie_word_embeddings"]) == \
        (vocab, 64, 2, 4, 2, 172, 256, 0)
    assert len(meta["tokenizer.tokens"]) == vocab and meta["tokenizer.model"] == "sentencepiece_bpe"
    assert file.tensors["output.weight"].dims == (vocab, 64)
    assert len(file.tensors) == 3 + 2 * len(LAYER_KINDS)


def test_random_model_gives_non_degenerate_logits(tiny_f32):
    """One-token forward pass (attention over one position is just v) through the converted file:
    the logits spread over a few nats and depend on the token."""
    file = read_mixrt(tiny_f32)
    w = {name: t.array().astype(np.float64) for name, t in file.tensors.items()}
    meta = file.metadata
    group = meta["llama.n_heads"] // meta["llama.n_kv_heads"]  # query heads per kv head

    def norm(x, weight):
        return x / np.sqrt(np.mean(x * x) + meta["llama.rms_norm_eps"]) * weight

    logits = []
    for token in (1, 450, 783):
        x = w["token_embd.weight"][token]
        for i in range(meta["llama.n_layers"]):
            layer = {kind: w[f"blk.{i}.{kind}.weight"] for kind in LAYER_KINDS}
            v = layer["attn_v"] @ norm(x, layer["attn_norm"])
            heads = np.repeat(v.reshape(meta["llama.n_kv_heads"], -1), group, axis=0)
            x = x + layer["attn_output"] @ heads.reshape(-1)
            h = norm(x, layer["ffn_norm"])
            gate, up = layer["ffn_gate"] @ h, layer["ffn_up"] @ h
            x = x + layer["ffn_down"] @ (gate / (1 + np.exp(-gate)) * up)
        logits.append(w["output.weight"] @ norm(x, w["output_norm.weight"]))
    for row in logits:
        p = np.exp(row - row.max())
        p /= p.sum()
        entropy = -(p * np.log(p)).sum()
        print(f"\nrandom tiny model: logit std {row.std():.2f}, entropy {entropy:.2f} nats "
              f"(uniform {math.log(len(row)):.2f}), top p {p.max():.3f}")
        assert 1 < row.std() < 10 and entropy < math.log(len(row)) - 2
    assert len({int(row.argmax()) for row in logits}) == len(logits)


def test_sharded_checkpoint_converts_like_a_single_file(tiny_hf, spm_tokenizer, tmp_path):
    sharded = make_random_model(tmp_path / "sharded", shape="tiny", tokenizer=spm_tokenizer,
                                seed=0, max_shard_bytes=1 << 17)
    shards = sorted(p.name for p in sharded.glob("*.safetensors"))
    assert len(shards) > 2 and (sharded / "model.safetensors.index.json").exists()
    (sharded / "stray.safetensors").write_bytes(b"not listed by the index, so never read")
    convert(tiny_hf, tmp_path / "single.mixrt", progress=False)
    convert(sharded, tmp_path / "sharded.mixrt", progress=False)
    assert_same_model(tmp_path / "single.mixrt", tmp_path / "sharded.mixrt",
                      ignored_keys=("mixrt.source", "general.name"))


@pytest.mark.parametrize("shape, parameters", [("tinyllama-1.1b", 1_100_048_384),
                                               ("llama2-7b", 6_738_415_616)])
def test_big_shapes_have_the_real_parameter_counts(shape, parameters):
    assert sum(math.prod(dims) for _, dims, _ in weight_plan(SHAPES[shape], 32000)) == parameters


def write_bf16_safetensors(path: Path, weights: dict) -> None:
    """safetensors has no numpy bf16 writer: header + raw upper halves of the float32 bits."""
    header, offset, blobs = {}, 0, []
    for name, weight in weights.items():
        bits = np.ascontiguousarray(weight, np.float32).view(np.uint32) >> 16
        blob = bits.astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(weight.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def test_bf16_checkpoint(tiny_copy, tiny_f32, tmp_path):
    weights = load_file(tiny_copy / "model.safetensors")
    write_bf16_safetensors(tiny_copy / "model.safetensors", weights)
    convert(tiny_copy, tmp_path / "bf16.mixrt", dtype="f32", progress=False)
    converted, reference = read_mixrt(tmp_path / "bf16.mixrt"), read_mixrt(tiny_f32)
    for name, tensor in converted.tensors.items():
        truncated = (reference.tensors[name].array().view(np.uint32) & 0xFFFF0000).view(np.float32)
        assert np.array_equal(tensor.array(), truncated), name


def test_tied_checkpoint_with_saved_head_stores_it_once(tiny_copy, tmp_path):
    edit_config(tiny_copy, tie_word_embeddings=True)
    convert(tiny_copy, tmp_path / "tied.mixrt", progress=False)
    file = read_mixrt(tmp_path / "tied.mixrt")
    assert file.metadata["llama.tie_word_embeddings"] == 1 and "output.weight" not in file.tensors


# ---- quantized recipes on the tiny model ------------------------------------------------------

TINY_MIX_BITS = 4.0  # its matrices are so small (32 x 64) that the permutation alone costs 1 bit


@pytest.mark.parametrize("recipe", ["q8", "q4", "mix"])
def test_tiny_model_recipes(tiny_hf, tiny_f32, tmp_path, recipe):
    """Each recipe stores what it says (ffn_down has K = 172: padded groups, 32-column strips),
    within its budget, and the weights read back close to the originals."""
    bits = TINY_MIX_BITS if recipe == "mix" else None
    summary = convert(tiny_hf, tmp_path / "q.mixrt", recipe=recipe, bits=bits, calib=None, progress=False)
    file, reference = read_mixrt(tmp_path / "q.mixrt"), read_mixrt(tiny_f32)
    linear_bits = check_quantized_file(file, recipe)
    error = linear_weight_error(file, reference)
    print(f"\ntiny model, {recipe}: {linear_bits:.3f} bits per decoder linear weight, "
          f"{summary['file_bits']:.3f} per parameter, relative Frobenius error {error:.4f}")
    assert summary["linear_bits"] == file.metadata["mixrt.recipe.linear_bits"]
    assert summary["file_bits"] == 8 * summary["bytes"] / summary["parameters"]
    assert error < RECIPE_ERRORS[recipe]
    for name in ("token_embd.weight", "output.weight"):  # by default q8 for quantized recipes
        stored, original = file.tensors[name], reference.tensors[name].array()
        assert stored.dtype_name == "q8"
        # Relative error of round-to-nearest: about 1/255 of the range per value at 8 bits.
        tolerance = 0.01
        assert np.linalg.norm(stored.dequantize() - original) <= tolerance * np.linalg.norm(original)
    if recipe == "mix":
        meta = file.metadata
        assert linear_bits <= TINY_MIX_BITS and meta["mixrt.recipe.bits_target"] == TINY_MIX_BITS
        assert (meta["mixrt.recipe.outlier_frac"], meta["mixrt.recipe.clip_search"],
                meta["mixrt.recipe.strip_selection"], meta["mixrt.recipe.group_size"],
                meta["mixrt.recipe.super_group_size"]) == (0.003, 1, "range", 32, 16)
        assert 2 * file.tensors["blk.0.ffn_down.weight"].parts[4][1] // 64 % 32 == 0


def test_cli_mix_options(tiny_hf, tmp_path):
    subprocess.run([sys.executable, "-m", "mixrt.convert.cli", str(tiny_hf), "-o",
                    str(tmp_path / "m.mixrt"), "--recipe", "mix", "--bits", "4.5",
                    "--embed-dtype", "q8", "--outlier-frac", "0.01", "--no-clip-search",
                    "--no-calib", "--quiet"], check=True)
    file = read_mixrt(tmp_path / "m.mixrt")
    meta = file.metadata
    assert [meta[f"mixrt.recipe{key}"] for key in ("", ".bits_target", ".embed_dtype",
                                                   ".outlier_frac", ".clip_search")] == \
        ["mix", 4.5, "q8", 0.01, 0]
    assert file.tensors["token_embd.weight"].dtype_name == "q8"
    assert file.tensors["blk.1.ffn_up.weight"].parts[8][1] // 2 == round(0.01 * 172 * 64)


@pytest.mark.parametrize("options, message", [
    (dict(recipe="q4", bits=3.0), "bits: expected only with the mix, bfp and bfp-search recipes, found 3.0 for q4"),
    (dict(recipe="mix", bits=2.0), "mix: bits: expected at least .*, found 2.0"),
    (dict(recipe="q3"), "recipe: expected one of f16, f32, q8, q4, mix, bfp, bfp-search, mxint8, mxfp4, quik, found 'q3'"),
    (dict(recipe="f16", embed_dtype="mix"), "embed_dtype: expected one of f16, f32, q8, q4"),
    (dict(recipe="mix", outlier_frac=1.5), r"outlier_frac: expected a number in \[0, 1\), "
                                           "found 1.5"),
    (dict(recipe="mix", outlier_frac=-1), r"outlier_frac: expected .*, found -1$"),
    (dict(recipe="mix", bits=math.nan), r"bits: expected a number in \(0, 16\], found nan"),
    (dict(recipe="mix", bits=0), r"bits: expected .*, found 0$"),
    (dict(recipe="mix", bits=100.0), r"bits: expected .*, found 100.0"),
    (dict(recipe="mix", bits=math.inf), r"bits: expected .*, found inf"),
    (dict(recipe="mix", bits="3"), r"bits: expected .*, found '3'"),
    (dict(calib_tokens=0), "calib_tokens: expected an integer >= 1, found 0"),
    (dict(calib_tokens=2.5), "calib_tokens: expected an integer >= 1, found 2.5"),
    (dict(recipe="q8", dtype="f32"), "dtype: an alias of recipe"),
    (dict(recipe="q8", calib="calib.txt"), "calib: expected only with the mix, bfp-search, quik recipes"),
    (dict(recipe="mix", calib="calib.txt"), "calib calib.txt: expected a text file or 'self', found nothing"),
])
def test_recipe_refusals(tiny_hf, tmp_path, options, message):
    with pytest.raises(ConversionError, match=message) as error:
        convert(tiny_hf, tmp_path / "out.mixrt", progress=False, **options)
    print(f"\n{options}: {error.value}")
    assert list(tmp_path.iterdir()) == []


# Every recipe with a quantized dtype (bfp at its default width, 6 bits; quik without calibration,
# so without fp16 columns: tests/test_quik.py runs the calibrated recipe).
QUANTIZED_RECIPES = ["q8", "q4", "mix", "bfp", "mxint8", "mxfp4", "quik"]


def uncalibrated(recipe: str) -> dict:
    """convert() arguments of a recipe without calibration."""
    return dict(bits=TINY_MIX_BITS if recipe == "mix" else None, calib=None,
                **({"outlier_cols": 0} if recipe == "quik" else {}))


@pytest.mark.parametrize("recipe", QUANTIZED_RECIPES)
def test_runtime_runs_quantized_files_like_their_dequantized_copy(tiny_hf, tmp_path, recipe):
    """The runtime's logits on a quantized file equal those on an f32 file of the dequantized
    weights, up to the rounding of each quantized matmul's input to 8 bits (cpu/quantized_input.h:
    step max|x| / 127 per block of 32, an rms error of step / sqrt(12), about 0.6% of the rms of a
    Gaussian-like input, and so of each matmul's output). Compounded over the 15 matmuls of the
    tiny model's path, the logits move by about 1.1% of their largest magnitude (measured for q8,
    q4 and mix alike, and the block formats); the bound, 4%, still catches a wrongly decoded
    weight (tens of percent)."""
    import mixrt

    convert(tiny_hf, tmp_path / "q.mixrt", recipe=recipe, **uncalibrated(recipe), progress=False)
    tokens = [1, 450, 783, 338, 263]
    quantized = mixrt.load(tmp_path / "q.mixrt").eval_logits(tokens)
    dense = mixrt.load(decoded_copy(tmp_path / "q.mixrt",
                                        tmp_path / "d.mixrt")).eval_logits(tokens)
    deviation = np.abs(quantized - dense).max() / np.abs(dense).max()
    print(f"{recipe}: max |logit difference| / max |logit| = {deviation:.4f}")
    assert deviation <= 0.04


@pytest.mark.parametrize("recipe", QUANTIZED_RECIPES)
def test_quantized_results_do_not_depend_on_the_thread_count(tiny_hf, tmp_path, recipe):
    """Threads split output rows, never a reduction: prefill and decode logits are bit-identical."""
    import mixrt

    convert(tiny_hf, tmp_path / "q.mixrt", recipe=recipe, **uncalibrated(recipe), progress=False)
    tokens = [1, 450, 783, 338, 263]
    runs = [mixrt.load(tmp_path / "q.mixrt", threads=t) for t in (1, 2, 3)]
    prefill = [m.eval_logits(tokens) for m in runs]
    decode = [m.generate("The", max_tokens=6, temperature=0) for m in runs]
    for p, d in zip(prefill[1:], decode[1:]):
        np.testing.assert_array_equal(p, prefill[0])
        assert d == decode[0]


# ---- refusals ----------------------------------------------------------------------------------

def edit_config(hf_dir: Path, remove=(), **changes) -> None:
    config = json.loads((hf_dir / "config.json").read_text())
    config.update(changes)
    for key in remove:
        del config[key]
    (hf_dir / "config.json").write_text(json.dumps(config))


def edit_weights(hf_dir: Path, **changes) -> None:
    """Sets (an array) or removes (None) tensors of the model.safetensors file."""
    weights = load_file(hf_dir / "model.safetensors")
    for name, value in changes.items():
        if value is None:
            del weights[name]
        else:
            weights[name] = value
    save_file(weights, hf_dir / "model.safetensors")


def shrink_vocab(hf_dir: Path) -> None:
    """One embedding row fewer than the tokenizer has tokens."""
    vocab = json.loads((hf_dir / "config.json").read_text())["vocab_size"] - 1
    edit_config(hf_dir, vocab_size=vocab)
    edit_weights(hf_dir, **{name: np.zeros((vocab, 64), np.float32)
                            for name in ("model.embed_tokens.weight", "lm_head.weight")})


HF_REFUSALS = {
    "unknown architecture": (lambda d: edit_config(d, model_type="gemma"),
                             "config.json: model_type expected one of llama, mistral, qwen2, found 'gemma'"),
    "architecture mismatch": (lambda d: edit_config(d, model_type="mistral"),
                              r"config.json: architectures expected \['MistralForCausalLM'\], "
                              r"found \['LlamaForCausalLM'\]"),
    "missing tensor": (lambda d: edit_weights(d, **{"model.layers.1.mlp.up_proj.weight": None}),
                       r"tensor model.layers.1.mlp.up_proj.weight: expected in the checkpoint "
                       r"\(mixrt blk.1.ffn_up.weight, dims \[172, 64\]\), found missing"),
    "shape mismatch": (lambda d: edit_config(d, intermediate_size=176),
                       r"tensor model.layers.0.mlp.gate_proj.weight: dims expected \[176, 64\], "
                       r"found \[172, 64\]"),
    "rope type": (lambda d: edit_config(d, rope_parameters={"rope_type": "longrope"}),
                  "config.json: rope_scaling.rope_type expected one of default, linear, dynamic, yarn, "
                  "llama3, found 'longrope'"),
    "rope key": (lambda d: edit_config(d, rope_scaling={"rope_type": "yarn", "factor": 4.0, "mscale": 0.7}),
                 r"config.json: rope_scaling \(yarn\) expected only the keys attention_factor, beta_fast, "
                 r"beta_slow, factor, original_max_position_embeddings, found 'mscale'"),
    "rope factor": (lambda d: edit_config(d, rope_scaling={"rope_type": "linear", "factor": "2"}),
                    "config.json: rope_scaling.factor expected a float, found '2'"),
    "rope llama3 factors": (lambda d: edit_config(d, rope_scaling={
                                "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                                "high_freq_factor": 1.0, "original_max_position_embeddings": 64}),
                            r"rope scaling \(llama3\) high_freq_factor: expected more than low_freq_factor "
                            r"4.0, found 1.0"),
    "attention bias missing": (lambda d: edit_config(d, attention_bias=True),
                               r"tensor model.layers.0.self_attn.q_proj.bias: expected in the checkpoint "
                               r"\(mixrt blk.0.attn_q.bias, dims \[64\]\), found missing"),
    "bias tensor": (lambda d: edit_weights(d, **{"model.layers.0.self_attn.q_proj.bias":
                                                 np.zeros(64, np.float32)}),
                    "tensor model.layers.0.self_attn.q_proj.bias: expected only the tensors of a llama "
                    "model, found 1 unknown"),
    "qwen2 sliding window": (lambda d: edit_config(d, model_type="qwen2", architectures=["Qwen2ForCausalLM"],
                                                   use_sliding_window=True),
                             "config.json: use_sliding_window expected false"),
    "head dim": (lambda d: edit_config(d, remove=["head_dim"], num_attention_heads=3,
                                       num_key_value_heads=3),
                 "config.json: hidden_size expected a multiple of num_attention_heads 3 "
                 r"\(head_dim is absent\), found 64"),
    "kv heads": (lambda d: edit_config(d, num_key_value_heads=3),
                 "llama.n_kv_heads: expected a divisor of n_heads 4, found 3"),
    "zero heads": (lambda d: edit_config(d, num_attention_heads=0),
                   "config.json: num_attention_heads expected a positive integer, found 0"),
    "absurd layer count": (lambda d: edit_config(d, num_hidden_layers=10**9),
                           r"llama.n_layers: expected an integer in 1..1024, found 1000000000"),
    "unsupported dtype": (lambda d: edit_weights(d, **{"model.norm.weight": np.ones(64, np.int8)}),
                          "tensor model.norm.weight: safetensors dtype expected one of F32, F16, "
                          "BF16, found I8"),
    "unexpected tensor": (lambda d: edit_weights(d, **{"model.layers.0.mlp.experts.weight":
                                                       np.ones(4, np.float32)}),
                          "tensor model.layers.0.mlp.experts.weight: expected only the tensors "
                          "of a llama model"),
    "missing tokenizer": (lambda d: (d / "tokenizer.model").unlink(),
                          r"expected a tokenizer \(tokenizer.json or tokenizer.model\), "
                          "found none"),
    "vocab mismatch": (shrink_vocab, r"tokenizer: .*(\d+) tokens.* vocab_size is (?!\1)\d+"),
    "config not JSON": (lambda d: (d / "config.json").write_text('{"model_type": "llama",'),
                        "/config.json: expected a JSON object, found invalid JSON "
                        r"\(Expecting property name enclosed in double quotes: line 1"),
    "config not an object": (lambda d: (d / "config.json").write_text('["llama"]'),
                             "/config.json: expected a JSON object, found an array$"),
    "config not UTF-8": (lambda d: (d / "config.json").write_bytes(b'{"model_type": "\xff"}'),
                         "/config.json: expected a JSON object, found invalid JSON "
                         r"\('utf-8' codec can't decode byte 0xff"),
    "index not JSON": (lambda d: (d / "model.safetensors.index.json").write_text("weight_map"),
                       "/model.safetensors.index.json: expected a JSON object, found invalid "
                       "JSON"),
    "index without weight map": (lambda d: (d / "model.safetensors.index.json").write_text("{}"),
                                 "/model.safetensors.index.json: weight_map expected an object "
                                 "of tensor names to shard file names, found None$"),
    "tokenizer config not an object": (lambda d: (d / "tokenizer_config.json").write_text("7"),
                                       "^tokenizer: .*/tokenizer_config.json: expected a JSON "
                                       "object, found a number$"),
    "truncated safetensors": (lambda d: os.truncate(d / "model.safetensors", (d / "model.safetensors").stat().st_size // 2),
                              "^truncated/corrupt safetensors: .*/model.safetensors: Error while "
                              "deserializing header: incomplete metadata, file not fully covered$"),
    "safetensors header not JSON": (lambda d: (d / "model.safetensors").write_bytes(
                                        struct.pack("<Q", 9) + b"not json!"),
                                    "^truncated/corrupt safetensors: .*/model.safetensors: Error "
                                    "while deserializing header: invalid JSON in header"),
}


@pytest.mark.parametrize("case", HF_REFUSALS)
def test_hf_refusals(tiny_copy, tmp_path, case):
    break_it, message = HF_REFUSALS[case]
    break_it(tiny_copy)
    with pytest.raises(ConversionError, match=message) as error:
        convert(tiny_copy, tmp_path / "out.mixrt", progress=False)
    print(f"\n{case}: {error.value}")
    assert not (tmp_path / "out.mixrt").exists() and temp_leftovers(tmp_path) == []


def write_tiny_gguf(path: Path, hf_dir: Path, tensor_type=lambda name, weight: "F32",
                    arch: str = "llama", extra=lambda writer: None) -> Path:
    """A llama GGUF of the tiny HF model as llama.cpp would write it (mixrt.devtools.hf_to_gguf),
    with the sentencepiece vocabulary; tensor_type(name, weight) picks each tensor's GGML type."""
    return write_gguf(path, hf_dir, tensor_type, arch, extra)


def test_gguf_rope_permutation_is_undone(tiny_hf, tiny_f32, tmp_path):
    """A float32 GGUF with llama.cpp's q/k permutation converts to exactly the HF model."""
    convert(write_tiny_gguf(tmp_path / "tiny.gguf", tiny_hf), tmp_path / "g.mixrt", dtype="f32",
            progress=False)
    converted, reference = read_mixrt(tmp_path / "g.mixrt"), read_mixrt(tiny_f32)
    for key, value in reference.metadata.items():
        if key.startswith("llama."):  # GGUF holds rms_norm_eps as f32
            assert converted.metadata[key] == pytest.approx(value, rel=1e-7), key
    assert list(converted.tensors) == list(reference.tensors)
    for name, tensor in reference.tensors.items():
        assert np.array_equal(converted.tensors[name].array(), tensor.array()), name


@pytest.mark.parametrize("qtype, tolerance", [("F16", 1e-3), ("BF16", 1e-2), ("Q8_0", 0.01),
                                              ("Q5_0", 0.05), ("Q5_1", 0.05), ("Q4_0", 0.12),
                                              ("Q4_1", 0.12), ("MXFP4", 0.2)])
def test_gguf_quantized_types(tiny_hf, tiny_f32, tmp_path, qtype, tolerance):
    """Each supported GGML type converts to the original weights within its rounding error
    (relative RMS); a wrong row order or block layout would give errors near 1."""
    def tensor_type(name, weight):
        return qtype if weight.ndim == 2 and weight.shape[1] % 32 == 0 else "F32"

    gguf_file = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_hf, tensor_type)
    convert(gguf_file, tmp_path / "q.mixrt", dtype="f32", progress=False)
    converted, reference = read_mixrt(tmp_path / "q.mixrt"), read_mixrt(tiny_f32)
    worst = 0.0
    for name, tensor in reference.tensors.items():
        exact = tensor.array()
        error = np.sqrt(np.mean((converted.tensors[name].array() - exact) ** 2)
                        / np.mean(exact ** 2))
        worst = max(worst, error)
    print(f"\n{qtype}: worst relative RMS error {worst:.4f}")
    assert 0 < worst < tolerance


def test_gguf_mxfp4_converts_losslessly_to_mxfp4(tiny_hf, tmp_path):
    """An MXFP4 GGUF (llama.cpp's gpt-oss type) converts to --recipe mxfp4 without loss: every
    block re-encodes to the same values (FORMAT.md 5.6 uses the same E8M0 scale and E2M1
    elements). Matrices whose width is no multiple of 32 stay F32 in the GGUF and are left out."""
    def tensor_type(name, weight):
        return "MXFP4" if name.startswith("blk.") and weight.ndim == 2 and weight.shape[1] % 32 == 0 else "F32"

    gguf_file = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_hf, tensor_type)
    convert(gguf_file, tmp_path / "f32.mixrt", dtype="f32", progress=False)
    convert(gguf_file, tmp_path / "mx.mixrt", recipe="mxfp4", progress=False)
    dense, mx = read_mixrt(tmp_path / "f32.mixrt"), read_mixrt(tmp_path / "mx.mixrt")
    stored = [name for name, t in mx.tensors.items() if t.dtype_name == "mxfp4" and t.dims[1] % 32 == 0]
    assert stored
    for name in stored:
        assert np.array_equal(mx.tensors[name].dequantize(), dense.tensors[name].array()), name


GGUF_REFUSALS = {
    "unknown architecture": (dict(arch="gemma"),
                             "GGUF key general.architecture: expected one of llama, qwen2, found 'gemma'"),
    "unsupported type": (dict(tensor_type=lambda name, w: "I8" if name == "blk.1.attn_v.weight"
                              else "F32"),
                         "tensor blk.1.attn_v.weight: GGUF type expected one of F32, F16, Q4_0, .*"
                         "MXFP4.*, found I8"),
    "rope scaling": (dict(extra=lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)),
                     "GGUF key llama.rope.scaling.type: expected one of none, linear, yarn, found 'longrope'"),
    "rope scaling factor": (dict(extra=lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)),
                            "GGUF key llama.rope.scaling.factor: expected a float, found missing"),
}


@pytest.mark.parametrize("case", GGUF_REFUSALS)
def test_gguf_refusals(tiny_hf, tmp_path, case):
    options, message = GGUF_REFUSALS[case]
    gguf_file = write_tiny_gguf(tmp_path / "bad.gguf", tiny_hf, **options)
    with pytest.raises(ConversionError, match=message) as error:
        convert(gguf_file, tmp_path / "out.mixrt", progress=False)
    print(f"\n{case}: {error.value}")
    assert not (tmp_path / "out.mixrt").exists() and temp_leftovers(tmp_path) == []


@pytest.fixture(scope="session")
def tiny_gguf(tiny_hf, tmp_path_factory) -> Path:
    """The tiny model as a float32 GGUF, for tests that damage copies of it."""
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf", tiny_hf)


def gguf_sections(path: Path) -> dict:
    """Byte ranges of a GGUF file's sections, located by the gguf reader: the header (magic,
    version, tensor and key counts), the metadata, the tensor infos and the tensor data."""
    reader = gguf.GGUFReader(path)
    infos, data = reader.tensors[0].field.offset, reader.data_offset
    return {"header": (0, 24), "metadata": (24, infos), "tensor infos": (infos, data),
            "tensor data": (data, path.stat().st_size)}


def refusal(src: Path, tmp_path: Path) -> str:
    """The converter's message refusing src, checked to be one line with no file left behind."""
    with pytest.raises(ConversionError) as error:
        convert(src, tmp_path / "out.mixrt", progress=False)
    print(f"\n{error.value}")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out.mixrt").exists() and temp_leftovers(tmp_path) == []
    return str(error.value)


@pytest.mark.parametrize("section", ["header", "metadata", "tensor infos", "tensor data"])
def test_truncated_gguf_is_refused(tiny_gguf, tmp_path, section):
    start, end = gguf_sections(tiny_gguf)[section]
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:(start + end) // 2])
    assert refusal(cut, tmp_path).startswith(
        f"truncated/corrupt GGUF: {cut}: the gguf reader fails on its {(start + end) // 2} bytes (")


def patch_value_type(data: bytes, key: str, value_type: int) -> bytes:
    """data with the value type of metadata key (after its u64 length and name) replaced."""
    at = data.index(key.encode()) + len(key)
    return data[:at] + struct.pack("<I", value_type) + data[at + 4:]


RANDOM_BYTES = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
# How to corrupt a valid GGUF file, and the reader's complaint (a regular expression).
GGUF_CORRUPTIONS = {
    "random bytes after the magic": (lambda data: data[:4] + RANDOM_BYTES,
                                     "ValueError: Sorry, file appears to be version"),
    "random bytes after the version": (lambda data: data[:8] + RANDOM_BYTES, "IndexError: "),
    "duplicate key": (lambda data: data.replace(b"tokenizer.ggml.model", b"llama.context_length",
                                                1),  # a key of the same length, written before
                      r"KeyError: 'Duplicate llama\.context_length"),
    "unknown value type": (lambda data: patch_value_type(data, "general.name", 99),
                           r"ValueError: \S*99\)? is not a valid GGUFValueType"),
}


@pytest.mark.parametrize("case", GGUF_CORRUPTIONS)
def test_corrupt_gguf_is_refused(tiny_gguf, tmp_path, case):
    corrupt, what = GGUF_CORRUPTIONS[case]
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(corrupt(tiny_gguf.read_bytes()))
    assert re.match(rf"truncated/corrupt GGUF: {re.escape(str(bad))}: the gguf reader fails on "
                    rf"its {bad.stat().st_size} bytes \({what}", refusal(bad, tmp_path))


@pytest.mark.parametrize("start", [b"GGML\x03\x00\x00\x00", b"hello", b"GG", b""])
def test_file_without_gguf_magic_is_refused(tmp_path, start):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(start + bytes(100 if start else 0))
    assert refusal(bad, tmp_path) == (f"not a GGUF file (magic expected b'GGUF', found "
                                      f"{(start + bytes(4))[:4] if start else b''!r}): {bad}")


def cut_after_opening(source: Path) -> str:
    """Opens the source, then cuts 2 bytes off its weights file, as if it changed during the
    conversion, and loads every tensor: the refusal."""
    model = open_source(source)
    weights = source if source.is_file() else source / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 2)
    with pytest.raises(ConversionError) as error:
        for _, tensor in model.tensors:
            tensor.load()
    return str(error.value)


def test_gguf_cut_after_opening_is_refused(tiny_gguf, tmp_path):
    copy = Path(shutil.copy(tiny_gguf, tmp_path / "tiny.gguf"))
    last = gguf.GGUFReader(copy).tensors[-1]
    assert cut_after_opening(copy) == (
        f"truncated/corrupt GGUF: {copy}: tensor output.weight expected {last.n_bytes} bytes of "
        f"data at offset {last.data_offset}, found {last.n_bytes - 2}")


def test_safetensors_cut_after_opening_is_refused(tiny_copy):
    shard = tiny_copy.resolve() / "model.safetensors"
    assert cut_after_opening(tiny_copy) == (f"truncated/corrupt safetensors: {shard}: Error while "
                                            f"deserializing header: incomplete metadata, file not "
                                            f"fully covered")


def test_bf16_safetensors_cut_after_opening_is_refused(tiny_copy):
    """bf16 tensors are read from the raw bytes: a short read is refused."""
    weights = load_file(tiny_copy / "model.safetensors")
    write_bf16_safetensors(tiny_copy / "model.safetensors", weights)
    last, size = list(weights)[-1], 2 * list(weights.values())[-1].size  # last in the file
    assert cut_after_opening(tiny_copy) == (
        f"truncated/corrupt safetensors: {tiny_copy.resolve() / 'model.safetensors'}: tensor "
        f"{last} expected {size} bytes of data, found {size - 2}")


def test_cli_refuses_a_truncated_gguf_in_one_line(tiny_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:100_000])
    result = subprocess.run([sys.executable, "-m", "mixrt.convert.cli", str(cut), "-o",
                             str(tmp_path / "out.mixrt")], capture_output=True,
                            text=True)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"mixrt-convert: error: truncated/corrupt GGUF: {cut}: ")


def test_cli_prints_refusal_without_traceback(tiny_copy, tmp_path):
    edit_config(tiny_copy, model_type="gemma")
    result = subprocess.run([sys.executable, "-m", "mixrt.convert.cli", str(tiny_copy), "-o",
                             str(tmp_path / "out.mixrt")], capture_output=True,
                            text=True)
    assert result.returncode == 1
    assert result.stderr == ("mixrt-convert: error: config.json: model_type expected one of llama, "
                             "mistral, qwen2, found 'gemma'\n")


def test_cli_converts_quietly_or_with_a_summary(tiny_hf, tmp_path):
    for flags, expect_output in (([], True), (["--quiet", "--dtype", "f32", "--force"], False)):
        result = subprocess.run([sys.executable, "-m", "mixrt.convert.cli", str(tiny_hf), "-o",
                                 str(tmp_path / "out.mixrt"), *flags],
                                capture_output=True, text=True, check=True)
        assert ("21 tensors" in result.stdout) == expect_output
        assert bool(result.stderr) == expect_output  # the tqdm bar
    assert read_mixrt(tmp_path / "out.mixrt").metadata["mixrt.recipe"] == "f32"  # overwritten


@pytest.mark.parametrize("option, value, message", [
    ("--bits", "nan", "expected a number in (0, 16], found nan"),
    ("--bits", "0", "expected a number in (0, 16], found 0.0"),
    ("--bits", "100", "expected a number in (0, 16], found 100.0"),
    ("--bits", "inf", "expected a number in (0, 16], found inf"),
    ("--outlier-frac", "-1", "expected a number in [0, 1), found -1.0"),
    ("--outlier-frac", "nan", "expected a number in [0, 1), found nan"),
    ("--calib-tokens", "0", "expected an integer >= 1, found 0"),
    ("--calib-tokens", "1e4", "expected an integer >= 1, found '1e4'"),
])
def test_cli_refuses_numeric_options_out_of_range(tmp_path, option, value, message):
    """While parsing, before any work: the source and the output directory do not even exist."""
    result = subprocess.run([sys.executable, "-m", "mixrt.convert.cli", "no-such-source", "-o",
                             str(tmp_path / "missing" / "out.mixrt"), "--recipe", "mix", option,
                             value], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"mixrt-convert: error: argument {option}: {message}\n"


def test_cli_version_and_help():
    from mixrt.convert.cli import build_parser

    result = subprocess.run([sys.executable, "-m", "mixrt.convert.cli", "--version"],
                            capture_output=True, text=True, check=True)
    assert result.stdout == f"mixrt-convert {mixrt.__version__}\n"
    actions = build_parser()._actions
    options = {option for action in actions for option in action.option_strings}
    assert {"--version", "--force", "--bits", "--quiet"} <= options
    assert [a.option_strings or a.dest for a in actions if not (a.help or "").strip()] == []


# ---- the output path ---------------------------------------------------------------------------

# Output (relative to tmp_path, where old.mixrt, the file `file`, the directory `dir`, the fifo
# `fifo` and the source src.gguf exist), force, and the refusal with {out} and {parent} filled in.
OUTPUT_REFUSALS = {
    "missing directory": ("missing/out.mixrt", False, "output directory {parent} does not exist"),
    "directory is a file": ("file/out.mixrt", False,
                            "output directory {parent} is not a directory"),
    "output is a directory": ("dir", True, "output {out}: expected a file path, found a directory"),
    "output is a fifo": ("fifo", True, "output {out}: expected a file path, found a special file"),
    "output exists": ("old.mixrt", False, "{out} exists; pass --force to overwrite"),
    "output is the source": ("src.gguf", True, "output {out}: expected a path other than the "
                                               "source, found the source itself"),
}


@pytest.mark.parametrize("case", OUTPUT_REFUSALS)
def test_output_is_checked_before_any_work(tmp_path, monkeypatch, case):
    """convert() refuses the output path before it opens the source, naming that path (not the
    temporary file), and leaves everything as it was."""
    name, force, message = OUTPUT_REFUSALS[case]
    (tmp_path / "old.mixrt").write_bytes(b"previous conversion")
    (tmp_path / "file").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "src.gguf").write_bytes(b"GGUF source")
    before = sorted(tmp_path.rglob("*"))
    monkeypatch.setattr(mixrt.convert, "open_source",
                        lambda src: pytest.fail("the source was opened before the output check"))
    out = tmp_path / name
    with pytest.raises(ConversionError) as error:
        convert(tmp_path / "src.gguf", out, force=force, progress=False)
    assert str(error.value) == message.format(out=out, parent=out.parent)
    assert sorted(tmp_path.rglob("*")) == before
    assert (tmp_path / "old.mixrt").read_bytes() == b"previous conversion"


def test_unwritable_output_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(ConversionError) as error:
        convert(tmp_path / "src.gguf", tmp_path / "out.mixrt", progress=False)
    assert str(error.value) == f"output directory {tmp_path} is not writable"


def test_cli_checks_the_output_before_reading_the_source(tmp_path):
    """One line naming the output, exit status 1, although the source does not even exist."""
    (tmp_path / "old.mixrt").write_bytes(b"previous conversion")
    for out, message in ((tmp_path / "old.mixrt", f"{tmp_path / 'old.mixrt'} exists; pass --force "
                                                  f"to overwrite"),
                         (tmp_path / "missing" / "out.mixrt",
                          f"output directory {tmp_path / 'missing'} does not exist")):
        result = subprocess.run([sys.executable, "-m", "mixrt.convert.cli",
                                 str(tmp_path / "no-such-source"), "-o", str(out)],
                                capture_output=True, text=True)
        assert (result.returncode, result.stderr) == (1, f"mixrt-convert: error: {message}\n")
    assert (tmp_path / "old.mixrt").read_bytes() == b"previous conversion"


# ---- no partial files ------------------------------------------------------------------------

@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError])
def test_interrupted_conversion_leaves_no_file(tiny_hf, tmp_path, monkeypatch, failure):
    """A loader that fails midway (Ctrl-C, a read error): the previous output stays as it was and
    no temporary file remains."""
    real_open_source = mixrt.convert.open_source

    def open_failing_midway(src):
        model = real_open_source(src)
        tensors = list(model.tensors)
        name, tensor = tensors[len(tensors) // 2]

        def fail():
            raise failure("interrupted")
        tensors[len(tensors) // 2] = (name, dataclasses.replace(tensor, load=fail))
        return dataclasses.replace(model, tensors=tensors)

    monkeypatch.setattr(mixrt.convert, "open_source", open_failing_midway)
    out = tmp_path / "out.mixrt"
    out.write_bytes(b"previous conversion")
    with pytest.raises(failure):
        convert(tiny_hf, out, progress=False, force=True)
    assert out.read_bytes() == b"previous conversion"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mixrt"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signalled_conversion_removes_its_temporary_files(tiny_hf, tmp_path, signum):
    """SIGINT or SIGTERM while a temporary file exists (the calibration's, then the writer's): the
    converter stops, removes it, says so and exits with 128 + the signal number."""
    out = tmp_path / "out.mixrt"
    # A test run started in the background of a shell ignores SIGINT, and so would the converter
    # (Python keeps an ignored SIGINT ignored, as a background job should): the child gets the default.
    proc = subprocess.Popen([sys.executable, "-m", "mixrt.convert.cli", str(tiny_hf), "-o", str(out), "--recipe",
                             "mix", "--bits", str(TINY_MIX_BITS), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not temp_leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert temp_leftovers(tmp_path), "the conversion ended before a temporary file was seen"
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    name = "terminated" if signum == signal.SIGTERM else "interrupted"
    assert proc.returncode == 128 + signum and stderr.strip() == f"mixrt-convert: {name}, no file written", stderr
    assert list(tmp_path.iterdir()) == []


def test_non_finite_weight_midway_is_refused(tiny_copy, tmp_path):
    poisoned = load_file(tiny_copy / "model.safetensors")["model.layers.1.mlp.down_proj.weight"]
    poisoned[3, 5] = np.inf
    edit_weights(tiny_copy, **{"model.layers.1.mlp.down_proj.weight": poisoned})
    for recipe, bits in (("f16", None), ("mix", TINY_MIX_BITS)):
        with pytest.raises(ConversionError,
                           match="tensor blk.1.ffn_down.weight: values expected finite"):
            convert(tiny_copy, tmp_path / "out.mixrt", recipe=recipe, bits=bits, progress=False)
    assert not (tmp_path / "out.mixrt").exists() and temp_leftovers(tmp_path) == []


@pytest.mark.parametrize("method", ["runtime", "sequential"])
def test_calibrated_mix_conversion(tiny_hf, tiny_f32, tmp_path, method):
    """--calib measures the inputs of every linear layer (running the model, or layer by layer on
    the quantized layers before), places the 4-bit strips by the KL they save (Fisher-weighted
    Hessian gains) and quantizes with
    GPTQ: the budget holds, the choices are recorded, the runtime loads the file, and the output
    error on the calibration distribution is lower than round-to-nearest's."""
    import mixrt
    from mixrt.quant.calibration import collect_hessians, tensor_site

    calib = tmp_path / "calib.txt"
    calib.write_text(" ".join(f"The number {i} follows {i - 1} in the list of numbers." for i in range(1, 200)))
    gptq_out, rtn_out = tmp_path / "gptq.mixrt", tmp_path / "rtn.mixrt"
    summary = convert(tiny_hf, gptq_out, recipe="mix", bits=TINY_MIX_BITS, calib=calib, calib_tokens=1024,
                      calib_method=method, progress=False)
    convert(tiny_hf, rtn_out, recipe="mix", bits=TINY_MIX_BITS, calib=None, progress=False)
    meta = read_mixrt(gptq_out).metadata
    assert summary["linear_bits"] <= TINY_MIX_BITS
    assert (meta["mixrt.recipe.method"], meta["mixrt.recipe.k4_allocation"], meta["mixrt.recipe.calib_file"],
            meta["mixrt.recipe.calib_tokens"], meta["mixrt.recipe.calib_method"]) == (
                "gptq", "fisher_kl_gain", "calib.txt", 1024, method)
    assert meta["mixrt.recipe.gptq.damp"] == 0.01 and meta["mixrt.recipe.gptq.outlier_select"] == "greedy0"
    assert 0 < meta["mixrt.recipe.fisher_tokens"] <= 1024
    assert not list(tmp_path.glob("*.tmp*")), "the temporary f16 file was left behind"
    assert mixrt.load(gptq_out).generate("Hello", max_tokens=4, temperature=0) is not None

    hessians = collect_hessians(tiny_f32, calib.read_text(), n_tokens=1024, ctx=256, progress=False)
    reference = read_mixrt(tiny_f32)
    errors = {}
    for name, path in (("gptq", gptq_out), ("rtn", rtn_out)):
        file, total = read_mixrt(path), 0.0
        for tensor_name, tensor in file.tensors.items():
            if tensor.dtype_name == "mix":
                d = (tensor.dequantize() - reference.tensors[tensor_name].array()).astype(np.float64)
                total += np.einsum("ij,jk,ik->", d, hessians[tensor_site(tensor_name)], d)
        errors[name] = total
    print(f"Hessian-weighted output error: gptq {errors['gptq']:.4g}, rtn {errors['rtn']:.4g}")
    assert errors["gptq"] < errors["rtn"]


def test_self_generated_calibration_windows(random_model):
    """Without a text the model writes its calibration windows: at most ctx tokens each, together
    at least the tokens asked for, each starting from a word of the vocabulary, the same for the
    same seed."""
    import mixrt
    from mixrt.quant.calibration import self_generated_windows

    model = mixrt.load(random_model)
    windows = self_generated_windows(model, 600, 128, seed=1, progress=False)
    assert all(1 < len(w) <= 128 for w in windows) and sum(map(len, windows)) >= 600
    assert all(re.match(r"\s*[A-Z][a-z]{2}", model.detokenize(w)) for w in windows)
    assert self_generated_windows(model, 600, 128, seed=1, progress=False) == windows
    assert self_generated_windows(model, 600, 128, seed=2, progress=False) != windows


def test_mix_calibrates_on_the_models_own_text_by_default(tiny_hf, tmp_path):
    """The mix recipe without a text calibrates on text the model writes (recorded as 'self'),
    and beats round-to-nearest on the Hessian-weighted error; without calibration it warns."""
    import mixrt

    out = tmp_path / "self.mixrt"
    summary = convert(tiny_hf, out, recipe="mix", bits=TINY_MIX_BITS, calib_tokens=512, progress=False)
    meta = read_mixrt(out).metadata
    assert summary["linear_bits"] <= TINY_MIX_BITS and meta["mixrt.recipe.method"] == "gptq"
    assert (meta["mixrt.recipe.calib_file"], meta["mixrt.recipe.calib_method"]) == ("self", "runtime")
    assert meta["mixrt.recipe.calib_tokens"] >= 512
    assert temp_leftovers(tmp_path) == [] and mixrt.load(out).generate("Hi", max_tokens=4) is not None
    with pytest.warns(UserWarning, match="the mix recipe without calibration rounds its 2-bit weights"):
        convert(tiny_hf, tmp_path / "rtn.mixrt", recipe="mix", bits=TINY_MIX_BITS, calib=None, progress=False)
    assert "mixrt.recipe.calib_file" not in read_mixrt(tmp_path / "rtn.mixrt").metadata
    with pytest.raises(ConversionError, match="calib: expected only with the mix, bfp-search, quik recipes, found q8"):
        convert(tiny_hf, tmp_path / "q8.mixrt", recipe="q8", calib=out, progress=False)


def test_cli_says_how_it_calibrates(tiny_hf, tmp_path):
    def run(*options):
        return subprocess.run([sys.executable, "-m", "mixrt.convert.cli", str(tiny_hf), "-o",
                               str(tmp_path / "m.mixrt"), "--recipe", "mix", "--bits", str(TINY_MIX_BITS),
                               "--force", *options], capture_output=True, text=True)

    r = run("--calib-tokens", "256")
    assert r.returncode == 0 and "calibrating on 256 tokens of text the model writes itself" in r.stderr
    r = run("--no-calib")
    assert r.returncode == 0
    warning = [line for line in r.stderr.splitlines() if "warning" in line]
    from mixrt.convert import RTN_WARNING

    assert warning == [f"mixrt-convert: warning: {RTN_WARNING}"]
    assert run("--no-calib", "--calib", "x.txt").returncode == 2


def test_calibration_method_follows_hessian_memory():
    """auto keeps the fast runtime method while every layer's Hessians fit in
    RUNTIME_HESSIAN_LIMIT: SmolLM2-135M needs 0.8 GB, a Llama-2-7B 44 GB (sequential)."""
    from types import SimpleNamespace

    from mixrt.convert import RUNTIME_HESSIAN_LIMIT, runtime_hessian_bytes

    smollm2 = SimpleNamespace(n_layers=30, hidden_size=576, n_heads=9, head_dim=64, ffn_size=1536)
    llama7b = SimpleNamespace(n_layers=32, hidden_size=4096, n_heads=32, head_dim=128, ffn_size=11008)
    assert runtime_hessian_bytes(smollm2) == 8 * 30 * (3 * 576**2 + 1536**2)
    assert runtime_hessian_bytes(smollm2) <= RUNTIME_HESSIAN_LIMIT < runtime_hessian_bytes(llama7b)
    assert runtime_hessian_bytes(llama7b) == 8 * 32 * (3 * 4096**2 + 11008**2)


def test_calibration_method_is_checked(tiny_hf, tmp_path):
    calib = tmp_path / "calib.txt"
    calib.write_text("some text " * 100)
    with pytest.raises(ConversionError, match="calib_method: expected one of auto, runtime, "
                                              "sequential, found 'fast'"):
        convert(tiny_hf, tmp_path / "out.mixrt", recipe="mix", bits=TINY_MIX_BITS, calib=calib,
                calib_method="fast", progress=False)
    assert temp_leftovers(tmp_path) == []


def test_temp_files_of_killed_conversions_are_removed(tiny_hf, tmp_path):
    """A conversion killed by SIGKILL cannot remove its temporary files; the next conversion to the
    same output removes those whose process is gone (saying so, once per file) and leaves those of
    a conversion still running, and other files, alone."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "m.mixrt"
    stale = [tmp_path / f"m.mixrt.tmp-{dead.pid}", tmp_path / f"m.mixrt.calib-f16.tmp-{dead.pid}"]
    alive = tmp_path / f"m.mixrt.tmp-{os.getppid()}"
    other = tmp_path / f"other.mixrt.tmp-{dead.pid}"
    for path in stale + [alive, other]:
        path.write_bytes(b"partial")
    with pytest.warns(UserWarning, match=rf"removed .*m.mixrt.*tmp-{dead.pid}, left by a conversion that ended "
                                         rf"without cleaning up \(pid {dead.pid} is gone\)") as caught:
        convert(tiny_hf, out, dtype="f16", progress=False)
    assert len(caught) == 2 and out.exists()
    assert not any(p.exists() for p in stale) and alive.exists() and other.exists()
    result = subprocess.run([sys.executable, "-m", "mixrt.convert.cli", str(tiny_hf), "-o", str(out), "--force",
                             "--recipe", "f16"], capture_output=True, text=True)
    assert result.returncode == 0 and "warning: removed" not in result.stderr  # nothing stale any more
