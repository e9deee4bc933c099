# random_model.py: the random-model generator of the tests and the tools: randomly initialised
# Llamas in real shapes (tiny, tinyllama-1.1b, llama2-7b), with weight scales that keep activations
# in range, written
#   * as a Hugging Face checkpoint directory (make_random_model; float32 or float16, big shapes
#     streamed shard by shard; any architecture variant of model_variants.py, biases included):
#     for converter tests and speed measurements;
#   * as a .mixrt file in packed form (make_random_mixrt; random valid codes, scales, permutations
#     and sorted outlier lists in any recipe, no quantization, so a Llama-2-7B-shaped file takes a
#     minute or two; random_weight makes one packed matrix), with a byte-level vocabulary;
#   * as the byte model (write_byte_model): the smallest valid file, each of its 256 tokens one
#     byte, built from dictionaries (byte_model_metadata, byte_model_tensors) that tests damage or
#     vary.
# Command lines: tools/make_random_model.py and tools/make_random_mixrt.py. Tested by
# tests/test_convert.py, tests/test_cuda_gemv.py and tests/test_bad_files.py.
from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from ..convert import DEFAULT_BITS, DEFAULT_OUTLIER_FRAC
from ..format import MixrtWriter
from ..quant import blockfp, layouts, quik
from ..quant.blockfp import BLOCK_FORMATS
from ..quant.plan import plan_mix
from .gguf_to_hf import BLOCK_NAMES, GLOBAL_NAMES
from .model_variants import bias_names, hf_config


# ---- shapes and weight scales ---------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    context: int
    dtype: str  # default storage of the weights


SHAPES = {
    "tiny": Shape(hidden=64, layers=2, heads=4, kv_heads=2, ffn=172, context=256, dtype="float32"),
    "tinyllama-1.1b": Shape(hidden=2048, layers=22, heads=32, kv_heads=4, ffn=5632, context=2048,
                            dtype="float16"),
    "llama2-7b": Shape(hidden=4096, layers=32, heads=32, kv_heads=32, ffn=11008, context=4096,
                       dtype="float16"),
}
DEFAULT_VOCAB = 32000
DEFAULT_SHARD_BYTES = 1 << 30
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
# Weight scales: each linear layer maps unit-RMS inputs to unit-RMS outputs (std 1/sqrt(fan_in),
# 0.016 at width 4096, like trained Llamas), so attention is not uniform and activations neither
# vanish nor explode; the output head is scaled up so the logits spread over several nats.
EMBEDDING_STD = 1.0
LOGIT_STD = 4.0


# Biases are drawn with this std (Qwen2's q/k/v biases are of order 1, larger than their weights).
BIAS_STD = 0.5


def weight_plan(shape: Shape, vocab: int, config: dict | None = None) -> list[tuple[str, tuple[int, ...], float | None]]:
    """(HF name, dims, std of the normal init or None for an all-ones norm), in file order; with a
    config.json's entries (model_variants.hf_config), its head_dim, biases and tied head."""
    config = config or {}
    d = shape.hidden
    head_dim = config.get("head_dim") or shape.hidden // shape.heads
    q, kv = shape.heads * head_dim, shape.kv_heads * head_dim
    plan = [("model.embed_tokens.weight", (vocab, d), EMBEDDING_STD)]
    for i in range(shape.layers):
        prefix = f"model.layers.{i}."
        plan += [(prefix + "input_layernorm.weight", (d,), None),
                 (prefix + "self_attn.q_proj.weight", (q, d), d ** -0.5),
                 (prefix + "self_attn.k_proj.weight", (kv, d), d ** -0.5),
                 (prefix + "self_attn.v_proj.weight", (kv, d), d ** -0.5),
                 (prefix + "self_attn.o_proj.weight", (d, q), q ** -0.5),
                 (prefix + "post_attention_layernorm.weight", (d,), None),
                 (prefix + "mlp.gate_proj.weight", (shape.ffn, d), d ** -0.5),
                 (prefix + "mlp.up_proj.weight", (shape.ffn, d), d ** -0.5),
                 (prefix + "mlp.down_proj.weight", (d, shape.ffn), shape.ffn ** -0.5)]
        rows = {entry[0][:-len(".weight")]: entry[1][0] for entry in plan if entry[0].startswith(prefix)}
        plan += [(name, (rows[name[:-len(".bias")]],), BIAS_STD) for name in bias_names(config, i)] \
            if config else []
    plan += [("model.norm.weight", (d,), None)]
    if not config.get("tie_word_embeddings"):
        plan += [("lm_head.weight", (vocab, d), LOGIT_STD * d ** -0.5)]
    return plan


