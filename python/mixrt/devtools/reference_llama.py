# reference_llama.py: an independent numpy implementation of the Llama-family forward pass, read
# straight from a GGUF file or a Hugging Face directory, used as the float64 ground truth for the
# runtime's logits, greedy output and perplexity (tests/test_forward_reference.py,
# tests/test_model_variants.py, tools/reference_perplexity.py). Besides plain Llama it follows the
# published definitions of the variants (transformers' modeling_rope_utils for the RoPE scalings
# linear, dynamic, yarn and llama3, llama.cpp's rope_freqs and yarn keys; q/k/v, output and MLP
# biases; Mistral's sliding window; Qwen2). It deliberately shares no code with the rest of mixrt:
# it imports numpy, gguf and safetensors only.
import json
import math
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import load_file

LAYER_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                 "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")
# Hugging Face names of the GGUF tensor names the reference uses.
HF_LAYER_NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                  "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                  "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                  "ffn_down": "mlp.down_proj"}
HF_GLOBAL_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


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


def _gguf_field(reader: GGUFReader, key: str, default):
    field = reader.get_field(key)
    return default if field is None else field.contents()


def inverse_frequencies(rope: dict, head_dim: int, theta: float, seq_len: int) -> tuple[np.ndarray, float]:
    """(inv_freq [head_dim/2] float64, the factor scaling cos and sin) of a RoPE variant for a
    forward pass over positions < seq_len. rope: {"type": default|linear|dynamic|yarn|llama3, its
    parameters, "freq_factors": per-pair divisors or None}, as transformers' modeling_rope_utils
    and llama.cpp define them."""
    pair = np.arange(head_dim // 2, dtype=np.float64)
    kind = rope.get("type", "default")
    if kind == "dynamic" and seq_len > rope["original"]:
        f = rope["factor"]
        theta = theta * ((f * seq_len / rope["original"]) - (f - 1)) ** (head_dim / (head_dim - 2))
    inv = theta ** (-2.0 * pair / head_dim)
    if rope.get("freq_factors") is not None:
        inv = inv / np.asarray(rope["freq_factors"], np.float64)
    if kind == "linear":
        return inv / rope["factor"], 1.0
    if kind == "llama3":
        f, low, high, old = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"], rope["original"]
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / low, inv / f, inv)
        smooth = (old / wavelen - low) / (high - low)
        medium = ~(wavelen < old / high) & ~(wavelen > old / low)
        return np.where(medium, (1 - smooth) * scaled / f + smooth * scaled, scaled), 1.0
    if kind == "yarn":
        def correction_dim(rotations):
            return head_dim * math.log(rope["original"] / (rotations * 2 * math.pi)) / (2 * math.log(theta))
        low = max(math.floor(correction_dim(rope["beta_fast"])), 0)
        high = min(math.ceil(correction_dim(rope["beta_slow"])), head_dim - 1)
        ramp = np.clip((pair - low) / ((high + 0.001 if high == low else high) - low), 0, 1)
        extrapolation = 1 - ramp
        return inv / rope["factor"] * (1 - extrapolation) + inv * extrapolation, rope["attention_factor"]
    return inv, 1.0


def _hf_rope(config: dict) -> dict:
    """The reference's rope dict from a config.json (rope_scaling or rope_parameters)."""
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    rope = {"type": kind, "factor": scaling.get("factor"), "freq_factors": None,
            "original": scaling.get("original_max_position_embeddings") or config["max_position_embeddings"]}
    if kind == "llama3":
        rope.update(low_freq_factor=scaling["low_freq_factor"], high_freq_factor=scaling["high_freq_factor"])
    if kind == "yarn":
        rope.update(beta_fast=scaling.get("beta_fast") or 32, beta_slow=scaling.get("beta_slow") or 1,
                    attention_factor=scaling.get("attention_factor") or 0.1 * math.log(scaling["factor"]) + 1)
    return rope


