# make_random_model.py: writes a randomly initialised Hugging Face Llama checkpoint directory in
# real shapes (tiny, tinyllama-1.1b, llama2-7b) for speed measurements and converter tests; big
# shapes stream shard by shard in f16. Tested by tests/test_convert.py.
from __future__ import annotations

import argparse
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


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


def weight_plan(shape: Shape, vocab: int) -> list[tuple[str, tuple[int, ...], float | None]]:
    """(HF name, dims, std of the normal init or None for an all-ones norm), in file order."""
    d, head_dim = shape.hidden, shape.hidden // shape.heads
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
    plan += [("model.norm.weight", (d,), None),
             ("lm_head.weight", (vocab, d), LOGIT_STD * d ** -0.5)]
    return plan


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
    Face tokenizer files such as tools/train_tokenizer.py writes); returns the config.json entries
    it implies."""
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
        return {"vocab_size": hf.get_vocab_size(), "bos_token_id": hf.token_to_id(names["bos_token"]),
                "eos_token_id": hf.token_to_id(names["eos_token"])}
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
                      dtype: str | None = None, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Writes config.json, the weights (model.safetensors, or model-XXXXX-of-YYYYY.safetensors
    shards and model.safetensors.index.json when above max_shard_bytes) and, if tokenizer (a
    sentencepiece tokenizer.model, or a directory of tokenizer files) is given, the tokenizer. dtype: float32 or float16 (default:
    the shape's, float32 for tiny and float16 for the big ones). Memory stays near one shard."""
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
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    rng = np.random.default_rng(seed)
    plan = weight_plan(spec, config["vocab_size"])
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Write a randomly initialised Hugging Face Llama checkpoint directory.")
    parser.add_argument("out_dir")
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--tokenizer", help="sentencepiece tokenizer.model, or a directory of "
                                            "tokenizer files (tools/train_tokenizer.py), to include "
                                            "(needed to convert the result)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float32", "float16"),
                        help="weight storage (default: float32 for tiny, float16 otherwise)")
    args = parser.parse_args()
    out = make_random_model(args.out_dir, shape=args.shape, tokenizer=args.tokenizer,
                            seed=args.seed, dtype=args.dtype)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
