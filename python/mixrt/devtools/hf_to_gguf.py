# hf_to_gguf.py: writes a GGUF file of a Hugging Face Llama-family checkpoint directory the way
# llama.cpp's convert_hf_to_gguf.py does (arch llama for Llama and Mistral, qwen2 for Qwen2; llama
# q/k rows and biases interleaved per rotation pair; RoPE scaling as rope.scaling.* keys, Llama 3's
# as the rope_freqs tensor of per-pair divisors; the sliding window; the vocabulary of a
# sentencepiece tokenizer.model or of a byte-level BPE tokenizer.json, with llama.cpp's
# pre-tokenizer name for the family), for the converter's GGUF path in tests. Independent of mixrt.convert on purpose: the tests compare
# the two paths. One safetensors file, float32 data unless tensor_type says otherwise.
from __future__ import annotations

import json
import math
from pathlib import Path

import gguf
import numpy as np
import sentencepiece
from safetensors.numpy import load_file

from .gguf_to_hf import to_hf_name

LAYER_KINDS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
               "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")


def permute_like_gguf(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """What llama.cpp's HF->GGUF converter does to llama q/k rows (weights and biases): within each
    head, the two halves that rotate-half RoPE pairs up become interleaved, row (half, i) moving
    to row (i, half)."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, 2, rows // n_heads // 2, -1).swapaxes(1, 2).reshape(weight.shape)


def llama3_rope_factors(config: dict) -> np.ndarray:
    """llama.cpp's rope_freqs tensor for a llama3 rope_scaling: per rotation pair, the divisor
    that turns the pair's plain frequency into the Llama 3.1 one."""
    rope = config["rope_scaling"]
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    old = rope["original_max_position_embeddings"]
    low, high, factor = rope["low_freq_factor"], rope["high_freq_factor"], rope["factor"]
    factors = []
    for i in range(head_dim // 2):
        wavelen = 2 * math.pi * config["rope_theta"] ** (2 * i / head_dim)
        if wavelen < old / high:
            factors.append(1.0)
        elif wavelen > old / low:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, np.float32)


def _add_rope_scaling(writer: gguf.GGUFWriter, config: dict) -> dict:
    """The rope.scaling.* keys of config's rope_scaling; returns extra tensors (rope_freqs)."""
    rope = config.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    elif kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(rope["factor"])
        writer.add_rope_scaling_orig_ctx_len(rope.get("original_max_position_embeddings")
                                             or config["max_position_embeddings"])
        if rope.get("attention_factor") is not None:  # llama.cpp multiplies it by 0.1 ln(factor) + 1
            writer.add_rope_scaling_attn_factors(rope["attention_factor"] / (0.1 * math.log(rope["factor"]) + 1))
        if rope.get("beta_fast") is not None:
            writer.add_rope_scaling_yarn_beta_fast(rope["beta_fast"])
        if rope.get("beta_slow") is not None:
            writer.add_rope_scaling_yarn_beta_slow(rope["beta_slow"])
    elif kind == "llama3":
        return {"rope_freqs.weight": llama3_rope_factors(config)}
    elif kind != "default":
        raise ValueError(f"rope_scaling {kind!r}: GGUF has no way to state it")
    return {}


def _add_sentencepiece_vocabulary(writer: gguf.GGUFWriter, hf_dir: Path) -> None:
    spm = sentencepiece.SentencePieceProcessor(model_file=str(hf_dir / "tokenizer.model"))
    ids = range(spm.vocab_size())
    writer.add_tokenizer_model("llama")
    writer.add_token_list([spm.id_to_piece(i) for i in ids])
    writer.add_token_scores([spm.get_score(i) for i in ids])
    writer.add_token_types([2 if spm.is_unknown(i) else 3 if spm.is_control(i) else
                            6 if spm.is_byte(i) else 1 for i in ids])
    writer.add_bos_token_id(spm.bos_id())
    writer.add_eos_token_id(spm.eos_id())
    writer.add_unk_token_id(spm.unk_id())
    writer.add_add_bos_token(True)


# llama.cpp's name (tokenizer.ggml.pre) of each family's byte-level pre-tokenizer.
GGUF_PRE_NAMES = {"llama": "llama-bpe", "qwen2": "qwen2"}


def _add_byte_level_vocabulary(writer: gguf.GGUFWriter, hf_dir: Path, config: dict) -> None:
    """A tokenizer.json byte-level BPE as llama.cpp writes it ("gpt2" model, merges, the family's
    pre-tokenizer name; added special tokens are control tokens)."""
    data = json.loads((hf_dir / "tokenizer.json").read_text())
    names = json.loads((hf_dir / "tokenizer_config.json").read_text())
    tokens = {i: (token, 1) for token, i in data["model"]["vocab"].items()}
    tokens.update({t["id"]: (t["content"], 3 if t["special"] else 4) for t in data["added_tokens"]})
    ids = sorted(tokens)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(GGUF_PRE_NAMES.get(config["model_type"], "gpt-2"))
    writer.add_token_list([tokens[i][0] for i in ids])
    writer.add_token_types([tokens[i][1] for i in ids])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]])
    by_text = {text: i for i, (text, _) in tokens.items()}
    if names.get("bos_token"):
        writer.add_bos_token_id(by_text[names["bos_token"]])
    writer.add_eos_token_id(by_text[names["eos_token"]])
    writer.add_add_bos_token(bool(names.get("bos_token")))


