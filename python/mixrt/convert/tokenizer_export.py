# tokenizer_export.py: the tokenizer metadata keys of FORMAT.md 3.1/3.2, read from a GGUF file or a
# Hugging Face directory (tokenizer.json, or tokenizer.model via sentencepiece). Values of the wrong
# type and damaged files are refused as ValueError naming the key or file. Tested by
# tests/test_tokenizer.py, which checks the native tokenizers built from them token for token, and
# tests/test_convert_damaged.py.
"""Tokenizer metadata export.

Both functions return a dict of metadata key -> value with the Python types the format writer
maps to FORMAT.md types: int (i64), str (string), list[str] (string array), numpy float32 array
(f32 array), numpy int32 array (i32 array). Tokenizers the runtime cannot reproduce exactly raise
ValueError naming what is unsupported; JSON files that are not a JSON object raise ConversionError
(a ValueError) naming the file (read_json_object, which hf_source uses too).
"""
import json
from pathlib import Path

import numpy as np

from .errors import ConversionError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# llama.cpp pre-tokenizer names (tokenizer.ggml.pre) -> the byte_bpe pre-tokenizer (tokenizer.pre
# of FORMAT.md 3.2) that splits text as the model's original Hugging Face tokenizer does. gpt2: a
# plain ByteLevel pre-tokenizer; for "smollm" llama.cpp itself uses a regex that also splits every
# number character apart, which differs from the original tokenizer.json for non-ASCII number
# characters (" ½", " ٣"), and the original is what byte_bpe reproduces. "llama-bpe" is Llama 3's
# (whose vocabulary llama.cpp also encodes with ignore_merges), "qwen2" Qwen2's (whose original
# tokenizer.json normalizes to NFC first, which llama.cpp skips; mixrt does it, as the original).
GGUF_PRE_TOKENIZERS = {"gpt-2": "gpt2", "smollm": "gpt2", "llama-bpe": "llama3", "qwen2": "qwen2"}
# The Split regex of each pre-tokenizer, exactly as the models' tokenizer.json files state it (a
# Sequence of this Split, behavior Isolated, and a ByteLevel without its own regex).
SPLIT_PATTERNS = {
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
             r"\s*[\r\n]+|\s+(?!\S)|\s+",
}


def tokenizer_metadata_from_gguf(reader) -> dict:
    """tokenizer.* keys from a gguf.GGUFReader (tokenizer.ggml.model "gpt2" or "llama")."""
    kind = _gguf_value(reader, "tokenizer.ggml.model")
    tokens = _gguf_value(reader, "tokenizer.ggml.tokens", kind="texts")
    types = _gguf_value(reader, "tokenizer.ggml.token_type", [NORMAL] * len(tokens), "integers")
    _check_count("tokenizer.ggml.token_type", types, len(tokens))
    unknown = next((i for i, kind in enumerate(types) if not NORMAL <= kind <= BYTE), None)
    if unknown is not None:
        raise ValueError(f"GGUF key tokenizer.ggml.token_type: expected values in {NORMAL}..{BYTE}, found "
                         f"{types[unknown]} for token {unknown}")
    token_types = np.asarray(types, dtype=np.int32)
    meta = {"tokenizer.tokens": tokens, "tokenizer.token_types": token_types}
    if kind == "gpt2":
        pre = _gguf_value(reader, "tokenizer.ggml.pre", "default")
        if pre not in GGUF_PRE_TOKENIZERS:
            raise ValueError(f"GGUF tokenizer.ggml.pre '{pre}' is not supported: byte_bpe "
                             f"reproduces {', '.join(GGUF_PRE_TOKENIZERS)}")
        meta["tokenizer.model"] = "byte_bpe"
        meta["tokenizer.merges"] = _gguf_value(reader, "tokenizer.ggml.merges", kind="texts")
        meta.update(_pre_tokenizer_keys(GGUF_PRE_TOKENIZERS[pre], ignore_merges=pre == "llama-bpe",
                                        nfc=pre == "qwen2"))
        add_bos_default = False
    elif kind == "llama":
        if _gguf_value(reader, "tokenizer.ggml.remove_extra_whitespaces", False, "flag"):
            raise ValueError("GGUF sentencepiece tokenizer with remove_extra_whitespaces is not "
                             "supported")
        meta["tokenizer.model"] = "sentencepiece_bpe"
        meta["tokenizer.scores"] = np.asarray(_gguf_value(reader, "tokenizer.ggml.scores", kind="numbers"),
                                              dtype=np.float32)
        _check_count("tokenizer.ggml.scores", meta["tokenizer.scores"], len(tokens))
        meta["tokenizer.add_space_prefix"] = int(
            bool(_gguf_value(reader, "tokenizer.ggml.add_space_prefix", True, "flag")))
        add_bos_default = True
    else:
        raise ValueError(f"GGUF tokenizer.ggml.model '{kind}' is not supported: expected gpt2 "
                         "(byte-level BPE) or llama (sentencepiece BPE)")

    meta["tokenizer.add_bos"] = int(
        bool(_gguf_value(reader, "tokenizer.ggml.add_bos_token", add_bos_default, "flag")))
    for name, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"),
                      ("unk", "unknown_token_id"), ("pad", "padding_token_id")):
        meta[f"tokenizer.{name}_id"] = _gguf_value(reader, f"tokenizer.ggml.{key}", -1, "integer")
    template = _gguf_value(reader, "tokenizer.chat_template", None)
    if template is not None:
        meta["tokenizer.chat_template"] = template
    _check_ids(meta)
    return meta


