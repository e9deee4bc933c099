# calibration.py: second moments of the inputs of every decoder linear layer, collected by running
# the model itself through the runtime (set_capture of a Model.context()), for the calibrated
# quantizer (quant/gptq.py); and calibration windows, cut from a text or written by the model
# itself when no text is given. Tested by tests/test_gptq.py.
#
#   hessians = collect_hessians("model-f16.mixrt", text, n_tokens=8192)
#   H = hessians[(layer, SITE_OF["ffn_down"])]     # float64 [width, width] = sum x x^T / count
#
# The runtime calls the capture function during Context.feed with the float32 input rows of each
# linear layer: site 0 the input of attn_q/k/v, 1 of attn_output, 2 of ffn_gate/up, 3 of ffn_down.
from __future__ import annotations

import math
import time
from typing import Iterable, Optional

import numpy as np

# The capture sites of the runtime and the linear layers that read each one.
SITE_NAMES = ("attn_in", "attn_output_in", "ffn_in", "ffn_down_in")
SITE_OF = {"attn_q": 0, "attn_k": 0, "attn_v": 0, "attn_output": 1,
           "ffn_gate": 2, "ffn_up": 2, "ffn_down": 3}

# Default amount of calibration text: 32 windows of 512 tokens, spread over the text. Measured on
# SmolLM2-135M (2 cores, 2 runtime threads): the whole calibrated 2.9-bit conversion takes about
# 4 minutes. Perplexity after GPTQ (wikitext eval half, 16384 tokens, f16 28.14): 8192
# calibration tokens 55.5, 16384 54.0, 32768 53.4. Text the model writes itself adds its decode
# time: the whole conversion takes 292 s with 16384 such tokens, 145 s with 8192 (2-core Intel Xeon).
DEFAULT_CALIB_TOKENS = 16384
DEFAULT_CALIB_CTX = 512

# Sampling of self-generated calibration text (self_generated_windows). Measured on SmolLM2 at
# 2.9 bits (perplexity on the wikitext eval half / tiny Shakespeare, 16384 tokens each; f16 28.1 /
# 46.0), 8192 calibration tokens: plain sampling from the end-of-text token 94.5 / 111.9; random
# first words, temperature 1, repeat penalty 1.1: 75.7 / 103.8 (16384 tokens: 71.9 / 96.0); for
# comparison, Python's reference documentation (pydoc topics) 112.6 / 136.8, and the wikitext
# calibration half, in the domain of the first text, 55.8 / 99.5. Mixed domains, with the allocation
# by measured KL (perplexity ratios to f16 on the same two texts, 16384 calibration tokens): the
# wikitext half alone 1.734 / 1.935, the model's own text alone 2.237 / 1.862, half of each 1.911 /
# 1.873: mixing trades the calibration text's own domain for unseen ones, so a given text is used
# alone.
SELF_TEMPERATURE = 1.0
SELF_REPEAT_PENALTY = 1.1


class Hessians(dict):
    """dict (layer, site) -> float64 [width, width], the mean of x x^T over the captured rows,
    plus `counts` (layer, site) -> rows captured, `col_max` (layer, site) -> float32 [width], the
    largest |x| of each input column, `n_tokens` fed, `seconds` taken."""

    counts: dict
    col_max: dict
    n_tokens: int
    seconds: float

    def for_tensor(self, name: str) -> np.ndarray:
        """The matrix for a tensor named like 'blk.3.ffn_down.weight'."""
        layer, site = tensor_site(name)
        return self[(layer, site)]


def tensor_site(name: str) -> tuple[int, int]:
    """(layer, site) of a decoder linear weight 'blk.<i>.<kind>.weight'; KeyError otherwise."""
    parts = name.split(".")
    if len(parts) != 4 or parts[0] != "blk" or parts[3] != "weight" or parts[2] not in SITE_OF:
        raise KeyError(f"{name}: not a decoder linear weight")
    return int(parts[1]), SITE_OF[parts[2]]


