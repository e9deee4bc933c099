# hf_source.py: reads a Hugging Face checkpoint directory of the Llama family (config.json of a
# llama, mistral or qwen2 model, one or more *.safetensors shards, tokenizer files) as the
# converter's canonical description, with the variants of FORMAT.md 3.3 taken from config.json:
# rope_scaling (or rope_parameters), attention_bias / mlp_bias (qwen2: q/k/v biases), head_dim and
# Mistral's sliding_window. HF already stores q/k rows in the rotate-half RoPE order mixrt uses.
# JSON files that are not a JSON object, config values of the wrong type or range, index entries
# that are no shard file of the checkpoint and truncated or corrupt shards are refused in one line
# naming the file (config.json by name) and the field. Tested by tests/test_convert.py,
# tests/test_convert_damaged.py and tests/test_model_variants.py.
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from .errors import ConversionError, naming
from .llama import (YARN_BETA_FAST, YARN_BETA_SLOW, LlamaHyperparameters, ModelSource, RopeScaling, SourceTensor,
                    extended_context_length, select_tensors)
from .tokenizer_export import read_json_object, tokenizer_metadata_from_hf_dir

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
SAFETENSORS_DTYPES = ("F32", "F16", "BF16")
# Tensors a checkpoint may hold that carry nothing mixrt needs (a buffer of old transformers).
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)

_TOP_LEVEL_NAMES = {"token_embd.weight": "model.embed_tokens.weight",
                    "output_norm.weight": "model.norm.weight",
                    "output.weight": "lm_head.weight"}
_LAYER_NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj",
                "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
                "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
_REQUIRED = object()
# model_type -> the architecture transformers writes for it; all three are the Llama layout.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def hf_name(name: str) -> str:
    """The Hugging Face name of a tensor of FORMAT.md 4.1 (`blk.3.attn_q.weight` ->
    `model.layers.3.self_attn.q_proj.weight`, `blk.3.attn_q.bias` -> `...q_proj.bias`)."""
    if name in _TOP_LEVEL_NAMES:
        return _TOP_LEVEL_NAMES[name]
    _, layer, kind, suffix = name.split(".")
    return f"model.layers.{layer}.{_LAYER_NAMES[kind]}.{suffix}"


def _config_value(config: dict, key: str, kind: type, default=_REQUIRED, where: str = ""):
    """config[key] of the given kind (an int is a float too); default when absent or null."""
    value = config.get(key)
    if value is None:
        value = default
    if value is _REQUIRED:
        raise ConversionError(f"config.json: {where}{key} expected a {kind.__name__}, found missing")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)) \
            or (kind is float and not math.isfinite(value)):
        raise ConversionError(f"config.json: {where}{key} expected a {kind.__name__}, found {value!r:.80}")
    return value


# The rope_scaling keys mixrt applies, per type (any other key changes the model in a way it does
# not reproduce, and is refused).
_ROPE_KEYS = {"default": set(), "linear": {"factor"},
              "dynamic": {"factor", "original_max_position_embeddings"},
              "yarn": {"factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
                       "attention_factor"},
              "llama3": {"factor", "original_max_position_embeddings", "low_freq_factor",
                         "high_freq_factor"}}


def _rope_scaling(rope: dict, context_length: int) -> RopeScaling | None:
    """rope_scaling (or transformers 5's rope_parameters) as FORMAT.md 3.3's RoPE variant."""
    kind = rope.get("rope_type", rope.get("type", "default"))
    if not isinstance(kind, str) or kind not in _ROPE_KEYS:
        raise ConversionError(f"config.json: rope_scaling.rope_type expected one of "
                              f"{', '.join(_ROPE_KEYS)}, found {kind!r:.80}")
    unknown = sorted(set(rope) - _ROPE_KEYS[kind] - {"rope_type", "type", "rope_theta", "finetuned"})
    if unknown:
        raise ConversionError(f"config.json: rope_scaling ({kind}) expected only the keys "
                              f"{', '.join(sorted(_ROPE_KEYS[kind])) or '(none)'}, found {unknown[0]!r:.80}")
    if kind == "default":
        return None

    def value(key, kind_=float, default=_REQUIRED):
        return _config_value(rope, key, kind_, default, where="rope_scaling.")

    factor = value("factor")
    if kind == "linear":
        return RopeScaling("linear", factor)
    original = value("original_max_position_embeddings", int, context_length if kind != "llama3" else _REQUIRED)
    if kind == "dynamic":
        return RopeScaling("dynamic", factor, original)
    if kind == "llama3":
        return RopeScaling("llama3", factor, original, low_freq_factor=value("low_freq_factor"),
                           high_freq_factor=value("high_freq_factor"))
    return RopeScaling("yarn", factor, original, beta_fast=value("beta_fast", float, YARN_BETA_FAST),
                       beta_slow=value("beta_slow", float, YARN_BETA_SLOW),
                       attention_factor=value("attention_factor", float, 0.1 * math.log(factor) + 1.0))