class ReferenceLlama:
    """Llama-family decoder over plain numpy arrays. config: n_layers, n_heads, n_kv_heads,
    head_dim, rope_theta, rms_norm_eps, and optionally rope (inverse_frequencies), sliding_window
    (0: none) and pairs: "adjacent" (GGUF llama files: each head's rotation pairs in adjacent rows
    (even, odd) of q/k) or "halves" (Hugging Face and GGUF qwen2: dimension i pairs with
    i + head_dim/2). weights: GGUF tensor names -> arrays, matrices [out, in], biases where the
    model has them. It computes in the dtype of the weights (float64 from from_gguf / from_hf)."""

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
        self.rope = config.get("rope") or {"type": "default"}
        self.sliding_window = config.get("sliding_window", 0)
        self.pairs = config.get("pairs", "adjacent")
        self.weights = weights
        self.output = weights.get("output.weight", weights["token_embd.weight"])
        self.dtype = weights["token_embd.weight"].dtype

    @classmethod
    def from_gguf(cls, path, cache_dtype=None) -> "ReferenceLlama":
        reader = GGUFReader(str(path))
        arch = _field(reader, "general.architecture")
        if arch not in ("llama", "qwen2"):
            raise ValueError(f"{path}: architecture {arch!r}, expected llama or qwen2")
        n_heads = int(_field(reader, f"{arch}.attention.head_count"))
        context = int(_field(reader, f"{arch}.context_length"))
        weights = {}
        for tensor in reader.tensors:
            values = dequantize(tensor.data, tensor.tensor_type)
            # GGUF lists dims fastest-varying first (ne0 = input width of a matrix).
            shape = tuple(int(n) for n in reversed(tensor.shape))
            weights[tensor.name] = values.reshape(shape).astype(np.float64)
        scaling = _gguf_field(reader, f"{arch}.rope.scaling.type", "none")
        factor = float(_gguf_field(reader, f"{arch}.rope.scaling.factor", 1.0))
        rope = {"type": {"none": "default"}.get(scaling, scaling), "factor": factor,
                "original": int(_gguf_field(reader, f"{arch}.rope.scaling.original_context_length", context)),
                "freq_factors": weights.pop("rope_freqs.weight", None),
                "beta_fast": float(_gguf_field(reader, f"{arch}.rope.scaling.yarn_beta_fast", 32.0)),
                "beta_slow": float(_gguf_field(reader, f"{arch}.rope.scaling.yarn_beta_slow", 1.0)),
                # llama.cpp: yarn's cos/sin scale is attn_factor x (1 + 0.1 ln factor)
                "attention_factor": float(_gguf_field(reader, f"{arch}.rope.scaling.attn_factor", 1.0))
                * (1 + 0.1 * math.log(factor))}
        config = {
            "n_layers": int(_field(reader, f"{arch}.block_count")),
            "n_heads": n_heads,
            "n_kv_heads": int(_field(reader, f"{arch}.attention.head_count_kv")),
            "head_dim": int(_gguf_field(reader, f"{arch}.attention.key_length",
                                        int(_field(reader, f"{arch}.embedding_length")) // n_heads)),
            "rope_theta": float(_field(reader, f"{arch}.rope.freq_base")),
            "rms_norm_eps": float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
            "rope": rope,
            "sliding_window": int(_gguf_field(reader, f"{arch}.attention.sliding_window", 0)),
            "pairs": "adjacent" if arch == "llama" else "halves",
        }
        return cls(config, weights, cache_dtype)

    @classmethod
    def from_hf(cls, directory, cache_dtype=None) -> "ReferenceLlama":
        """A Hugging Face checkpoint directory of a llama, mistral or qwen2 model (config.json,
        one model.safetensors)."""
        directory = Path(directory)
        hf = json.loads((directory / "config.json").read_text())
        if hf["model_type"] not in ("llama", "mistral", "qwen2"):
            raise ValueError(f"{directory}: model_type {hf['model_type']!r}, expected llama, mistral or qwen2")
        weights = {}
        for name, values in load_file(directory / "model.safetensors").items():
            stem, suffix = name.rsplit(".", 1)
            if stem.startswith("model.layers."):
                layer, role = stem[len("model.layers."):].split(".", 1)
                kind = {v: k for k, v in HF_LAYER_NAMES.items()}[role]
                weights[f"blk.{layer}.{kind}.{suffix}"] = values.astype(np.float64)
            else:
                weights[f"{HF_GLOBAL_NAMES[stem]}.{suffix}"] = values.astype(np.float64)
        n_heads = hf["num_attention_heads"]
        window = hf.get("sliding_window") or 0
        config = {
            "n_layers": hf["num_hidden_layers"], "n_heads": n_heads,
            "n_kv_heads": hf.get("num_key_value_heads", n_heads),
            "head_dim": hf.get("head_dim") or hf["hidden_size"] // n_heads,
            "rope_theta": float(hf.get("rope_theta", 10000.0)), "rms_norm_eps": hf["rms_norm_eps"],
            "rope": _hf_rope(hf),
            "sliding_window": window if hf["model_type"] == "mistral" or hf.get("use_sliding_window") else 0,
            "pairs": "halves",
        }
        return cls(config, weights, cache_dtype)

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Rotates each pair of every head by position * inv_freq[i] (and scales it as the variant
        says); the pairs are adjacent dimensions (2i, 2i+1) or dimensions (i, i + head_dim/2).
        inv_freq is that of a pass over positions < max(positions) + 1, as transformers computes
        it per forward call (only dynamic scaling depends on it)."""
        inv_freq, magnitude = inverse_frequencies(self.rope, self.head_dim, self.config["rope_theta"],
                                                  int(positions.max()) + 1)
        angles = positions.astype(np.float64)[:, None] * inv_freq[None, :]
        cos = (magnitude * np.cos(angles)).astype(self.dtype)[:, None, :]
        sin = (magnitude * np.sin(angles)).astype(self.dtype)[:, None, :]
        half = self.head_dim // 2
        if self.pairs == "adjacent":
            first, second = x[..., 0::2], x[..., 1::2]
        else:
            first, second = x[..., :half], x[..., half:]
        out = np.empty_like(x)
        rotated_first, rotated_second = first * cos - second * sin, first * sin + second * cos
        if self.pairs == "adjacent":
            out[..., 0::2], out[..., 1::2] = rotated_first, rotated_second
        else:
            out[..., :half], out[..., half:] = rotated_first, rotated_second
        return out

    def _linear(self, x: np.ndarray, layer: dict, kind: str) -> np.ndarray:
        y = x @ layer[kind].T
        bias = layer.get(kind + ".bias")
        return y if bias is None else y + bias

    def _attention(self, x: np.ndarray, layer: dict, cache: dict, positions: np.ndarray):
        n, hd = x.shape[0], self.head_dim
        q = self._linear(x, layer, "attn_q").reshape(n, self.n_heads, hd)
        k = self._linear(x, layer, "attn_k").reshape(n, self.n_kv_heads, hd)
        v = self._linear(x, layer, "attn_v").reshape(n, self.n_kv_heads, hd)
        q, k = self._rope(q, positions), self._rope(k, positions)
        if self.cache_dtype is not None:
            k, v = k.astype(self.cache_dtype).astype(q.dtype), v.astype(self.cache_dtype).astype(q.dtype)
        cache["k"] = k if cache.get("k") is None else np.concatenate([cache["k"], k])
        cache["v"] = v if cache.get("v") is None else np.concatenate([cache["v"], v])
        keys, values = cache["k"], cache["v"]
        # Query i (at absolute position positions[i]) sees cached keys 0..positions[i], only the
        # last sliding_window of them if the model has a window.
        key_positions = np.arange(keys.shape[0])[None, :]
        visible = key_positions <= positions[:, None]
        if self.sliding_window:
            visible &= positions[:, None] - key_positions < self.sliding_window
        group = self.n_heads // self.n_kv_heads
        out = np.empty_like(q)
        for h in range(self.n_heads):
            kv = h // group
            scores = (q[:, h, :] @ keys[:, kv, :].T) / math.sqrt(hd)
            scores = np.where(visible, scores, -np.inf)
            probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probs /= probs.sum(axis=-1, keepdims=True)
            out[:, h, :] = probs @ values[:, kv, :]
        return self._linear(out.reshape(n, self.n_heads * hd), layer, "attn_output")

    def _mlp(self, x: np.ndarray, layer: dict) -> np.ndarray:
        gate = self._linear(x, layer, "ffn_gate")
        up = self._linear(x, layer, "ffn_up")
        return self._linear(_silu(gate) * up, layer, "ffn_down")

    def _forward(self, token_ids, caches: list) -> np.ndarray:
        """Runs new tokens after those already in caches (one dict per layer, updated in place);
        returns their logits [n, vocab]."""
        past = 0 if caches[0].get("k") is None else caches[0]["k"].shape[0]
        positions = np.arange(past, past + len(token_ids))
        x = self.weights["token_embd.weight"][np.asarray(token_ids)]
        for i, cache in enumerate(caches):
            layer = {name: self.weights[f"blk.{i}.{name}.weight"] for name in LAYER_TENSORS}
            layer.update({name + ".bias": self.weights[f"blk.{i}.{name}.bias"] for name in LAYER_TENSORS
                          if f"blk.{i}.{name}.bias" in self.weights})
            x = x + self._attention(_rms_norm(x, layer["attn_norm"], self.eps), layer, cache, positions)
            x = x + self._mlp(_rms_norm(x, layer["ffn_norm"], self.eps), layer)
        x = _rms_norm(x, self.weights["output_norm.weight"], self.eps)
        return x @ self.output.T

    def _new_caches(self) -> list:
        return [{} for _ in range(self.n_layers)]

    def logits(self, token_ids) -> np.ndarray:
        """Logits [n, vocab] of every position of one causal pass over token_ids."""
        return self._forward(list(token_ids), self._new_caches())

    def logits_stepwise(self, token_ids) -> np.ndarray:
        """Logits [n, vocab] of every position, feeding one token per forward call (as decoding
        does; with dynamic RoPE scaling each token then rotates by its own sequence length)."""
        caches = self._new_caches()
        return np.concatenate([self._forward([token], caches) for token in token_ids])

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