def tokenizer_metadata_from_hf_dir(path) -> dict:
    """tokenizer.* keys from a Hugging Face model directory.

    A byte-level BPE tokenizer.json is used if present; otherwise (no tokenizer.json, or one of
    another kind next to a tokenizer.model) the sentencepiece tokenizer.model. Special ids come
    from tokenizer_config.json (token names), then config.json (*_token_id). Added tokens become
    control tokens if special, user-defined otherwise; their lstrip/rstrip/single_word flags are
    not represented. If config.json's vocab_size exceeds the tokenizer, the vocabulary is padded
    with unused tokens "[PAD<i>]" so that it has one entry per embedding row.
    """
    path = Path(path)
    config = read_json_object(path / "config.json")
    tokenizer_config = read_json_object(path / "tokenizer_config.json")
    tokenizer_json = path / "tokenizer.json"
    tokenizer_model = path / "tokenizer.model"

    data = read_json_object(tokenizer_json) if tokenizer_json.exists() else None
    problem = _byte_bpe_problem(data) if data is not None else None
    if data is not None and problem is None:
        meta, fallback_ids = _byte_bpe_from_tokenizer_json(data)
    elif tokenizer_model.exists():
        meta, fallback_ids = _sentencepiece_from_model_file(tokenizer_model)
    elif problem is not None:
        raise ValueError(f"{tokenizer_json}: {problem}")
    else:
        raise ValueError(f"{path} has neither tokenizer.json nor tokenizer.model")

    _pad_vocabulary(meta, config.get("vocab_size"))
    token_ids = {}
    for i, token in enumerate(meta["tokenizer.tokens"]):
        token_ids.setdefault(token, i)
    for name in ("bos", "eos", "unk", "pad"):
        meta[f"tokenizer.{name}_id"] = _special_id(name, tokenizer_config, config, token_ids,
                                                   fallback_ids.get(name, -1))
    add_bos = tokenizer_config.get("add_bos_token")
    if not isinstance(add_bos, bool):
        if meta["tokenizer.model"] == "sentencepiece_bpe":
            add_bos = True  # what Llama's sentencepiece tokenizers do
        else:
            add_bos = _post_processor_adds_bos(data, meta["tokenizer.bos_id"], token_ids)
    meta["tokenizer.add_bos"] = int(add_bos)
    template = _chat_template(path, tokenizer_config)
    if template is not None:
        meta["tokenizer.chat_template"] = template
    _check_ids(meta)
    return meta