def calibration_windows(tokens: list, n_tokens: int, ctx: int) -> list:
    """Non-overlapping windows of ctx tokens, n_tokens // ctx of them (at least one), spread
    evenly over the whole text (every window whole when the text is long enough)."""
    if ctx < 1:
        raise ValueError(f"ctx must be >= 1, got {ctx}")
    available = len(tokens) // ctx
    wanted = max(1, n_tokens // ctx)
    if available == 0:
        return [list(tokens)] if tokens else []
    if wanted >= available:
        return [tokens[i * ctx:(i + 1) * ctx] for i in range(available)]
    starts = np.linspace(0, available - 1, wanted).round().astype(int)
    return [tokens[s * ctx:(s + 1) * ctx] for s in starts]


def self_generated_windows(model, n_tokens: int, ctx: int, seed: int = 0, progress: bool = True) -> list:
    """Calibration windows the model writes itself, for models converted without a calibration
    text: sequences of up to ctx tokens until n_tokens, each starting from a word of the
    vocabulary drawn at random (as LLM-QAT, arXiv 2305.17888, starts its data-free samples) and
    sampled at temperature SELF_TEMPERATURE with repetitions penalised (SELF_REPEAT_PENALTY),
    which keeps small models out of loops. model: a loaded mixrt.Model."""
    rng = np.random.default_rng(seed)
    words = [text.strip() for text in (model.detokenize([i]) for i in range(model.n_vocab))
             if len(text.strip()) >= 3 and text.strip().isalpha() and text.strip().isascii()]
    if not words:
        raise ValueError("the vocabulary has no word tokens to start calibration text from")
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_tokens, unit="tok", desc="calibration text")
    windows, total = [], 0
    try:
        while total < n_tokens:
            prompt = model.tokenize(words[rng.integers(len(words))].capitalize(), add_bos=False)[:ctx - 1]
            budget = min(ctx, n_tokens - total + len(prompt)) - len(prompt)
            out = model.generate_ids(prompt, max(1, budget), temperature=SELF_TEMPERATURE,
                                     repeat_penalty=SELF_REPEAT_PENALTY, seed=int(rng.integers(2**63)))
            windows.append(prompt + out)
            total += len(prompt) + len(out)
            if bar is not None:
                bar.update(len(prompt) + len(out))
    finally:
        if bar is not None:
            bar.close()
    return windows


def collect_hessians(model_path, text: Optional[str] = None, n_tokens: int = DEFAULT_CALIB_TOKENS,
                     ctx: int = DEFAULT_CALIB_CTX, threads: Optional[int] = None,
                     progress: bool = True, layers: Optional[Iterable[int]] = None,
                     model=None, windows: Optional[list] = None) -> Hessians:
    """Runs the model at model_path (any .mixrt the runtime loads, normally the f16
    conversion) over about n_tokens tokens of text (tokenized whole, no BOS, in windows of ctx
    tokens spread over the text), or over the given windows of token ids, the KV cache reset
    between windows, and returns the Gram matrix sum x x^T / count of the inputs of every decoder
    linear layer, keyed (layer, site) with the sites of SITE_OF. layers: only these layers
    (memory: 8 bytes x (3 d^2 + f^2) per layer). model: an already loaded mixrt.Model to use
    instead of loading model_path."""
    import mixrt

    start = time.perf_counter()
    if model is None:
        # Capture runs on the CPU only; an f32 KV cache keeps the layer inputs those of the numpy
        # decoder of sequential calibration (LayerStack), which does not round keys and values.
        model = mixrt.load(model_path, threads=threads, n_ctx=ctx, backend="cpu", kv_cache="f32")
    if ctx > model.n_ctx:
        raise ValueError(f"ctx {ctx} exceeds the context of {model.n_ctx} tokens")
    wanted_layers = None if layers is None else set(int(i) for i in layers)
    if windows is None:
        tokens = model.tokenize(text, add_bos=False, special=False)
        windows = calibration_windows(tokens, n_tokens, ctx)
    if not windows:
        raise ValueError("the calibration text has no tokens")

    sums: dict = {}
    counts: dict = {}
    pending: list = []

    def capture(layer, site, x):
        # x is valid only during this call. Copy it (cheap) and form the Gram matrices after the
        # feed: BLAS threads started inside the callback would fight the runtime's own threads
        # (measured: 2x slower calibration).
        if wanted_layers is None or layer in wanted_layers:
            pending.append(((int(layer), int(site)), np.array(x, dtype=np.float32)))

    col_max: dict = {}

    def accumulate():
        for key, x in pending:
            top = np.abs(x).max(axis=0)
            col_max[key] = np.maximum(col_max[key], top) if key in col_max else top
            gram = x.T @ x  # float32 BLAS (syrk)
            acc = sums.get(key)
            if acc is None:
                sums[key] = gram.astype(np.float64)
                counts[key] = x.shape[0]
            else:
                acc += gram
                counts[key] += x.shape[0]
        pending.clear()

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(len(w) for w in windows), unit="tok", desc="calibration")
    with model.context() as context:
        try:
            context.set_capture(capture)
            for window in windows:
                context.reset()
                context.feed(list(window), False)
                accumulate()
                if bar is not None:
                    bar.update(len(window))
        finally:
            context.set_capture(None)
            pending.clear()
            if bar is not None:
                bar.close()

    out = Hessians()
    for key in sorted(sums):
        gram = sums.pop(key)
        gram /= counts[key]
        # exact symmetry (float32 BLAS may round the two halves differently)
        out[key] = 0.5 * (gram + gram.T)
    out.counts = counts
    out.col_max = col_max
    out.n_tokens = sum(len(w) for w in windows)
    out.seconds = time.perf_counter() - start
    return out


