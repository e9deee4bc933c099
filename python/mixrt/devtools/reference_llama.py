# reference_llama.py: an independent numpy implementation of the Llama forward pass, read straight
# from a GGUF file, used as the float64 ground truth for the runtime's logits, greedy output and
# perplexity (tests/test_forward_reference.py, tools/reference_perplexity.py). It deliberately
# shares no code with the rest of mixrt: it imports numpy and gguf only.
import math

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

LAYER_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                 "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")


def _field(reader: GGUFReader, key: str):
    field = reader.get_field(key)
    if field is None:
        raise KeyError(f"GGUF metadata key {key} is missing")
    return field.contents()


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class ReferenceLlama:
    """Llama decoder over plain numpy arrays. config: n_layers, n_heads, n_kv_heads, head_dim,
    rope_theta, rms_norm_eps; weights: GGUF tensor names -> arrays, matrices [out, in] with the
    q/k rows in the GGUF order, where each head's dimensions come in adjacent (even, odd) pairs
    that RoPE rotates together. It computes in the dtype of the weights (float64 from from_gguf)."""

    def __init__(self, config: dict, weights: dict, cache_dtype=None):
        self.config = config
        # None: keys and values are cached in the compute dtype; np.float16: rounded to f16 when
        # cached, as the runtimes' KV caches store them.
        self.cache_dtype = cache_dtype
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.n_kv_heads = config["n_kv_heads"]
        self.head_dim = config["head_dim"]
        self.eps = config["rms_norm_eps"]
        self.weights = weights
        self.output = weights.get("output.weight", weights["token_embd.weight"])
        dtype = weights["token_embd.weight"].dtype
        pair = np.arange(self.head_dim // 2, dtype=np.float64)
        self.inv_freq = (config["rope_theta"] ** (-2.0 * pair / self.head_dim)).astype(dtype)

    @classmethod
    def from_gguf(cls, path, cache_dtype=None) -> "ReferenceLlama":
        reader = GGUFReader(str(path))
        arch = _field(reader, "general.architecture")
        if arch != "llama":
            raise ValueError(f"{path}: architecture {arch!r}, expected llama")
        n_heads = int(_field(reader, "llama.attention.head_count"))
        config = {
            "n_layers": int(_field(reader, "llama.block_count")),
            "n_heads": n_heads,
            "n_kv_heads": int(_field(reader, "llama.attention.head_count_kv")),
            "head_dim": int(_field(reader, "llama.embedding_length")) // n_heads,
            "rope_theta": float(_field(reader, "llama.rope.freq_base")),
            "rms_norm_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        }
        weights = {}
        for tensor in reader.tensors:
            values = dequantize(tensor.data, tensor.tensor_type)
            # GGUF lists dims fastest-varying first (ne0 = input width of a matrix).
            shape = tuple(int(n) for n in reversed(tensor.shape))
            weights[tensor.name] = values.reshape(shape).astype(np.float64)
        return cls(config, weights, cache_dtype)

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Rotates each adjacent pair (x[2i], x[2i+1]) of every head by position * inv_freq[i]."""
        angles = positions[:, None] * self.inv_freq[None, :]
        cos = np.cos(angles)[:, None, :]
        sin = np.sin(angles)[:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def _attention(self, x: np.ndarray, layer: dict, cache: dict, positions: np.ndarray):
        n, hd = x.shape[0], self.head_dim
        q = (x @ layer["attn_q"].T).reshape(n, self.n_heads, hd)
        k = (x @ layer["attn_k"].T).reshape(n, self.n_kv_heads, hd)
        v = (x @ layer["attn_v"].T).reshape(n, self.n_kv_heads, hd)
        q, k = self._rope(q, positions), self._rope(k, positions)
        if self.cache_dtype is not None:
            k, v = k.astype(self.cache_dtype).astype(q.dtype), v.astype(self.cache_dtype).astype(q.dtype)
        cache["k"] = k if cache.get("k") is None else np.concatenate([cache["k"], k])
        cache["v"] = v if cache.get("v") is None else np.concatenate([cache["v"], v])
        keys, values = cache["k"], cache["v"]
        # Query i (at absolute position positions[i]) sees cached keys 0..positions[i].
        visible = np.arange(keys.shape[0])[None, :] <= positions[:, None]
        group = self.n_heads // self.n_kv_heads
        out = np.empty_like(q)
        for h in range(self.n_heads):
            kv = h // group
            scores = (q[:, h, :] @ keys[:, kv, :].T) / math.sqrt(hd)
            scores = np.where(visible, scores, -np.inf)
            probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probs /= probs.sum(axis=-1, keepdims=True)
            out[:, h, :] = probs @ values[:, kv, :]
        return out.reshape(n, self.n_heads * hd) @ layer["attn_output"].T

    def _mlp(self, x: np.ndarray, layer: dict) -> np.ndarray:
        gate = x @ layer["ffn_gate"].T
        up = x @ layer["ffn_up"].T
        return (_silu(gate) * up) @ layer["ffn_down"].T

    def _forward(self, token_ids, caches: list) -> np.ndarray:
        """Runs new tokens after those already in caches (one dict per layer, updated in place);
        returns their logits [n, vocab]."""
        past = 0 if caches[0].get("k") is None else caches[0]["k"].shape[0]
        positions = np.arange(past, past + len(token_ids)).astype(self.inv_freq.dtype)
        x = self.weights["token_embd.weight"][np.asarray(token_ids)]
        for i, cache in enumerate(caches):
            layer = {name: self.weights[f"blk.{i}.{name}.weight"] for name in LAYER_TENSORS}
            x = x + self._attention(_rms_norm(x, layer["attn_norm"], self.eps), layer, cache, positions)
            x = x + self._mlp(_rms_norm(x, layer["ffn_norm"], self.eps), layer)
        x = _rms_norm(x, self.weights["output_norm.weight"], self.eps)
        return x @ self.output.T

    def _new_caches(self) -> list:
        return [{} for _ in range(self.n_layers)]

    def logits(self, token_ids) -> np.ndarray:
        """Logits [n, vocab] of every position of one causal pass over token_ids."""
        return self._forward(list(token_ids), self._new_caches())

    def greedy(self, token_ids, n_new: int) -> list:
        """The n_new tokens that argmax decoding appends to token_ids (a KV cache of its own)."""
        caches = self._new_caches()
        last = self._forward(list(token_ids), caches)[-1]
        generated = []
        for _ in range(n_new):
            generated.append(int(np.argmax(last)))
            last = self._forward(generated[-1:], caches)[-1]
        return generated

    def perplexity(self, tokens, ctx: int = 512) -> dict:
        """Splits tokens into consecutive non-overlapping windows of ctx tokens (an incomplete
        last window is dropped), scores every token after the first of each window given the
        ones before it in the window, and returns exp(mean negative log-likelihood)."""
        n_windows = len(tokens) // ctx
        if n_windows == 0:
            raise ValueError(f"{len(tokens)} tokens is fewer than one window of {ctx}")
        nll_sum = 0.0
        for w in range(n_windows):
            window = np.asarray(tokens[w * ctx:(w + 1) * ctx])
            log_probs = _log_softmax(self.logits(window)[:-1])
            nll_sum -= float(log_probs[np.arange(ctx - 1), window[1:]].sum())
        scored = n_windows * (ctx - 1)
        return {"ppl": math.exp(nll_sum / scored), "tokens_scored": scored, "ctx": ctx}
