# gguf_source.py: reads a llama or qwen2 GGUF file (gguf package) as the converter's canonical
# description: hyperparameters from the {arch}.* keys (with RoPE scaling, the rope_freqs tensor,
# biases and the sliding window of FORMAT.md 3.3), tensors dequantized to float32, the llama
# attn_q/attn_k rows taken back from GGUF's interleaved RoPE order to rotate-half (qwen2 files keep
# rotate-half: llama.cpp runs them in NeoX order). A file without the GGUF magic, or one the reader
# cannot parse, whose counts and lengths run past its end or whose tensor data is cut short, is
# refused in one line naming the file (and the key or tensor where one is at fault).
# Tested by tests/test_convert.py, tests/test_convert_damaged.py and tests/test_model_variants.py.
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType
from gguf.quants import dequantize

from .errors import ConversionError, naming
from .llama import (BIAS_GROUPS, YARN_BETA_FAST, YARN_BETA_SLOW, LlamaHyperparameters, ModelSource, RopeScaling,
                    SourceTensor, extended_context_length, select_tensors)
from .tokenizer_export import tokenizer_metadata_from_gguf

MAGIC = b"GGUF"
ARCHITECTURES = ("llama", "qwen2")  # the Llama layout; qwen2 adds q/k/v biases
ROPE_SCALING_TYPES = ("none", "linear", "yarn")  # llama3's scaling comes as the rope_freqs tensor
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
# The fewest bytes one element of a metadata array takes: strings their u64 length, arrays their
# u32 type and u64 count.
_LEAST_ITEM_BYTES = {GGUFValueType.STRING: 8, GGUFValueType.ARRAY: 12,
                     **{kind: np.dtype(dtype).itemsize for kind, dtype in GGUFReader.gguf_scalar_to_np.items()}}


class _BoundedReader(GGUFReader):
    """The gguf package's reader with every read bounded by the file: its own reads past the end
    return short or empty arrays (an IndexError comes later, if at all), it loops over an array's
    element count before reading any, so that a count of 2**63 ran away, and it adds tensor data
    offsets in uint64, where they wrap. These refusals are IndexErrors, as the reader's own."""

    def _get(self, offset, dtype, count=1, override_order=None):
        size = np.dtype(dtype).itemsize * int(count)
        if int(offset) + size > self.data.size:
            raise IndexError(f"{int(count)} x {np.dtype(dtype).name} at byte {int(offset)} run past "
                             f"the end of the file")
        return super()._get(offset, dtype, count, override_order)

    def _get_field_parts(self, orig_offs, raw_type):
        if raw_type == GGUFValueType.ARRAY:
            item_type, count = int(self._get(orig_offs, np.uint32)[0]), int(self._get(orig_offs + 4, np.uint64)[0])
            least = _LEAST_ITEM_BYTES.get(item_type, 0)  # an unknown type: the reader refuses it
            if count * least > self.data.size - (orig_offs + 12):
                raise IndexError(f"an array of {count} values at byte {orig_offs} runs past the end "
                                 f"of the file")
        return super()._get_field_parts(orig_offs, raw_type)

    def _build_tensors(self, start_offs, fields):
        for field in fields:  # parts: name length, name, dim count, dims, type, data offset
            offset = int(field.parts[5][0])
            if int(start_offs) + offset > self.data.size:  # the reader adds them as uint64: they wrap
                raise IndexError(f"a tensor's data offset {offset} runs past the end of the file")
        super()._build_tensors(start_offs, fields)


def _field(reader: GGUFReader, key: str, kind: type, default=_REQUIRED):
    """A scalar metadata value of the expected Python kind (int, float or str)."""
    field = reader.get_field(key)
    if field is None:
        if default is _REQUIRED:
            raise ConversionError(f"GGUF key {key}: expected a {kind.__name__}, found missing")
        return default
    try:
        value = field.contents()
    except UnicodeDecodeError as error:
        raise ConversionError(f"GGUF key {key}: expected UTF-8 text, found {error.object[:40]!r}") from error
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConversionError(f"GGUF key {key}: expected a {kind.__name__}, found {value!r:.80}")
    return value