# ---- GGUF ---------------------------------------------------------------------------------------

_MISSING = object()
# What _gguf_value expects of a key: a test of the Python value.
_GGUF_KINDS = {
    "text": lambda value: isinstance(value, str),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "flag": lambda value: isinstance(value, (bool, int)),
    "texts": lambda value: isinstance(value, list) and all(isinstance(v, str) for v in value),
    "integers": lambda value: isinstance(value, list) and all(isinstance(v, int) for v in value),
    "numbers": lambda value: isinstance(value, list) and all(isinstance(v, (int, float)) for v in value),
}


def _gguf_value(reader, key, default=_MISSING, kind="text"):
    """A GGUF metadata value of the given kind (_GGUF_KINDS) as a Python str / int / bool or list
    of them; ValueError naming the key if it is another or its text is not UTF-8."""
    import gguf

    field = reader.fields.get(key)
    if field is None:
        if default is _MISSING:
            raise ValueError(f"GGUF file has no {key}")
        return default
    parts = [field.parts[i] for i in field.data]
    is_string = field.types[-1] == gguf.GGUFValueType.STRING
    try:
        values = [bytes(p).decode("utf-8") if is_string else p[0].item() for p in parts]
    except UnicodeDecodeError as error:
        raise ValueError(f"GGUF key {key}: expected UTF-8 text, found {error.object[:40]!r}") from error
    value = values if field.types[0] == gguf.GGUFValueType.ARRAY else values[0]
    if not _GGUF_KINDS[kind](value):
        raise ValueError(f"GGUF key {key}: expected {kind}, found {value!r:.80}")
    return value


def _check_count(key: str, values, n_tokens: int) -> None:
    if len(values) != n_tokens:
        raise ValueError(f"GGUF key {key}: expected {n_tokens} values (one per token), found {len(values)}")


# ---- Hugging Face tokenizer.json (byte-level BPE) ----------------------------------------------

def _pre_tokenizer_keys(pre: str, ignore_merges: bool, nfc: bool) -> dict:
    """tokenizer.pre, tokenizer.ignore_merges and tokenizer.normalizer where they differ from
    GPT-2's defaults (so that files of GPT-2 style vocabularies stay as they were)."""
    return ({"tokenizer.pre": pre} if pre != "gpt2" else {}) | \
        ({"tokenizer.ignore_merges": 1} if ignore_merges else {}) | ({"tokenizer.normalizer": "nfc"} if nfc else {})


def _pre_tokenizer(pre) -> tuple[str | None, str | None]:
    """(the byte_bpe pre-tokenizer of a tokenizer.json pre_tokenizer, None) or (None, why not):
    a plain ByteLevel with its regex (gpt2), or a Sequence of a Split with one of SPLIT_PATTERNS
    (behavior Isolated) and a ByteLevel without regex."""
    kind = pre.get("type") if isinstance(pre, dict) else pre
    if kind == "ByteLevel":
        if not pre.get("use_regex", True) or pre.get("add_prefix_space", False):
            return None, "ByteLevel pre_tokenizer without use_regex or with add_prefix_space is not supported"
        return "gpt2", None
    steps = pre.get("pretokenizers") if kind == "Sequence" else None
    if isinstance(steps, list) and len(steps) == 2 and isinstance(steps[0], dict) and isinstance(steps[1], dict):
        split, byte_level = steps
        pattern = (split.get("pattern") or {}).get("Regex") if isinstance(split.get("pattern"), dict) else None
        names = [name for name, known in SPLIT_PATTERNS.items() if known == pattern]
        if (split.get("type") == "Split" and names and split.get("behavior") == "Isolated"
                and not split.get("invert") and byte_level.get("type") == "ByteLevel"
                and not byte_level.get("use_regex", True) and not byte_level.get("add_prefix_space", False)):
            return names[0], None
        return None, (f"pre_tokenizer Sequence is supported only as Llama 3's or Qwen2's Split regex (Isolated) "
                      f"then ByteLevel without regex; found the regex {str(pattern)[:60]!r}")
    return None, f"pre_tokenizer {kind!r} is not supported: expected ByteLevel or Llama 3's / Qwen2's Sequence"