# ---- sequential calibration: the decoder stack in numpy -----------------------------------------

def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    scale = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32) + eps)
    return (x * scale * weight).astype(np.float32)


def rope_tables(hparams: dict, ctx: int) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) [ctx, head_dim/2] float32 of a model's RoPE (llama.* metadata, FORMAT.md 3.1 and
    3.3), computed by the runtime's own code (cpp/src/rope.cpp)."""
    from .._internal import rope_tables as core_rope_tables

    def get(key, default):
        return hparams.get(f"llama.rope.{key}", default)

    return core_rope_tables(ctx, int(hparams["llama.head_dim"]), float(hparams["llama.rope_theta"]),
                            str(get("scaling_type", "none")), float(get("scaling_factor", 1.0)),
                            int(get("original_context_length", 0)), float(get("low_freq_factor", 0.0)),
                            float(get("high_freq_factor", 0.0)), float(get("beta_fast", 0.0)),
                            float(get("beta_slow", 0.0)), float(get("attention_factor", 1.0)),
                            [float(f) for f in get("freq_factors", [])])


def causal_mask(ctx: int, sliding_window: int = 0) -> np.ndarray:
    """[ctx, ctx] float32: 0 where query t sees key s (s <= t, and t - s < sliding_window if one is
    set), -inf elsewhere."""
    t, s = np.arange(ctx)[:, None], np.arange(ctx)[None, :]
    visible = (s <= t) & ((t - s < sliding_window) if sliding_window else True)
    return np.where(visible, np.float32(0), np.float32(-np.inf)).astype(np.float32)


def layer_biases(hparams: dict, load, layer: int) -> dict:
    """kind -> the float32 bias of that linear layer, or 0.0 where the model has none
    (llama.bias.* of FORMAT.md 3.3)."""
    from ..convert.llama import BIAS_GROUPS

    biases = dict.fromkeys((kind for kinds in BIAS_GROUPS.values() for kind in kinds), 0.0)
    for group, kinds in BIAS_GROUPS.items():
        if hparams.get(f"llama.bias.{group}"):
            biases.update({kind: np.asarray(load(f"blk.{layer}.{kind}.bias"), np.float32) for kind in kinds})
    return biases