def _flag(config: dict, key: str) -> bool:
    return _config_value(config, key, bool, False)


def _hyperparameters(config: dict) -> LlamaHyperparameters:
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in ARCHITECTURES:
        raise ConversionError(f"config.json: model_type expected one of {', '.join(ARCHITECTURES)}, "
                              f"found {model_type!r:.80}")
    architectures = config.get("architectures", [ARCHITECTURES[model_type]])
    if architectures != [ARCHITECTURES[model_type]]:
        raise ConversionError(f"config.json: architectures expected [{ARCHITECTURES[model_type]!r}], "
                              f"found {architectures!r:.80}")
    if config.get("hidden_act", "silu") != "silu":
        raise ConversionError(f"config.json: hidden_act expected 'silu', found {config['hidden_act']!r:.80}")
    hidden = _config_value(config, "hidden_size", int)
    heads = _config_value(config, "num_attention_heads", int)
    if heads < 1:
        raise ConversionError(f"config.json: num_attention_heads expected a positive integer, found {heads}")
    if config.get("head_dim") is None and hidden % heads:
        raise ConversionError(f"config.json: hidden_size expected a multiple of "
                              f"num_attention_heads {heads} (head_dim is absent), found {hidden}")
    context_length = _config_value(config, "max_position_embeddings", int)
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise ConversionError(f"config.json: rope_scaling expected an object or null, found {rope!r:.80}")
    if model_type == "qwen2":  # q/k/v biases always; the sliding window only when switched on
        biases = {"qkv"}
        if _flag(config, "use_sliding_window"):
            raise ConversionError("config.json: use_sliding_window expected false (qwen2's per-layer "
                                  "sliding window is not supported), found true")
        window = 0
    else:
        biases = ({"qkv", "attn_output"} if _flag(config, "attention_bias") else set()) | \
            ({"mlp"} if _flag(config, "mlp_bias") else set())
        window = _config_value(config, "sliding_window", int, 0) if model_type == "mistral" else 0
    rope_scaling = _rope_scaling(rope, context_length)
    return LlamaHyperparameters(
        vocab_size=_config_value(config, "vocab_size", int),
        hidden_size=hidden,
        n_layers=_config_value(config, "num_hidden_layers", int),
        n_heads=heads,
        n_kv_heads=_config_value(config, "num_key_value_heads", int, heads),
        head_dim=_config_value(config, "head_dim", int, hidden // heads),
        ffn_size=_config_value(config, "intermediate_size", int),
        context_length=extended_context_length(context_length, rope_scaling),
        rope_theta=_config_value(rope, "rope_theta", float,
                                 _config_value(config, "rope_theta", float, 10000.0)),
        rms_norm_eps=_config_value(config, "rms_norm_eps", float),
        tie_word_embeddings=_config_value(config, "tie_word_embeddings", bool, False),
        rope_scaling=rope_scaling,
        biases=frozenset(biases),
        sliding_window=window,
    )


def _shard_files(path: Path) -> list[Path]:
    """The safetensors files of the checkpoint: those the index names (file names in the
    checkpoint directory), or all of them."""
    index = path / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json_object(index).get("weight_map")
        if not (isinstance(weight_map, dict)
                and all(isinstance(name, str) for name in weight_map.values())):
            raise ConversionError(f"{index}: weight_map expected an object of tensor names to "
                                  f"shard file names, found {weight_map!r:.80}")
        names = sorted(set(weight_map.values()))
        for name in names:
            if Path(name).name != name or name in ("", ".", ".."):
                raise ConversionError(f"{index}: weight_map shard expected a file name in the checkpoint "
                                      f"directory, found {name!r:.80}")
            if not (path / name).is_file():
                raise ConversionError(f"{index}: weight_map shard {name} expected in {path}, found "
                                      f"{'a directory' if (path / name).exists() else 'missing'}")
        return [path / name for name in names]
    files = sorted(file for file in path.glob("*.safetensors") if file.is_file())
    if not files:
        raise ConversionError(f"{path}: expected *.safetensors weight files, found none")
    return files


def _corrupt(file: Path, what: object) -> ConversionError:
    return ConversionError(f"truncated/corrupt safetensors: {file}: {what}")


def _open_shard(file: Path):
    """safe_open of one shard, which checks that its header is valid JSON (of a bounded length,
    with known dtypes) and that its tensors' data, each the size its dtype and shape give, cover
    exactly the rest of the file without overlapping."""
    try:
        return safe_open(file, framework="numpy")
    except SafetensorError as error:
        raise _corrupt(file, error) from error
    except OSError as error:  # e.g. a directory named *.safetensors; the library's text names no file
        raise ConversionError(f"{file}: cannot be read ({error})") from error


def _read_bf16(file: Path, name: str) -> np.ndarray:
    """numpy has no bfloat16, so bf16 tensors are read from their raw bytes, located through the
    safetensors header (8-byte little-endian length, JSON with `data_offsets` relative to the
    byte after it), and widened: a bf16 value is the upper half of the float32 with its bits.
    _open_shard has checked the header; a file that changed since is refused."""
    with open(file, "rb") as stream:
        try:
            (header_size,) = struct.unpack("<Q", stream.read(8))
            entry = json.loads(stream.read(min(header_size, file.stat().st_size)))[name]
            begin, end = (int(offset) for offset in entry["data_offsets"])
            shape = [int(n) for n in entry["shape"]]
        except (struct.error, ValueError, KeyError, TypeError) as error:
            raise _corrupt(file, f"header changed while converting ({type(error).__name__}: {error})") from error
        stream.seek(8 + header_size + begin)
        bits = np.fromfile(stream, dtype="<u2", count=max(0, end - begin) // 2)
    if 2 * bits.size != end - begin:  # the file was cut after _open_shard checked it
        raise _corrupt(file, f"tensor {name} expected {end - begin} bytes of data, "
                             f"found {2 * bits.size}")
    if bits.size != math.prod(shape):
        raise _corrupt(file, f"tensor {name} expected shape {shape}, found {bits.size} values")
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(shape)


def _loader(file: Path, name: str, dtype: str):
    if dtype == "BF16":
        return lambda: _read_bf16(file, name)

    def load() -> np.ndarray:
        with _open_shard(file) as shard:
            return shard.get_tensor(name).astype(np.float32, copy=False)
    return load


def _index_tensors(files: list[Path]) -> dict[str, SourceTensor]:
    """Every tensor of the shards by name, with dims from the headers (no data is read)."""
    tensors, shard_of = {}, {}
    for file in files:
        with naming(file), _open_shard(file) as shard:
            for name in shard.keys():
                if name.endswith(IGNORED_SUFFIXES):
                    continue
                if name in shard_of:
                    raise ConversionError(f"tensor {name}: expected in one shard, found in "
                                          f"{shard_of[name].name} and {file.name}")
                info = shard.get_slice(name)
                dtype = info.get_dtype()
                if dtype not in SAFETENSORS_DTYPES:
                    raise ConversionError(f"tensor {name}: safetensors dtype expected one of "
                                          f"{', '.join(SAFETENSORS_DTYPES)}, found {dtype}")
                tensors[name] = SourceTensor(name, tuple(info.get_shape()), _loader(file, name, dtype), file)
                shard_of[name] = file
    return tensors


def open_hf_dir(path: Path) -> ModelSource:
    path = path.resolve()
    config_file = path / "config.json"
    if not config_file.exists():
        raise ConversionError(f"{path}: expected a Hugging Face checkpoint with config.json, "
                              f"found none")
    with naming(config_file.name):  # "config.json: ...", the file of the checkpoint it names
        config = read_json_object(config_file)
        hparams = _hyperparameters(config)
        model_name = (_config_value(config, "_name_or_path", str, "")
                      or _config_value(config, "_model_name_or_path", str, "") or path.name)
    with naming(path):
        if not any((path / name).exists() for name in TOKENIZER_FILES):
            raise ConversionError(f"{path}: expected a tokenizer ({' or '.join(TOKENIZER_FILES)}), "
                                  f"found none")
        available = _index_tensors(_shard_files(path))
        if hparams.tie_word_embeddings:
            available.pop("lm_head.weight", None)  # some checkpoints save the tied copy anyway
        tensors = select_tensors(hparams, available, hf_name)
        try:
            tokenizer = tokenizer_metadata_from_hf_dir(path)
        except ValueError as error:  # how tokenizer_export refuses what the runtime cannot reproduce
            raise ConversionError(f"tokenizer: {error}") from error
        return ModelSource(source=f"hf:{path.name}", name=model_name, hparams=hparams, tokenizer=tokenizer,
                           tensors=tensors)