# ---- Hugging Face checkpoint directories ------------------------------------------------------

def _shards(plan, itemsize: int, max_shard_bytes: int) -> list[list]:
    """Consecutive groups of the plan of at most max_shard_bytes each (one tensor at least)."""
    shards, size = [[]], 0
    for entry in plan:
        nbytes = math.prod(entry[1]) * itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    return shards


def _tokenizer_files(out: Path, tokenizer) -> dict:
    """Copies the tokenizer in (a sentencepiece tokenizer.model file, or a directory of Hugging
    Face tokenizer files such as train_tokenizer writes); returns the config.json entries it
    implies."""
    if tokenizer is None:
        return {"vocab_size": DEFAULT_VOCAB, "bos_token_id": 1, "eos_token_id": 2}
    tokenizer = Path(tokenizer)
    if tokenizer.is_dir():
        for name in TOKENIZER_FILES:
            if (tokenizer / name).exists():
                shutil.copyfile(tokenizer / name, out / name)
    else:
        shutil.copyfile(tokenizer, out / "tokenizer.model")
    if (out / "tokenizer.json").exists():
        from tokenizers import Tokenizer

        hf = Tokenizer.from_file(str(out / "tokenizer.json"))
        names = json.loads((out / "tokenizer_config.json").read_text())
        return {"vocab_size": hf.get_vocab_size(), "eos_token_id": hf.token_to_id(names["eos_token"]),
                "bos_token_id": hf.token_to_id(names["bos_token"]) if names.get("bos_token") else None}
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    if not (out / "tokenizer_config.json").exists():
        (out / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
            "bos_token": processor.id_to_piece(processor.bos_id()),
            "eos_token": processor.id_to_piece(processor.eos_id()),
            "unk_token": processor.id_to_piece(processor.unk_id())}, indent=2) + "\n")
    return {"vocab_size": processor.vocab_size(), "bos_token_id": processor.bos_id(),
            "eos_token_id": processor.eos_id()}