def _byte_bpe_problem(data: dict):
    """Why tokenizer.json is not a byte-level BPE the runtime reproduces, or None."""
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        return f"model type {model.get('type')!r} is not supported: expected BPE"
    _, problem = _pre_tokenizer(data.get("pre_tokenizer"))
    if problem is not None:
        return problem
    normalizer = data.get("normalizer")
    if normalizer is not None and normalizer.get("type") != "NFC":
        return f"normalizer {normalizer.get('type')!r} is not supported: expected none or NFC"
    decoder = data.get("decoder")
    if decoder is not None and decoder.get("type") != "ByteLevel":
        return f"decoder {decoder.get('type')!r} is not supported: expected ByteLevel"
    for option in ("byte_fallback", "continuing_subword_prefix", "end_of_word_suffix", "dropout"):
        if model.get(option):
            return f"BPE option {option}={model[option]!r} is not supported"
    return None


def _byte_bpe_from_tokenizer_json(data: dict):
    """(metadata, fallback special ids) of a byte-level BPE tokenizer.json."""
    model = data["model"]
    by_id = {int(i): (token, NORMAL) for token, i in model["vocab"].items()}
    for added in data.get("added_tokens", []):
        kind = CONTROL if added.get("special") else USER_DEFINED
        by_id[int(added["id"])] = (added["content"], kind)
    tokens, types = _dense_vocabulary(by_id)

    merges = []
    for i, merge in enumerate(model.get("merges", [])):
        if isinstance(merge, str):
            merges.append(merge)
            continue
        left, right = merge
        if " " in left or " " in right:
            raise ValueError(f"tokenizer.json merge {i} {merge!r} has a token with a space, which "
                             "the 'left right' merge format cannot hold")
        merges.append(f"{left} {right}")

    fallback_ids = {}
    unk = model.get("unk_token")
    if unk is not None and unk in model["vocab"]:
        fallback_ids["unk"] = int(model["vocab"][unk])
    meta = {"tokenizer.model": "byte_bpe", "tokenizer.tokens": tokens,
            "tokenizer.token_types": types, "tokenizer.merges": merges,
            **_pre_tokenizer_keys(_pre_tokenizer(data.get("pre_tokenizer"))[0],
                                  bool(model.get("ignore_merges")),
                                  nfc=(data.get("normalizer") or {}).get("type") == "NFC")}
    return meta, fallback_ids


def _post_processor_adds_bos(data: dict, bos_id: int, token_ids: dict) -> bool:
    """Whether tokenizer.json's post-processor prepends BOS to a single sequence."""
    first = _template_first_special(data.get("post_processor"))
    if first is None:
        return False
    if token_ids.get(first) != bos_id:
        raise ValueError(f"tokenizer.json post_processor prepends {first!r}, which is not the BOS "
                         "token; not supported")
    return True


def _template_first_special(processor):
    """The special token a TemplateProcessing puts before a single sequence, or None."""
    if not isinstance(processor, dict):
        return None
    if processor.get("type") == "Sequence":
        for inner in processor.get("processors", []):
            first = _template_first_special(inner)
            if first is not None:
                return first
        return None
    if processor.get("type") != "TemplateProcessing":
        return None
    single = processor.get("single") or []
    if single and "SpecialToken" in single[0]:
        return single[0]["SpecialToken"]["id"]
    return None


# ---- sentencepiece tokenizer.model -------------------------------------------------------------

