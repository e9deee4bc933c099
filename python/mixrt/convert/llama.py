# llama.py: the canonical description every converter source produces: Llama hyperparameters
# (with the variants of FORMAT.md 3.3: RoPE scaling, biases, sliding window), tokenizer metadata
# and the tensors of FORMAT.md 4.1 in file order, each with a lazy loader and its file. Tested through
# both sources by tests/test_convert.py, tests/test_convert_damaged.py and tests/test_model_variants.py.
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .errors import ConversionError

# Per-layer tensors of FORMAT.md 4.1, in the order the converter writes them.
LAYER_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                 "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")
# The matrices whose bias each llama.bias.* key of FORMAT.md 3.3 adds.
BIAS_GROUPS = {"qkv": ("attn_q", "attn_k", "attn_v"), "attn_output": ("attn_output",),
               "mlp": ("ffn_gate", "ffn_up", "ffn_down")}
ROPE_SCALING_TYPES = ("linear", "dynamic", "yarn", "llama3")
# Defaults of the yarn parameters (the YaRN paper's, as transformers and llama.cpp use them).
YARN_BETA_FAST, YARN_BETA_SLOW = 32.0, 1.0


@dataclass(frozen=True)
class RopeScaling:
    """A RoPE scaling variant of FORMAT.md 3.3 with its parameters (the ones it does not use are
    None): linear, dynamic (NTK), yarn or llama3."""

    type: str
    factor: float
    original_context_length: Optional[int] = None  # dynamic, yarn, llama3
    low_freq_factor: Optional[float] = None  # llama3
    high_freq_factor: Optional[float] = None  # llama3
    beta_fast: Optional[float] = None  # yarn
    beta_slow: Optional[float] = None  # yarn
    attention_factor: Optional[float] = None  # yarn

    def __post_init__(self):
        if self.type not in ROPE_SCALING_TYPES:
            raise ConversionError(f"rope scaling type: expected one of {', '.join(ROPE_SCALING_TYPES)}, "
                                  f"found {self.type!r}")
        needed = {"linear": (), "dynamic": ("original_context_length",),
                  "yarn": ("original_context_length", "beta_fast", "beta_slow", "attention_factor"),
                  "llama3": ("original_context_length", "low_freq_factor", "high_freq_factor")}[self.type]
        for name in ("factor", *needed):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                    or value == float("inf"):
                raise ConversionError(f"rope scaling ({self.type}) {name}: expected a positive number, "
                                      f"found {value!r:.80}")
        original = self.original_context_length
        if original is not None and not (isinstance(original, int) and original <= LIMITS["context_length"]):
            raise ConversionError(f"rope scaling ({self.type}) original_context_length: expected an integer "
                                  f"in 1..{LIMITS['context_length']}, found {original!r:.80}")
        if self.type == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise ConversionError(f"rope scaling (llama3) high_freq_factor: expected more than "
                                  f"low_freq_factor {self.low_freq_factor}, found {self.high_freq_factor}")
        if self.type == "yarn" and not self.beta_fast > self.beta_slow:
            raise ConversionError(f"rope scaling (yarn) beta_fast: expected more than beta_slow "
                                  f"{self.beta_slow}, found {self.beta_fast}")

    def metadata(self) -> dict:
        meta = {"llama.rope.scaling_type": self.type, "llama.rope.scaling_factor": float(self.factor)}
        for name in ("original_context_length", "low_freq_factor", "high_freq_factor", "beta_fast",
                     "beta_slow", "attention_factor"):
            value = getattr(self, name)
            if value is not None:
                meta[f"llama.rope.{name}"] = int(value) if name == "original_context_length" else float(value)
        return meta


def extended_context_length(context_length: int, rope_scaling: RopeScaling | None) -> int:
    """The context a model runs at (llama.context_length): the advertised one, or for dynamic and
    yarn scaling, whose configs state the original context, factor x original if longer (linear
    and llama3 configs already advertise the extended length)."""
    if rope_scaling is None or rope_scaling.type not in ("dynamic", "yarn"):
        return context_length
    extended = rope_scaling.factor * rope_scaling.original_context_length
    if not extended <= LIMITS["context_length"]:  # checked as a float: it may be infinite
        raise ConversionError(f"llama.context_length: expected an integer in 1..{LIMITS['context_length']}, "
                              f"found rope scaling ({rope_scaling.type}) factor {rope_scaling.factor} x "
                              f"original_context_length {rope_scaling.original_context_length}")
    return max(context_length, int(extended))


# The ranges of FORMAT.md 3.1 a reader enforces (checked before anything is built per layer).
LIMITS = {"vocab_size": 1 << 20, "hidden_size": 65536, "n_layers": 1024, "n_heads": 1024, "n_kv_heads": 1024,
          "head_dim": 1024, "ffn_size": 262144, "context_length": 1 << 22}
MAX_SLIDING_WINDOW = 1 << 22  # llama.sliding_window, FORMAT.md 3.3 (the reader's range)


