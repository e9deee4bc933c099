# gguf_to_hf.py: builds a Hugging Face Llama checkpoint directory from a llama GGUF (dequantized
# float32 model.safetensors, HF names, q/k rows back in rotate-half order) plus the HF config and
# tokenizer files. Independent of mixrt.convert on purpose: tests/test_convert.py compares the two.
# Command line: tools/gguf_to_hf.py.
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

COPIED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                "output": "lm_head"}
BLOCK_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
               "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
               "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
               "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def to_hf_name(gguf_name: str) -> str:
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{BLOCK_NAMES[parts[2]]}.{parts[3]}"
    return f"{GLOBAL_NAMES[parts[0]]}.{parts[1]}"


def rotate_half_row_order(n_rows: int, n_heads: int) -> np.ndarray:
    """For each HF row, the GGUF row holding it. Per head, HF keeps the two rotated halves apart
    (row `half * head_dim/2 + i`); GGUF keeps each rotated pair adjacent (row `2 * i + half`)."""
    head_dim = n_rows // n_heads
    head, within = np.divmod(np.arange(n_rows), head_dim)
    half, i = np.divmod(within, head_dim // 2)
    return head * head_dim + 2 * i + half


def gguf_to_hf(gguf_path, hf_files_dir, out_dir) -> Path:
    """Writes OUT_DIR/model.safetensors (all tensors as float32) and copies the HF files there.
    Holds the whole model in memory as float32 (fine for small models such as SmolLM2)."""
    reader = GGUFReader(gguf_path)
    heads = {"attn_q": reader.get_field("llama.attention.head_count").contents(),
             "attn_k": reader.get_field("llama.attention.head_count_kv").contents()}
    weights = {}
    for tensor in reader.tensors:
        shape = [int(n) for n in tensor.shape][::-1]
        weight = np.asarray(dequantize(tensor.data, tensor.tensor_type),
                            dtype=np.float32).reshape(shape)
        kind = tensor.name.split(".")[2] if tensor.name.startswith("blk.") else None
        if kind in heads:
            weight = weight[rotate_half_row_order(shape[0], heads[kind])]
        weights[to_hf_name(tensor.name)] = np.ascontiguousarray(weight)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name in COPIED_FILES:
        if (Path(hf_files_dir) / name).exists():
            shutil.copyfile(Path(hf_files_dir) / name, out / name)
    return out