def _sentencepiece_from_model_file(model_file: Path):
    """(metadata, fallback special ids) of a sentencepiece BPE model."""
    import sentencepiece

    proto = model_file.read_bytes()
    try:
        spec = _read_sentencepiece_proto(proto)
    except ValueError as error:  # a damaged protobuf, or a normalizer name that is not UTF-8
        raise ValueError(f"{model_file}: {error}") from error
    if spec["model_type"] != 2:
        names = {1: "unigram", 3: "word", 4: "char"}
        raise ValueError(f"{model_file}: sentencepiece model type "
                         f"'{names.get(spec['model_type'], spec['model_type'])}' is not supported: "
                         "expected BPE")
    if spec["precompiled_charsmap"] or spec["normalization_rule_tsv"]:
        raise ValueError(f"{model_file}: sentencepiece normalizer '{spec['normalizer_name']}' is "
                         "not supported: expected identity")
    if spec["remove_extra_whitespaces"] or not spec["escape_whitespaces"] \
            or spec["treat_whitespace_as_suffix"]:
        raise ValueError(f"{model_file}: sentencepiece whitespace options are not supported: "
                         "expected remove_extra_whitespaces=false, escape_whitespaces=true, "
                         "treat_whitespace_as_suffix=false")

    try:
        sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
    except RuntimeError as error:  # how the library refuses a model it cannot parse
        raise ValueError(f"{model_file}: sentencepiece cannot load it ({error})") from error
    n = sp.get_piece_size()
    if n != len(spec["piece_types"]):
        raise ValueError(f"{model_file}: sentencepiece reports {n} pieces, the file holds "
                         f"{len(spec['piece_types'])}")
    tokens = [sp.id_to_piece(i) for i in range(n)]
    scores = np.array([sp.get_score(i) for i in range(n)], dtype=np.float32)
    types = np.full(n, NORMAL, dtype=np.int32)
    for i in range(n):
        if sp.is_control(i):
            types[i] = CONTROL
        elif sp.is_unknown(i):
            types[i] = UNKNOWN
        elif sp.is_byte(i):
            types[i] = BYTE
        elif sp.is_unused(i):
            types[i] = UNUSED
        elif spec["piece_types"][i] == USER_DEFINED:  # the library has no is_user_defined
            types[i] = USER_DEFINED
    meta = {"tokenizer.model": "sentencepiece_bpe", "tokenizer.tokens": tokens,
            "tokenizer.token_types": types, "tokenizer.scores": scores,
            "tokenizer.add_space_prefix": int(spec["add_dummy_prefix"])}
    fallback_ids = {"bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id(), "pad": sp.pad_id()}
    return meta, fallback_ids


def _read_sentencepiece_proto(data: bytes) -> dict:
    """The few fields of a sentencepiece ModelProto the export needs, read from the protobuf wire
    format directly (the `protobuf` package is not a dependency): piece types, the trainer's
    model type and the normalizer options, with the proto's defaults."""
    spec = {"piece_types": [], "model_type": 1, "treat_whitespace_as_suffix": False,
            "normalizer_name": "", "precompiled_charsmap": b"", "normalization_rule_tsv": b"",
            "add_dummy_prefix": True, "remove_extra_whitespaces": True, "escape_whitespaces": True}
    for field, value in _proto_fields(data):
        if field == 1:  # SentencePiece {1: piece, 2: score, 3: type}
            spec["piece_types"].append(
                next((v for f, v in _proto_fields(value) if f == 3), NORMAL))
        elif field == 2:  # TrainerSpec
            for f, v in _proto_fields(value):
                if f == 3:
                    spec["model_type"] = v
                elif f == 24:
                    spec["treat_whitespace_as_suffix"] = bool(v)
        elif field == 3:  # NormalizerSpec
            for f, v in _proto_fields(value):
                if f == 1:
                    spec["normalizer_name"] = v.decode("utf-8")
                elif f == 2:
                    spec["precompiled_charsmap"] = v
                elif f == 6:
                    spec["normalization_rule_tsv"] = v
                elif f in (3, 4, 5):
                    flag = {3: "add_dummy_prefix", 4: "remove_extra_whitespaces",
                            5: "escape_whitespaces"}[f]
                    spec[flag] = bool(v)
    return spec


def _proto_fields(data: bytes):
    """(field number, value) pairs of one protobuf message: ints for varints, bytes otherwise;
    ValueError where a value runs past the end of the message."""
    pos = 0

    def take(size: int) -> bytes:
        nonlocal pos
        if pos + size > len(data):
            raise ValueError(f"sentencepiece model: truncated/corrupt protobuf ({size} bytes at byte {pos} "
                             f"run past its end at {len(data)})")
        pos += size
        return data[pos - size:pos]

    def varint():
        result = shift = 0
        while True:
            byte = take(1)[0]
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result

    while pos < len(data):
        key = varint()
        wire = key & 7
        if wire == 0:
            value = varint()
        elif wire == 2:
            value = take(varint())
        elif wire in (1, 5):
            value = take(8 if wire == 1 else 4)
        else:
            raise ValueError(f"sentencepiece model: unsupported protobuf wire type {wire}")
        yield key >> 3, value


# ---- shared -------------------------------------------------------------------------------------

_JSON_KINDS = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}