def make_random_model(out_dir, shape: str = "tiny", tokenizer=None, seed: int = 0,
                      dtype: str | None = None, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                      variant: str = "llama") -> Path:
    """Writes config.json, the weights (model.safetensors, or model-XXXXX-of-YYYYY.safetensors
    shards and model.safetensors.index.json when above max_shard_bytes) and, if tokenizer (a
    sentencepiece tokenizer.model, or a directory of tokenizer files) is given, the tokenizer.
    dtype: float32 or float16 (default: the shape's, float32 for tiny and float16 for the big
    ones). variant: an architecture of model_variants.VARIANTS (its config.json entries and bias
    tensors). Memory stays near one shard."""
    spec = SHAPES[shape]
    dtype = np.dtype(dtype or spec.dtype)
    if dtype not in (np.float32, np.float16):
        raise ValueError(f"dtype: expected float32 or float16, found {dtype}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": spec.hidden, "intermediate_size": spec.ffn,
              "num_hidden_layers": spec.layers, "num_attention_heads": spec.heads,
              "num_key_value_heads": spec.kv_heads, "head_dim": spec.hidden // spec.heads,
              "hidden_act": "silu", "max_position_embeddings": spec.context,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
              "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
              "torch_dtype": dtype.name, **_tokenizer_files(out, tokenizer)}
    config = hf_config(config, variant)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    rng = np.random.default_rng(seed)
    plan = weight_plan(spec, config["vocab_size"], config)
    shards = _shards(plan, dtype.itemsize, max_shard_bytes)
    weight_map = {}
    for index, shard in enumerate(shards, start=1):
        file = "model.safetensors" if len(shards) == 1 else \
            f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, dims, std in shard:
            weight = np.ones(dims, np.float32) if std is None else \
                rng.standard_normal(dims, dtype=np.float32) * np.float32(std)
            tensors[name] = weight.astype(dtype, copy=False)
            weight_map[name] = file
        save_file(tensors, str(out / file), metadata={"format": "pt"})
    if len(shards) > 1:
        total = sum(math.prod(dims) for _, dims, _ in plan) * dtype.itemsize
        (out / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    return out


# ---- byte vocabularies and the hand-built byte model -------------------------------------------

def byte_alphabet() -> list[str]:
    """The 256 single-byte tokens of a GPT-2 byte-level vocabulary: printable bytes as themselves,
    the others as the characters from U+0100 on."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    tokens, extra = [], 0
    for b in range(256):
        if b in keep:
            tokens.append(chr(b))
        else:
            tokens.append(chr(256 + extra))
            extra += 1
    return tokens


def byte_vocabulary(vocab: int) -> tuple[list[str], np.ndarray]:
    """256 byte tokens, <s> and </s> (control), then unused fillers up to vocab; their types."""
    tokens = byte_alphabet() + ["<s>", "</s>"] + [f"<unused{i}>" for i in range(vocab - 258)]
    types = np.array([1] * 256 + [3, 3] + [5] * (vocab - 258), np.int32)
    return tokens, types


# The byte model: 256 tokens, each one byte (no merges, no control tokens: BOS and EOS are bytes 1
# and 2), one layer of width 8, tied embedding. Its tokens can form any byte sequence.
BYTE_VOCAB = 256
BYTE_SHAPE = Shape(hidden=8, layers=1, heads=2, kv_heads=1, ffn=12, context=256, dtype="float16")


def byte_model_metadata() -> dict:
    s = BYTE_SHAPE
    return {
        "general.architecture": "llama", "general.name": "byte model",
        "mixrt.converter_version": "test", "mixrt.recipe": "f32", "mixrt.source": "test",
        "llama.vocab_size": BYTE_VOCAB, "llama.hidden_size": s.hidden, "llama.n_layers": s.layers,
        "llama.n_heads": s.heads, "llama.n_kv_heads": s.kv_heads, "llama.head_dim": s.hidden // s.heads,
        "llama.ffn_size": s.ffn, "llama.context_length": s.context,
        "llama.rope_theta": 10000.0, "llama.rms_norm_eps": 1e-5, "llama.tie_word_embeddings": 1,
        "tokenizer.model": "byte_bpe", "tokenizer.tokens": byte_alphabet(),
        "tokenizer.token_types": np.ones(BYTE_VOCAB, np.int32), "tokenizer.merges": [],
        "tokenizer.bos_id": 1, "tokenizer.eos_id": 2, "tokenizer.add_bos": 0,
    }


def byte_model_tensors() -> dict:
    """{name: (dtype, dims, float32 data)} in file order: matrices f16, vectors f32, all values
    normal with std 0.1 (seed 0)."""
    rng = np.random.default_rng(0)
    s = BYTE_SHAPE
    d, f, head_dim = s.hidden, s.ffn, s.hidden // s.heads
    q, kv = s.heads * head_dim, s.kv_heads * head_dim
    t = {"token_embd.weight": ("f16", (BYTE_VOCAB, d)), "output_norm.weight": ("f32", (d,))}
    for layer in range(s.layers):
        for name, dims in (("attn_norm", (d,)), ("attn_q", (q, d)), ("attn_k", (kv, d)), ("attn_v", (kv, d)),
                           ("attn_output", (d, q)), ("ffn_norm", (d,)), ("ffn_gate", (f, d)),
                           ("ffn_up", (f, d)), ("ffn_down", (d, f))):
            t[f"blk.{layer}.{name}.weight"] = ("f32" if len(dims) == 1 else "f16", dims)
    return {name: (dtype, dims, rng.standard_normal(dims).astype(np.float32) * 0.1)
            for name, (dtype, dims) in t.items()}


def write_byte_model(path, metadata: dict | None = None, tensors: dict | None = None) -> Path:
    """Writes the byte model, or a variant of it: metadata and tensors ({name: (dtype, dims,
    data)}) replace byte_model_metadata() and byte_model_tensors() when given."""
    metadata = byte_model_metadata() if metadata is None else metadata
    tensors = byte_model_tensors() if tensors is None else tensors
    with MixrtWriter(path) as w:
        w.add_metadata(metadata)
        for name, (dtype, dims, _) in tensors.items():
            w.declare_tensor(name, dtype, dims)
        for name, (_, _, data) in tensors.items():
            w.write_tensor(name, data)
    return Path(path)


# ---- .mixrt files in packed form ------------------------------------------------------------------

RECIPES = ("f16", "q8", "q4", "mix", *BLOCK_FORMATS, "quik")  # the block formats by dtype name (bfp6, ...)
EMBED_DTYPES = ("f16", "q8", "q4")
SCALE_CODES = (16, 48)  # 2-bit group scale codes are drawn from this range: scales near 32.5 x S
# Standard deviations of the code distributions, to scale codes to a target weight std:
Q8_STD = np.sqrt((255**2 - 1) / 12)  # uniform -127..127
Q4_STD = np.sqrt((16**2 - 1) / 12)  # uniform 0..15
Q2_RMS = np.sqrt(1.5)  # (q - z), q uniform 0..3, z uniform in {1, 2}

# HF names -> mixrt names: the inverse of gguf_to_hf's tables.
_FROM_HF = {hf: name for table in (GLOBAL_NAMES, BLOCK_NAMES) for name, hf in table.items()}


def mixrt_name(hf_name: str) -> str:
    stem, suffix = hf_name.rsplit(".", 1)
    if stem.startswith("model.layers."):
        layer, role = stem[len("model.layers."):].split(".", 1)
        return f"blk.{layer}.{_FROM_HF[role]}.{suffix}"
    return f"{_FROM_HF[stem]}.{suffix}"


def _random_outliers(rng, m: int, k: int, per_row: int, std: float):
    """per_row outliers in every row at strictly increasing columns (one per stratum of K)."""
    if per_row == 0:
        return np.zeros(m + 1, np.uint32), np.zeros(0, np.uint16), np.zeros(0, np.float16)
    starts = (np.arange(per_row) * k) // per_row
    widths = np.diff(np.append(starts, k))
    cols = starts + (rng.random((m, per_row)) * widths).astype(np.int64)
    vals = (rng.standard_normal(m * per_row) * std).astype(np.float16)
    return np.arange(m + 1, dtype=np.uint32) * per_row, cols.reshape(-1).astype(np.uint16), vals


def random_weight(rng, dtype: str, m: int, k: int, std: float, k4: int = 0, per_row_outliers: int = 0):
    """A random [m, k] weight of the given dtype whose values have about `std` as RMS: a float32
    (f32, normal) or float16 (f16, uniform) array, the packed parts for q8 / q4 / mix (k4 4-bit
    columns, per_row_outliers outliers in every row)."""
    if dtype == "f32":
        return rng.standard_normal((m, k), dtype=np.float32) * np.float32(std)
    if dtype == "f16":  # uniform on 256 levels: a table lookup on random bytes, ~4x faster than normal draws
        levels = ((np.arange(256) - 127.5) * (std * np.sqrt(12) / 256)).astype(np.float16)
        return levels[np.frombuffer(rng.bytes(m * k), np.uint8).reshape(m, k)]
    g = layouts.groups(k)
    if dtype == "q8":
        codes = rng.integers(-127, 128, size=(m, k), dtype=np.int8)
        return layouts.pack_q8(codes, np.full((m, g), std / Q8_STD, np.float16))
    if dtype == "q4":
        q = rng.integers(0, 16, size=(m, k), dtype=np.uint8)
        scales = (rng.uniform(0.8, 1.2, (m, g)) * std / Q4_STD).astype(np.float16)
        return layouts.pack_q4(q, scales, (-7.5 * scales.astype(np.float32)).astype(np.float16))
    if dtype in BLOCK_FORMATS:  # uniform element codes, one exponent for all blocks
        fmt = BLOCK_FORMATS[dtype]
        codes = rng.integers(0, 2 ** fmt.bits, size=(m, g * layouts.GROUP), dtype=np.uint8)
        codes[:, k:] = 0
        rms = np.sqrt(np.mean(fmt.element_values(np.arange(2 ** fmt.bits)) ** 2))
        exps = np.full((m, g * layouts.GROUP // fmt.block), 127 + round(np.log2(std / rms)), np.uint8)
        return blockfp.pack(codes, exps, fmt)
    if dtype == "quik":  # the converter's default share of fp16 columns, at random places
        n_out = quik.out_column_count(k, quik.DEFAULT_OUT_FRACTION)
        return quik.pack(quik.QuikParts(
            perm=rng.permutation(k).astype(np.uint32),
            q=rng.integers(quik.QMIN, quik.QMAX + 1, size=(m, k - n_out), dtype=np.int8),
            scales=np.full(m, std / Q4_STD, np.float16),
            out_w=(rng.standard_normal((m, n_out)) * std).astype(np.float16)))
    if dtype != "mix":
        raise ValueError(f"dtype: expected f16, f32, q8, q4, mix, quik or a block format, found {dtype!r}")
    k2 = k - k4
    g2 = layouts.padded_k2(k2) // layouts.GROUP
    super_scale = std / (Q2_RMS * np.mean(SCALE_CODES))
    scale4 = (rng.uniform(0.8, 1.2, (m, k4 // layouts.GROUP)) * std / Q4_STD).astype(np.float16)
    row_ptr, cols, vals = _random_outliers(rng, m, k, per_row_outliers, std)
    mix = layouts.MixParts(
        perm=rng.permutation(k),
        q2=rng.integers(0, 4, size=(m, k2), dtype=np.uint8),
        scale_code2=rng.integers(*SCALE_CODES, size=(m, g2), dtype=np.uint8),
        zero2=rng.integers(1, 3, size=(m, g2), dtype=np.uint8),
        super2=np.full((m, -(-g2 // layouts.SUPER_GROUPS)), super_scale, np.float16),
        q4=rng.integers(0, 16, size=(m, k4), dtype=np.uint8),
        scale4=scale4, min4=(-7.5 * scale4.astype(np.float32)).astype(np.float16),
        row_ptr=row_ptr, cols=cols, vals=vals)
    return layouts.pack_mix(mix)


def make_random_mixrt(out, shape: str | Shape = "tiny", recipe: str = "mix", bits: float = DEFAULT_BITS,
                      embed_dtype: str | None = None, vocab: int = DEFAULT_VOCAB, seed: int = 0) -> dict:
    """Writes `out` (shape: a name of SHAPES or a Shape); returns {'linear_bits': decoder linear bits per weight (all parts counted),
    'bytes': file size}. Embedding and head: embed_dtype (default f16 for the f16 recipe, q8
    otherwise, like mixrt-convert)."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe: expected one of {', '.join(RECIPES)}, found {recipe!r}")
    embed_dtype = embed_dtype or ("f16" if recipe == "f16" else "q8")
    if embed_dtype not in EMBED_DTYPES:
        raise ValueError(f"embed_dtype: expected one of {', '.join(EMBED_DTYPES)}, found {embed_dtype!r}")
    if vocab < 258:
        raise ValueError(f"vocab: expected at least 258 (bytes, <s>, </s>), found {vocab}")
    spec = SHAPES[shape] if isinstance(shape, str) else shape
    plan = [(mixrt_name(n), dims, std) for n, dims, std in weight_plan(spec, vocab)]
    linear = [(name, dims) for name, dims, std in plan if name.startswith("blk.") and len(dims) == 2]
    k4, per_row = {}, {}
    if recipe == "mix":
        mp = plan_mix([dims for _, dims in linear], bits, DEFAULT_OUTLIER_FRAC)
        for (name, (m, _)), k4_i, nnz in zip(linear, mp.k4, mp.nnz):
            k4[name], per_row[name] = k4_i, nnz // m
    tokens, types = byte_vocabulary(vocab)
    head_dim = spec.hidden // spec.heads
    metadata = {
        "general.architecture": "llama", "general.name": f"random {shape} {recipe}",
        "mixrt.converter_version": "make_random_mixrt", "mixrt.recipe": recipe,
        "mixrt.source": f"random:{shape if isinstance(shape, str) else 'custom'}", "llama.vocab_size": vocab, "llama.hidden_size": spec.hidden,
        "llama.n_layers": spec.layers, "llama.n_heads": spec.heads, "llama.n_kv_heads": spec.kv_heads,
        "llama.head_dim": head_dim, "llama.ffn_size": spec.ffn, "llama.context_length": spec.context,
        "llama.rope_theta": 10000.0, "llama.rms_norm_eps": 1e-5, "llama.tie_word_embeddings": 0,
        "tokenizer.model": "byte_bpe", "tokenizer.tokens": tokens, "tokenizer.token_types": types,
        "tokenizer.merges": [], "tokenizer.bos_id": 256, "tokenizer.eos_id": 257, "tokenizer.add_bos": 1,
    }
    if recipe == "mix":
        metadata["mixrt.recipe.bits_target"] = float(bits)

    def dtype_of(name, dims):  # quik: ffn_down q8, as the converter's default
        if len(dims) == 1:
            return "f32"
        if recipe == "quik" and name.endswith("ffn_down.weight"):
            return "q8"
        return recipe if name.startswith("blk.") else embed_dtype

    rng = np.random.default_rng(seed)
    linear_bytes = 0
    with MixrtWriter(out) as writer:
        writer.add_metadata(metadata)
        for name, dims, _ in plan:
            nnz = per_row.get(name, 0) * dims[0]
            out_cols = quik.out_column_count(dims[1], quik.DEFAULT_OUT_FRACTION) if dtype_of(name, dims) == "quik" else 0
            writer.declare_tensor(name, dtype_of(name, dims), dims, k4.get(name, 0), nnz, out_cols)
        for name, dims, std in plan:
            dtype = dtype_of(name, dims)
            if std is None:
                writer.write_tensor(name, np.ones(dims, np.float32))
                continue
            data = random_weight(rng, dtype, *dims, std, k4.get(name, 0), per_row.get(name, 0))
            if name.startswith("blk.") and len(dims) == 2:
                linear_bytes += data.size * 2 if dtype == "f16" else sum(p.nbytes for p in data)
            writer.write_tensor(name, data)
    weights = sum(m * k for _, (m, k) in linear)
    return {"linear_bits": 8 * linear_bytes / weights, "bytes": Path(out).stat().st_size}
