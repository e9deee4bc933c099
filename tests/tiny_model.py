# tiny_model.py: a tiny hand-built model written with mixrt.format: 256 single-byte tokens (the
# GPT-2 byte alphabet, no merges) and random weights. Valid by construction; tests/test_bad_files.py
# damages it, tests/test_generation.py uses it to produce arbitrary byte sequences.
import numpy as np

from mixrt import format as fmt

V, D, L, H, KV, HD, F, CTX = 256, 8, 1, 2, 1, 4, 12, 256


def byte_alphabet():
    """The GPT-2 byte -> printable character mapping (used here only to make 256 valid tokens)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def base_metadata():
    return {
        "general.architecture": "llama", "general.name": "bad-file base",
        "mixrt.converter_version": "test", "mixrt.recipe": "f32", "mixrt.source": "test",
        "llama.vocab_size": V, "llama.hidden_size": D, "llama.n_layers": L, "llama.n_heads": H,
        "llama.n_kv_heads": KV, "llama.head_dim": HD, "llama.ffn_size": F, "llama.context_length": CTX,
        "llama.rope_theta": 10000.0, "llama.rms_norm_eps": 1e-5, "llama.tie_word_embeddings": 1,
        "tokenizer.model": "byte_bpe", "tokenizer.tokens": byte_alphabet(),
        "tokenizer.token_types": np.ones(V, np.int32), "tokenizer.merges": [],
        "tokenizer.bos_id": 1, "tokenizer.eos_id": 2, "tokenizer.add_bos": 0,
    }


def base_tensors():
    rng = np.random.default_rng(0)
    t = {"token_embd.weight": ("f16", (V, D)), "output_norm.weight": ("f32", (D,))}
    for name, dims in (("attn_norm", (D,)), ("attn_q", (H * HD, D)), ("attn_k", (KV * HD, D)),
                       ("attn_v", (KV * HD, D)), ("attn_output", (D, H * HD)), ("ffn_norm", (D,)),
                       ("ffn_gate", (F, D)), ("ffn_up", (F, D)), ("ffn_down", (D, F))):
        t[f"blk.0.{name}.weight"] = ("f32" if len(dims) == 1 else "f16", dims)
    return {name: (dtype, dims, rng.standard_normal(dims).astype(np.float32) * 0.1)
            for name, (dtype, dims) in t.items()}


def write(path, metadata=None, tensors=None):
    metadata = base_metadata() if metadata is None else metadata
    tensors = base_tensors() if tensors is None else tensors
    with fmt.MixrtWriter(path) as w:
        w.add_metadata(metadata)
        for name, (dtype, dims, _) in tensors.items():
            w.declare_tensor(name, dtype, dims)
        for name, (_, _, data) in tensors.items():
            w.write_tensor(name, data)
    return path