def _rope_scaling(reader: GGUFReader, arch: str, context_length: int) -> RopeScaling | None:
    key = f"{arch}.rope.scaling"
    kind = _field(reader, f"{key}.type", str, "none")
    if kind not in ROPE_SCALING_TYPES:
        raise ConversionError(f"GGUF key {key}.type: expected one of {', '.join(ROPE_SCALING_TYPES)}, "
                              f"found {kind!r}")
    if kind == "none":
        return None
    factor = _field(reader, f"{key}.factor", float)
    if kind == "linear":
        return RopeScaling("linear", factor)
    # llama.cpp scales yarn's cos/sin by attn_factor x (1 + 0.1 ln factor)
    attn_factor = _field(reader, f"{key}.attn_factor", float, 1.0)
    return RopeScaling("yarn", factor, _field(reader, f"{key}.original_context_length", int, context_length),
                       beta_fast=_field(reader, f"{key}.yarn_beta_fast", float, YARN_BETA_FAST),
                       beta_slow=_field(reader, f"{key}.yarn_beta_slow", float, YARN_BETA_SLOW),
                       attention_factor=attn_factor * (0.1 * math.log(factor) + 1.0) if factor > 0 else factor)


def _hyperparameters(reader: GGUFReader, token_embd_rows: int | None, tied: bool, biases: frozenset,
                     freq_factors) -> LlamaHyperparameters:
    arch = _field(reader, "general.architecture", str)
    if arch not in ARCHITECTURES:
        raise ConversionError(f"GGUF key general.architecture: expected one of {', '.join(ARCHITECTURES)}, "
                              f"found {arch!r}")
    experts = _field(reader, f"{arch}.expert_count", int, 0)
    if experts:
        raise ConversionError(f"GGUF key {arch}.expert_count: expected 0 (mixture of experts is "
                              f"not supported), found {experts}")
    hidden = _field(reader, f"{arch}.embedding_length", int)
    heads = _field(reader, f"{arch}.attention.head_count", int)
    if heads < 1:
        raise ConversionError(f"GGUF key {arch}.attention.head_count: expected a positive integer, "
                              f"found {heads}")
    if reader.get_field(f"{arch}.attention.key_length") is None and hidden % heads:
        raise ConversionError(f"GGUF key {arch}.embedding_length: expected a multiple of "
                              f"{arch}.attention.head_count {heads}, found {hidden}")
    head_dim = _field(reader, f"{arch}.attention.key_length", int, hidden // heads)
    for key in (f"{arch}.attention.value_length", f"{arch}.rope.dimension_count"):
        value = _field(reader, key, int, head_dim)
        if value != head_dim:
            raise ConversionError(f"GGUF key {key}: expected the head dim {head_dim}, "
                                  f"found {value}")
    context_length = _field(reader, f"{arch}.context_length", int)
    rope_scaling = _rope_scaling(reader, arch, context_length)
    return LlamaHyperparameters(
        vocab_size=_field(reader, f"{arch}.vocab_size", int, token_embd_rows),
        hidden_size=hidden,
        n_layers=_field(reader, f"{arch}.block_count", int),
        n_heads=heads,
        n_kv_heads=_field(reader, f"{arch}.attention.head_count_kv", int, heads),
        head_dim=head_dim,
        ffn_size=_field(reader, f"{arch}.feed_forward_length", int),
        context_length=extended_context_length(context_length, rope_scaling),
        rope_theta=_field(reader, f"{arch}.rope.freq_base", float, 10000.0),
        rms_norm_eps=_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", float),
        tie_word_embeddings=tied,
        rope_scaling=rope_scaling,
        rope_freq_factors=freq_factors,
        biases=biases,
        sliding_window=_field(reader, f"{arch}.attention.sliding_window", int, 0),
    )


def unpermute_rope_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undoes the row permutation GGUF converters apply to attn_q/attn_k (weights and biases):
    within each head they store rotation pair i as adjacent rows (2i, 2i+1); mixrt wants rows i
    and i + head_dim/2."""
    rows = weight.shape[0]
    return (weight.reshape(n_heads, rows // n_heads // 2, 2, -1)
            .swapaxes(1, 2).reshape(weight.shape))


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


def _check_type(name: str, tensor) -> None:
    if tensor.tensor_type not in SUPPORTED_TYPES:
        raise ConversionError(f"tensor {name}: GGUF type expected one of "
                              f"{', '.join(t.name for t in SUPPORTED_TYPES)}, found {tensor.tensor_type.name}")


def open_gguf(path: Path) -> ModelSource:
    with open(path, "rb") as stream:
        magic = stream.read(len(MAGIC))
    if magic != MAGIC:
        raise ConversionError(f"not a GGUF file (magic expected {MAGIC!r}, found {magic!r}): "
                              f"{path}")
    try:
        reader = _BoundedReader(path)
    except (ValueError, IndexError, KeyError) as error:
        # How the reader meets bytes it cannot parse: IndexError where a count or length runs past
        # the end of the file (tensor data included), ValueError for unknown versions, value
        # types and tensor types, bad UTF-8 in names and impossible tensor shapes, KeyError for a
        # duplicate key or a type without a known size.
        raise _corrupt(path, f"the gguf reader fails on its {path.stat().st_size} bytes "
                             f"({type(error).__name__}: {error})") from error
    with naming(path):
        return _model_source(path, reader)


def _model_source(path: Path, reader: GGUFReader) -> ModelSource:
    by_name = {t.name: t for t in reader.tensors}
    embd = by_name.get("token_embd.weight")
    # A bias group is present when its first matrix has a bias in layer 0 (select_tensors then
    # requires all of them, in every layer).
    biases = frozenset(group for group, kinds in BIAS_GROUPS.items() if f"blk.0.{kinds[0]}.bias" in by_name)
    freqs = by_name.pop("rope_freqs.weight", None)
    freq_factors = None
    if freqs is not None:
        _check_type("rope_freqs.weight", freqs)
        freq_factors = tuple(float(f) for f in _loader(path, freqs, (int(freqs.n_elements),), None)())
    hparams = _hyperparameters(reader, int(embd.shape[-1]) if embd is not None and len(embd.shape) == 2 else None,
                               tied="output.weight" not in by_name, biases=biases, freq_factors=freq_factors)
    # llama files interleave each head's rotation pairs; qwen2 files keep rotate-half (NeoX)
    interleaved = _field(reader, "general.architecture", str) == "llama"
    rope_heads = {"attn_q": hparams.n_heads, "attn_k": hparams.n_kv_heads} if interleaved else {}
    available = {}
    for name, tensor in by_name.items():
        _check_type(name, tensor)
        dims = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists ne0 (columns) first
        parts = name.split(".")  # blk.<i>.<kind>.<suffix>
        kind = parts[2] if parts[0] == "blk" and len(parts) == 4 else None
        available[name] = SourceTensor(name, dims, _loader(path, tensor, dims, rope_heads.get(kind)),
                                       path)  # biases too
    tensors = select_tensors(hparams, available, lambda name: name)
    try:
        tokenizer = tokenizer_metadata_from_gguf(reader)
    except ValueError as error:  # how tokenizer_export refuses what the runtime cannot reproduce
        raise ConversionError(f"tokenizer: {error}") from error
    return ModelSource(source=f"gguf:{path.name}", name=_field(reader, "general.name", str, ""),
                       hparams=hparams, tokenizer=tokenizer, tensors=tensors)