def write_gguf(path, hf_dir, tensor_type=lambda name, weight: "F32", arch: str | None = None,
               extra=lambda writer: None) -> Path:
    """Writes path: the checkpoint in hf_dir (config.json, model.safetensors, a byte-level BPE
    tokenizer.json or a sentencepiece tokenizer.model) as llama.cpp would write it. tensor_type(name, weight) picks each tensor's
    GGML type; arch overrides the architecture (to test refusals); extra(writer) adds keys."""
    path, hf_dir = Path(path), Path(hf_dir)
    config = json.loads((hf_dir / "config.json").read_text())
    weights = load_file(hf_dir / "model.safetensors")
    arch = arch or ("qwen2" if config["model_type"] == "qwen2" else "llama")
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(hf_dir.name)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(config["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config["hidden_size"] // config["num_attention_heads"]:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if config["model_type"] == "mistral" and config.get("sliding_window"):
        writer.add_sliding_window(config["sliding_window"])
    writer.add_vocab_size(config["vocab_size"])
    extra_tensors = _add_rope_scaling(writer, config)
    if (hf_dir / "tokenizer.json").exists():
        _add_byte_level_vocabulary(writer, hf_dir, config)
    else:
        _add_sentencepiece_vocabulary(writer, hf_dir)
    extra(writer)
    # llama.cpp's llama files interleave q/k rows; its qwen2 files keep them (NeoX RoPE)
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]} \
        if arch == "llama" else {}
    names = ["token_embd.weight"]
    for i in range(config["num_hidden_layers"]):
        for kind in LAYER_KINDS:
            names += [f"blk.{i}.{kind}.{suffix}" for suffix in ("weight", "bias")
                      if to_hf_name(f"blk.{i}.{kind}.{suffix}") in weights]
    names += ["output_norm.weight"] + (["output.weight"] if "lm_head.weight" in weights else [])
    for name, values in extra_tensors.items():
        writer.add_tensor(name, values)
    for name in names:
        weight = weights[to_hf_name(name)]
        if name.split(".")[-2] in heads:
            weight = permute_like_gguf(weight, heads[name.split(".")[-2]])
        qtype = gguf.GGMLQuantizationType[tensor_type(name, weight)]
        try:
            data = gguf.quants.quantize(weight, qtype)
        except NotImplementedError:  # a type gguf cannot produce: zero blocks, to be refused
            data = np.zeros(gguf.quants.quant_shape_to_byte_shape(weight.shape, qtype), np.uint8)
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
