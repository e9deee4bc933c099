# gguf_source.py: reads a llama GGUF file (gguf package) as the converter's canonical description:
# hyperparameters from llama.* keys, tensors dequantized to float32 with the attn_q/attn_k rows
# taken back from GGUF's interleaved RoPE order to rotate-half. A file without the GGUF magic, or
# one the reader cannot parse or whose tensor data is cut short, is refused in one line.
# Tested by tests/test_convert.py.
from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

from .errors import ConversionError
from .llama import LlamaHyperparameters, ModelSource, SourceTensor, select_tensors
from .tokenizer_export import tokenizer_metadata_from_gguf

MAGIC = b"GGUF"
_INTEGER_TYPES = ("I8", "I16", "I32", "I64")  # not weights


def _decodable(kind: GGMLQuantizationType) -> bool:
    """Whether the installed gguf package dequantizes this type (newer versions know more: the
    k-quants, i-quants, ternary and MXFP4 types of llama.cpp's files)."""
    block, block_bytes = GGML_QUANT_SIZES[kind]
    try:
        dequantize(np.zeros((1, block_bytes), np.uint8), kind)
    except (NotImplementedError, ValueError, KeyError):
        return False
    return True


# Every weight type the installed gguf package can dequantize to float32.
SUPPORTED_TYPES = tuple(kind for kind in GGMLQuantizationType
                        if kind.name not in _INTEGER_TYPES and kind in GGML_QUANT_SIZES and _decodable(kind))
_REQUIRED = object()


def _field(reader: GGUFReader, key: str, kind: type, default=_REQUIRED):
    """A scalar metadata value of the expected Python kind (int, float or str)."""
    field = reader.get_field(key)
    if field is None:
        if default is _REQUIRED:
            raise ConversionError(f"GGUF key {key}: expected a {kind.__name__}, found missing")
        return default
    value = field.contents()
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConversionError(f"GGUF key {key}: expected a {kind.__name__}, found {value!r}")
    return value


