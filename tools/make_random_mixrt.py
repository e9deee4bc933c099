# make_random_mixrt.py: writes a randomly initialised .mixrt directly in packed form (random valid
# codes, scales, permutations and sorted outlier lists; no quantization), so a Llama-2-7B-shaped
# file in any recipe (f16, q8, q4, mix at --bits) takes a minute or two. Shapes and weight scales
# are tools/make_random_model.py's; the tokenizer is a byte-level vocabulary (256 byte tokens, no
# merges, <s> and </s>, the rest unused). Also used by tests/test_cuda_gemv.py and
# tools/bench_cuda_gemv.py for random packed matrices (random_weight). Tested by
# tests/test_cuda_gemv.py (tiny shape, every recipe, loads and generates on the CPU).
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_random_model import DEFAULT_VOCAB, SHAPES, weight_plan  # noqa: E402

from mixrt.format import MixrtWriter  # noqa: E402
from mixrt.quant import layouts  # noqa: E402
from mixrt.quant.plan import plan_mix  # noqa: E402

RECIPES = ("f16", "q8", "q4", "mix")
EMBED_DTYPES = ("f16", "q8", "q4")
DEFAULT_BITS = 2.9
OUTLIER_FRAC = 0.003  # as the converter's default (mixrt.convert.DEFAULT_OUTLIER_FRAC)
SCALE_CODES = (16, 48)  # 2-bit group scale codes are drawn from this range: scales near 32.5 x S
# Standard deviations of the code distributions, to scale codes to a target weight std:
Q8_STD = np.sqrt((255**2 - 1) / 12)  # uniform -127..127
Q4_STD = np.sqrt((16**2 - 1) / 12)  # uniform 0..15
Q2_RMS = np.sqrt(1.5)  # (q - z), q uniform 0..3, z uniform in {1, 2}

# HF names of make_random_model's plan -> mixrt names.
_LAYER_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                "mlp.down_proj": "ffn_down"}


def mixrt_name(hf_name: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    layer, rest = hf_name[len("model.layers."):].split(".", 1)
    return f"blk.{layer}.{_LAYER_NAMES[rest.rsplit('.', 1)[0]]}.weight"


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
    if dtype != "mix":
        raise ValueError(f"dtype: expected f16, f32, q8, q4 or mix, found {dtype!r}")
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


def byte_vocabulary(vocab: int) -> tuple[list[str], np.ndarray]:
    """256 byte tokens (the GPT-2 byte alphabet), <s> and </s> (control), then unused fillers."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    tokens, extra = [], 0
    for b in range(256):
        if b in keep:
            tokens.append(chr(b))
        else:
            tokens.append(chr(256 + extra))
            extra += 1
    tokens += ["<s>", "</s>"] + [f"<unused{i}>" for i in range(vocab - 258)]
    types = np.array([1] * 256 + [3, 3] + [5] * (vocab - 258), np.int32)
    return tokens, types


def make_random_mixrt(out, shape: str = "tiny", recipe: str = "mix", bits: float = DEFAULT_BITS,
                      embed_dtype: str | None = None, vocab: int = DEFAULT_VOCAB, seed: int = 0) -> dict:
    """Writes `out`; returns {'linear_bits': decoder linear bits per weight (all parts counted),
    'bytes': file size}. Embedding and head: embed_dtype (default f16 for the f16 recipe, q8
    otherwise, like mixrt-convert)."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe: expected one of {', '.join(RECIPES)}, found {recipe!r}")
    embed_dtype = embed_dtype or ("f16" if recipe == "f16" else "q8")
    if embed_dtype not in EMBED_DTYPES:
        raise ValueError(f"embed_dtype: expected one of {', '.join(EMBED_DTYPES)}, found {embed_dtype!r}")
    if vocab < 258:
        raise ValueError(f"vocab: expected at least 258 (bytes, <s>, </s>), found {vocab}")
    spec = SHAPES[shape]
    plan = [(mixrt_name(n), dims, std) for n, dims, std in weight_plan(spec, vocab)]
    linear = [(name, dims) for name, dims, std in plan if name.startswith("blk.") and len(dims) == 2]
    k4, per_row = {}, {}
    if recipe == "mix":
        mp = plan_mix([dims for _, dims in linear], bits, OUTLIER_FRAC)
        for (name, (m, _)), k4_i, nnz in zip(linear, mp.k4, mp.nnz):
            k4[name], per_row[name] = k4_i, nnz // m
    tokens, types = byte_vocabulary(vocab)
    head_dim = spec.hidden // spec.heads
    metadata = {
        "general.architecture": "llama", "general.name": f"random {shape} {recipe}",
        "mixrt.converter_version": "make_random_mixrt", "mixrt.recipe": recipe,
        "mixrt.source": f"random:{shape}", "llama.vocab_size": vocab, "llama.hidden_size": spec.hidden,
        "llama.n_layers": spec.layers, "llama.n_heads": spec.heads, "llama.n_kv_heads": spec.kv_heads,
        "llama.head_dim": head_dim, "llama.ffn_size": spec.ffn, "llama.context_length": spec.context,
        "llama.rope_theta": 10000.0, "llama.rms_norm_eps": 1e-5, "llama.tie_word_embeddings": 0,
        "tokenizer.model": "byte_bpe", "tokenizer.tokens": tokens, "tokenizer.token_types": types,
        "tokenizer.merges": [], "tokenizer.bos_id": 256, "tokenizer.eos_id": 257, "tokenizer.add_bos": 1,
    }
    if recipe == "mix":
        metadata["mixrt.recipe.bits_target"] = float(bits)

    def dtype_of(name, dims):
        if len(dims) == 1:
            return "f32"
        return recipe if name.startswith("blk.") else embed_dtype

    rng = np.random.default_rng(seed)
    linear_bytes = 0
    with MixrtWriter(out) as writer:
        writer.add_metadata(metadata)
        for name, dims, _ in plan:
            nnz = per_row.get(name, 0) * dims[0]
            writer.declare_tensor(name, dtype_of(name, dims), dims, k4.get(name, 0), nnz)
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


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a randomly initialised .mixrt in packed form.")
    parser.add_argument("out")
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--recipe", choices=RECIPES, default="mix")
    parser.add_argument("--bits", type=float, default=DEFAULT_BITS, help="mix: bits per decoder linear weight")
    parser.add_argument("--embed-dtype", choices=EMBED_DTYPES, help="embedding and head (default q8; f16 for f16)")
    parser.add_argument("--vocab", type=int, default=DEFAULT_VOCAB)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    summary = make_random_mixrt(args.out, args.shape, args.recipe, args.bits, args.embed_dtype, args.vocab,
                                args.seed)
    print(f"wrote {args.out}: {summary['bytes']} bytes, decoder linear weights at "
          f"{summary['linear_bits']:.3f} bits per weight")


if __name__ == "__main__":
    main()