def read_json_object(path: Path) -> dict:
    """The JSON object in the file at path ({} if there is none), as a Hugging Face checkpoint's
    config.json, safetensors index and tokenizer files hold. Raises ConversionError (a ValueError)
    naming the file if it is not valid JSON or not an object."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_bytes())
    except ValueError as error:  # invalid JSON or text that is not UTF-8
        raise ConversionError(f"{path}: expected a JSON object, found invalid JSON "
                              f"({error})") from error
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a JSON object, found {_JSON_KINDS[type(data)]}")
    return data


def _dense_vocabulary(by_id: dict):
    """tokens and types by id; ids missing in between become unused "[PAD<i>]" tokens."""
    n = max(by_id) + 1 if by_id else 0
    tokens = []
    types = np.empty(n, dtype=np.int32)
    for i in range(n):
        token, kind = by_id.get(i, (f"[PAD{i}]", UNUSED))
        tokens.append(token)
        types[i] = kind
    return tokens, types


def _pad_vocabulary(meta: dict, vocab_size):
    """Pads the vocabulary with unused tokens up to the model's embedding rows."""
    n = len(meta["tokenizer.tokens"])
    if not isinstance(vocab_size, int) or vocab_size == n:
        return
    if vocab_size < n:
        raise ValueError(f"the tokenizer has {n} tokens but config.json vocab_size is {vocab_size}")
    padding = [f"[PAD{i}]" for i in range(n, vocab_size)]
    meta["tokenizer.tokens"] = meta["tokenizer.tokens"] + padding
    meta["tokenizer.token_types"] = np.concatenate(
        [meta["tokenizer.token_types"], np.full(vocab_size - n, UNUSED, dtype=np.int32)])
    if "tokenizer.scores" in meta:
        meta["tokenizer.scores"] = np.concatenate(
            [meta["tokenizer.scores"], np.zeros(vocab_size - n, dtype=np.float32)])


def _special_id(name: str, tokenizer_config: dict, config: dict, token_ids: dict, fallback: int):
    token = tokenizer_config.get(f"{name}_token")
    if isinstance(token, dict):
        token = token.get("content")
    if isinstance(token, str) and token in token_ids:
        return token_ids[token]
    value = config.get(f"{name}_token_id")
    if isinstance(value, list):  # several EOS ids: the first is the tokenizer's own
        value = value[0] if value else None
    return value if isinstance(value, int) else int(fallback)


def _chat_template(path: Path, tokenizer_config: dict):
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                        None)
    if isinstance(template, str):
        return template
    jinja = path / "chat_template.jinja"
    if not jinja.exists():
        return None
    try:
        return jinja.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{jinja}: expected UTF-8 text ({error})") from error


def _check_ids(meta: dict):
    n = len(meta["tokenizer.tokens"])
    for name in ("bos", "eos", "unk", "pad"):
        value = meta[f"tokenizer.{name}_id"]
        if not -1 <= value < n:
            raise ValueError(f"tokenizer.{name}_id {value} is outside the vocabulary of {n} tokens")