@dataclass(frozen=True)
class LlamaHyperparameters:
    """The llama.* keys of FORMAT.md 3.1, checked against the ranges a reader enforces."""

    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_size: int
    context_length: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    # The variants of FORMAT.md 3.3 (absent from a plain Llama's file):
    rope_scaling: Optional[RopeScaling] = None
    rope_freq_factors: Optional[tuple] = None  # head_dim/2 divisors of the pair frequencies (GGUF rope_freqs)
    biases: frozenset = field(default_factory=frozenset)  # keys of BIAS_GROUPS
    sliding_window: int = 0  # 0: every earlier position is visible

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in LIMITS and (isinstance(value, bool) or not isinstance(value, int)
                                         or not 1 <= value <= LIMITS[field.name]):
                raise ConversionError(f"llama.{field.name}: expected an integer in 1..{LIMITS[field.name]}, "
                                      f"found {value!r}")
            if field.type == "float" and not (value > 0 and math.isfinite(value)):
                raise ConversionError(f"llama.{field.name}: expected a positive finite number, "
                                      f"found {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ConversionError(f"llama.n_kv_heads: expected a divisor of n_heads "
                                  f"{self.n_heads}, found {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ConversionError(f"llama.head_dim: expected an even number, found {self.head_dim}")
        if isinstance(self.sliding_window, bool) or not isinstance(self.sliding_window, int) \
                or not 0 <= self.sliding_window <= MAX_SLIDING_WINDOW:
            raise ConversionError(f"llama.sliding_window: expected an integer in 0..{MAX_SLIDING_WINDOW}, "
                                  f"found {self.sliding_window!r}")
        unknown = set(self.biases) - BIAS_GROUPS.keys()
        if unknown:
            raise ConversionError(f"llama.bias: expected groups among {', '.join(BIAS_GROUPS)}, "
                                  f"found {', '.join(sorted(unknown))}")
        factors = self.rope_freq_factors
        if factors is not None and (len(factors) != self.head_dim // 2
                                    or not all(0 < f < float("inf") for f in factors)):
            raise ConversionError(f"llama.rope.freq_factors: expected head_dim/2 = {self.head_dim // 2} "
                                  f"positive finite values, found {len(factors)} "
                                  f"(min {min(factors, default=0)})")

    def metadata(self) -> dict:
        """The llama.* keys of FORMAT.md 3.1, and those of 3.3 where the model uses them."""
        variant_fields = ("rope_scaling", "rope_freq_factors", "biases", "sliding_window")
        meta = {f"llama.{f.name}": getattr(self, f.name) for f in fields(self) if f.name not in variant_fields}
        if self.rope_scaling is not None:
            meta.update(self.rope_scaling.metadata())
        if self.rope_freq_factors is not None:
            meta["llama.rope.freq_factors"] = np.asarray(self.rope_freq_factors, np.float32)
        for group in BIAS_GROUPS:
            if group in self.biases:
                meta[f"llama.bias.{group}"] = 1
        if self.sliding_window:
            meta["llama.sliding_window"] = self.sliding_window
        return meta

    def has_bias(self, kind: str) -> bool:
        return any(kind in BIAS_GROUPS[group] for group in self.biases)

    def tensor_dims(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of FORMAT.md 4.1 with its dims, in file order."""
        d, f, q, kv = self.hidden_size, self.ffn_size, self.n_heads * self.head_dim, \
            self.n_kv_heads * self.head_dim
        layer_dims = {"attn_norm": (d,), "attn_q": (q, d), "attn_k": (kv, d), "attn_v": (kv, d),
                      "attn_output": (d, q), "ffn_norm": (d,), "ffn_gate": (f, d),
                      "ffn_up": (f, d), "ffn_down": (d, f)}
        dims = {"token_embd.weight": (self.vocab_size, d)}
        for i in range(self.n_layers):
            for name in LAYER_TENSORS:
                dims[f"blk.{i}.{name}.weight"] = layer_dims[name]
                if self.has_bias(name):
                    dims[f"blk.{i}.{name}.bias"] = layer_dims[name][:1]
        dims["output_norm.weight"] = (d,)
        if not self.tie_word_embeddings:
            dims["output.weight"] = (self.vocab_size, d)
        return dims


@dataclass(frozen=True)
class SourceTensor:
    """One tensor of a checkpoint: its name and dims there, a loader giving float32 data, and the
    file that holds it (named in refusals)."""

    source_name: str
    dims: tuple[int, ...]
    load: Callable[[], np.ndarray]
    file: Optional[Path] = None


@dataclass(frozen=True)
class ModelSource:
    """A checkpoint ready to be written: everything but the tensor data is in memory."""

    source: str  # the mixrt.source value, "gguf:<file name>" or "hf:<dir name>"
    name: str  # general.name
    hparams: LlamaHyperparameters
    tokenizer: dict  # tokenizer.* metadata keys
    tensors: list[tuple[str, SourceTensor]]  # canonical name and tensor, in file order

    def __post_init__(self):
        n_tokens = len(self.tokenizer["tokenizer.tokens"])
        if n_tokens != self.hparams.vocab_size:
            raise ConversionError(f"tokenizer.tokens: expected vocab_size "
                                  f"{self.hparams.vocab_size} entries, found {n_tokens}")


def select_tensors(hparams: LlamaHyperparameters, available: dict[str, SourceTensor],
                   source_name_of: Callable[[str], str]) -> list[tuple[str, SourceTensor]]:
    """Picks the tensors of FORMAT.md 4.1 from a checkpoint's tensors (keyed by their names
    there), refusing missing, misshapen and unexpected ones."""
    selected = []
    for name, dims in hparams.tensor_dims().items():
        tensor = available.get(source_name_of(name))
        if tensor is None:
            raise ConversionError(f"tensor {source_name_of(name)}: expected in the checkpoint "
                                  f"(mixrt {name}, dims {list(dims)}), found missing")
        if tensor.dims != dims:
            where = f"{tensor.file}: " if tensor.file else ""
            raise ConversionError(f"{where}tensor {tensor.source_name}: dims expected {list(dims)}, "
                                  f"found {list(tensor.dims)}")
        selected.append((name, tensor))
    unexpected = sorted(available.keys() - {t.source_name for _, t in selected})
    if unexpected:
        raise ConversionError(f"tensor {unexpected[0]:.80}: expected only the tensors of a llama "
                              f"model, found {len(unexpected)} unknown: {', '.join(unexpected[:8]):.200}")
    return selected
