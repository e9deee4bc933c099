# llama.py: the canonical description every converter source produces: Llama hyperparameters,
# tokenizer metadata and the tensors of FORMAT.md 4.1 in file order, each with a lazy loader.
# Tested through both sources by tests/test_convert.py.
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

from .errors import ConversionError

# Per-layer tensors of FORMAT.md 4.1, in the order the converter writes them.
LAYER_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                 "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")


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

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "int" and (isinstance(value, bool) or not isinstance(value, int)
                                        or value < 1):
                raise ConversionError(f"llama.{field.name}: expected a positive integer, "
                                      f"found {value!r}")
            if field.type == "float" and not value > 0:
                raise ConversionError(f"llama.{field.name}: expected a positive number, "
                                      f"found {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ConversionError(f"llama.n_kv_heads: expected a divisor of n_heads "
                                  f"{self.n_heads}, found {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ConversionError(f"llama.head_dim: expected an even number, found {self.head_dim}")

    def metadata(self) -> dict:
        return {f"llama.{field.name}": getattr(self, field.name) for field in fields(self)}

    def tensor_dims(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of FORMAT.md 4.1 with its dims, in file order."""
        d, f, q, kv = self.hidden_size, self.ffn_size, self.n_heads * self.head_dim, \
            self.n_kv_heads * self.head_dim
        layer_dims = {"attn_norm": (d,), "attn_q": (q, d), "attn_k": (kv, d), "attn_v": (kv, d),
                      "attn_output": (d, q), "ffn_norm": (d,), "ffn_gate": (f, d),
                      "ffn_up": (f, d), "ffn_down": (d, f)}
        dims = {"token_embd.weight": (self.vocab_size, d)}
        for i in range(self.n_layers):
            dims.update({f"blk.{i}.{name}.weight": layer_dims[name] for name in LAYER_TENSORS})
        dims["output_norm.weight"] = (d,)
        if not self.tie_word_embeddings:
            dims["output.weight"] = (self.vocab_size, d)
        return dims


@dataclass(frozen=True)
class SourceTensor:
    """One tensor of a checkpoint: its name and dims there, and a loader giving float32 data."""

    source_name: str
    dims: tuple[int, ...]
    load: Callable[[], np.ndarray]


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
            raise ConversionError(f"tensor {tensor.source_name}: dims expected {list(dims)}, "
                                  f"found {list(tensor.dims)}")
        selected.append((name, tensor))
    unexpected = sorted(available.keys() - {t.source_name for _, t in selected})
    if unexpected:
        raise ConversionError(f"tensor {unexpected[0]}: expected only the tensors of a llama "
                              f"model, found {len(unexpected)} unknown: {', '.join(unexpected[:8])}")
    return selected