class LayerStack:
    """The decoder of a Llama model run in numpy float32 over calibration windows, one layer at a
    time, so that each layer's inputs can come from the layers before it *as quantized*
    (sequential GPTQ). It follows FORMAT.md (RMSNorm, rotate-half RoPE with its scaling, grouped-query
    causal attention within the sliding window if any, SwiGLU, biases) and is checked against the runtime's captured inputs in the tests.

        stack = LayerStack(hparams, embed, windows)      # hparams: the llama.* metadata
        for layer in range(n_layers):
            H = stack.gram(stack.attn_input(attn_norm))   # then quantize q, k, v
            ...
    The intended driver is run_layer_stack() below.
    """

    def __init__(self, hparams: dict, token_embd: np.ndarray, windows: list):
        self.n_heads = int(hparams["llama.n_heads"])
        self.n_kv_heads = int(hparams["llama.n_kv_heads"])
        self.head_dim = int(hparams["llama.head_dim"])
        self.eps = float(hparams["llama.rms_norm_eps"])
        lengths = {len(w) for w in windows}
        if len(lengths) != 1:
            raise ValueError("LayerStack: expected windows of one length")
        self.ctx = lengths.pop()
        cos, sin = rope_tables(hparams, self.ctx)
        self.cos = cos[:, None, :]  # [T, 1, half]
        self.sin = sin[:, None, :]
        ids = np.asarray(windows, dtype=np.int64)
        self.x = np.asarray(token_embd, np.float32)[ids]  # residual stream [W, T, d]
        self.mask = causal_mask(self.ctx, int(hparams.get("llama.sliding_window", 0)))

    @property
    def n_tokens(self) -> int:
        return self.x.shape[0] * self.x.shape[1]

    @staticmethod
    def gram(x: np.ndarray) -> np.ndarray:
        """Mean x x^T over all rows of x [..., width], float64."""
        rows = x.reshape(-1, x.shape[-1])
        g = (rows.T @ rows).astype(np.float64) / rows.shape[0]
        return 0.5 * (g + g.T)

    def norm(self, weight: np.ndarray) -> np.ndarray:
        return _rms_norm(self.x, np.asarray(weight, np.float32), self.eps)

    def _rope(self, t: np.ndarray) -> np.ndarray:
        half = self.head_dim // 2
        a, b = t[..., :half], t[..., half:]
        return np.concatenate([a * self.cos - b * self.sin, a * self.sin + b * self.cos], axis=-1)

    def attention(self, xn: np.ndarray, wq: np.ndarray, wk: np.ndarray,
                  wv: np.ndarray, bq=0.0, bk=0.0, bv=0.0) -> np.ndarray:
        """The input of attn_output [W, T, n_heads x head_dim] for normed inputs xn (b*: the
        q/k/v biases, if the model has them)."""
        hd, nh, nkv = self.head_dim, self.n_heads, self.n_kv_heads
        group = nh // nkv
        out = np.empty((xn.shape[0], self.ctx, nh * hd), np.float32)
        scale = np.float32(1.0 / math.sqrt(hd))
        for w, x in enumerate(xn):
            q = self._rope((x @ wq.T + bq).reshape(self.ctx, nh, hd))
            k = self._rope((x @ wk.T + bk).reshape(self.ctx, nkv, hd))
            v = (x @ wv.T + bv).reshape(self.ctx, nkv, hd)
            q = q.transpose(1, 0, 2).reshape(nkv, group * self.ctx, hd)
            scores = (q @ k.transpose(1, 2, 0)).reshape(nkv, group, self.ctx, self.ctx)
            scores = scores * scale + self.mask
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            o = scores.reshape(nkv, group * self.ctx, self.ctx) @ v.transpose(1, 0, 2)
            out[w] = o.reshape(nh, self.ctx, hd).transpose(1, 0, 2).reshape(self.ctx, nh * hd)
        return out

    @staticmethod
    def swiglu(xn: np.ndarray, w_gate: np.ndarray, w_up: np.ndarray, b_gate=0.0, b_up=0.0) -> np.ndarray:
        g = xn @ w_gate.T + b_gate
        return (g / (1.0 + np.exp(-g)) * (xn @ w_up.T + b_up)).astype(np.float32)

    def add(self, y: np.ndarray) -> None:
        self.x += y


def run_layer_stack(hparams: dict, load, windows: list, quantize, sequential: bool = True,
                    progress: bool = False) -> None:
    """Runs the decoder over the calibration windows layer by layer and calls
    quantize(name, W, H) -> W' (float32, the dequantized result) for every decoder linear weight,
    in file order, with H the mean x x^T of that weight's inputs. load(name) gives the float32
    weights (embedding, norms, linear layers) of the original model. sequential=True continues the
    stack with W' (each layer calibrated on the outputs of the quantized layers before it, and
    within a layer attn_output, gate/up and down after the weights before them); False with the
    original W (the same Hessians as collect_hessians, up to float32 rounding)."""
    n_layers = int(hparams["llama.n_layers"])
    stack = LayerStack(hparams, load("token_embd.weight"), windows)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_layers, unit="layer", desc="GPTQ")

    def take(name: str, h: np.ndarray) -> np.ndarray:
        w = np.asarray(load(name), np.float32)
        w_q = np.asarray(quantize(name, w, h), np.float32)
        return w_q if sequential else w

    for layer in range(n_layers):
        p = f"blk.{layer}."
        b = layer_biases(hparams, load, layer)
        xn = stack.norm(load(p + "attn_norm.weight"))
        h = stack.gram(xn)
        wq, wk, wv = (take(p + kind + ".weight", h) for kind in ("attn_q", "attn_k", "attn_v"))
        a = stack.attention(xn, wq, wk, wv, b["attn_q"], b["attn_k"], b["attn_v"])
        wo = take(p + "attn_output.weight", stack.gram(a))
        stack.add(a @ wo.T + b["attn_output"])
        xn = stack.norm(load(p + "ffn_norm.weight"))
        h = stack.gram(xn)
        wg, wu = (take(p + kind + ".weight", h) for kind in ("ffn_gate", "ffn_up"))
        act = stack.swiglu(xn, wg, wu, b["ffn_gate"], b["ffn_up"])
        wd = take(p + "ffn_down.weight", stack.gram(act))
        stack.add(act @ wd.T + b["ffn_down"])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