def _hyperparameters(reader: GGUFReader, token_embd_rows: int | None,
                     tied: bool) -> LlamaHyperparameters:
    architecture = _field(reader, "general.architecture", str)
    if architecture != "llama":
        raise ConversionError(f"GGUF key general.architecture: expected 'llama', "
                              f"found {architecture!r}")
    scaling = _field(reader, "llama.rope.scaling.type", str, "none")
    if scaling != "none":
        raise ConversionError(f"GGUF key llama.rope.scaling.type: expected 'none' (RoPE scaling "
                              f"is not supported), found {scaling!r}")
    experts = _field(reader, "llama.expert_count", int, 0)
    if experts:
        raise ConversionError(f"GGUF key llama.expert_count: expected 0 (mixture of experts is "
                              f"not supported), found {experts}")
    hidden = _field(reader, "llama.embedding_length", int)
    heads = _field(reader, "llama.attention.head_count", int)
    if reader.get_field("llama.attention.key_length") is None and hidden % heads:
        raise ConversionError(f"GGUF key llama.embedding_length: expected a multiple of "
                              f"llama.attention.head_count {heads}, found {hidden}")
    head_dim = _field(reader, "llama.attention.key_length", int, hidden // heads)
    for key in ("llama.attention.value_length", "llama.rope.dimension_count"):
        value = _field(reader, key, int, head_dim)
        if value != head_dim:
            raise ConversionError(f"GGUF key {key}: expected the head dim {head_dim}, "
                                  f"found {value}")
    return LlamaHyperparameters(
        vocab_size=_field(reader, "llama.vocab_size", int, token_embd_rows),
        hidden_size=hidden,
        n_layers=_field(reader, "llama.block_count", int),
        n_heads=heads,
        n_kv_heads=_field(reader, "llama.attention.head_count_kv", int, heads),
        head_dim=head_dim,
        ffn_size=_field(reader, "llama.feed_forward_length", int),
        context_length=_field(reader, "llama.context_length", int),
        rope_theta=_field(reader, "llama.rope.freq_base", float, 10000.0),
        rms_norm_eps=_field(reader, "llama.attention.layer_norm_rms_epsilon", float),
        tie_word_embeddings=tied,
    )


def unpermute_rope_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undoes the row permutation GGUF converters apply to attn_q/attn_k: within each head they
    store rotation pair i as adjacent rows (2i, 2i+1); mixrt wants rows i and i + head_dim/2."""
    rows, cols = weight.shape
    return (weight.reshape(n_heads, rows // n_heads // 2, 2, cols)
            .swapaxes(1, 2).reshape(rows, cols))


def _loader(path: Path, tensor, dims: tuple[int, ...], rope_heads: int | None):
    """Reads one tensor's bytes from the file (not through the reader's map, so that pages of
    tensors already converted do not stay resident) and dequantizes them to float32."""
    def load() -> np.ndarray:
        raw = np.fromfile(path, dtype=np.uint8, count=tensor.n_bytes, offset=tensor.data_offset)
        if raw.size != tensor.n_bytes:  # the file was cut after the reader checked it
            raise _corrupt(path, f"tensor {tensor.name} expected {tensor.n_bytes} bytes of data "
                                 f"at offset {tensor.data_offset}, found {raw.size}")
        raw = raw.view(tensor.data.dtype).reshape(tensor.data.shape)
        weight = dequantize(raw, tensor.tensor_type).astype(np.float32, copy=False).reshape(dims)
        return weight if rope_heads is None else unpermute_rope_rows(weight, rope_heads)
    return load


def _corrupt(path: Path, what: str) -> ConversionError:
    return ConversionError(f"truncated/corrupt GGUF: {path}: {what}")


def open_gguf(path: Path) -> ModelSource:
    with open(path, "rb") as stream:
        magic = stream.read(len(MAGIC))
    if magic != MAGIC:
        raise ConversionError(f"not a GGUF file (magic expected {MAGIC!r}, found {magic!r}): "
                              f"{path}")
    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, KeyError) as error:
        # How the reader meets bytes it cannot parse: IndexError or a numpy ValueError where the
        # file ends early (tensor data included), ValueError for unknown versions, value types
        # and bad UTF-8, KeyError for a duplicate key.
        raise _corrupt(path, f"the gguf reader fails on its {path.stat().st_size} bytes "
                             f"({type(error).__name__}: {error})") from error
    by_name = {t.name: t for t in reader.tensors}
    embd = by_name.get("token_embd.weight")
    hparams = _hyperparameters(reader, int(embd.shape[-1]) if embd is not None else None,
                               tied="output.weight" not in by_name)
    rope_heads = {"attn_q": hparams.n_heads, "attn_k": hparams.n_kv_heads}
    available = {}
    for name, tensor in by_name.items():
        if name.endswith(".bias"):
            raise ConversionError(f"tensor {name}: expected no bias tensors (llama has none), "
                                  f"found one")
        if name == "rope_freqs.weight":
            raise ConversionError(f"tensor {name}: expected no RoPE frequency factors (RoPE "
                                  f"scaling is not supported), found one")
        if tensor.tensor_type not in SUPPORTED_TYPES:
            raise ConversionError(
                f"tensor {name}: GGUF type expected one of "
                f"{', '.join(t.name for t in SUPPORTED_TYPES)}, found {tensor.tensor_type.name}")
        dims = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists ne0 (columns) first
        kind = name.split(".")[2] if name.startswith("blk.") else None
        available[name] = SourceTensor(name, dims,
                                       _loader(path, tensor, dims, rope_heads.get(kind)))
    tensors = select_tensors(hparams, available, lambda name: name)
    try:
        tokenizer = tokenizer_metadata_from_gguf(reader)
    except ValueError as error:  # how tokenizer_export refuses what the runtime cannot reproduce
        raise ConversionError(f"tokenizer: {error}") from error
    return ModelSource(source=f"gguf:{path.name}", name=_field(reader, "general.name", str, ""),
                       hparams=hparams, tokenizer=tokenizer, tensors=tensors)
