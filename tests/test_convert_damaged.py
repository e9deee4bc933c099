# test_convert_damaged.py: mixrt-convert on damaged inputs. Explicit regressions (a GGUF cut short
# anywhere, or with a zero, absurd or runaway count; safetensors headers too long, not JSON, with
# bad offsets, dtypes or shapes; an index or config.json that is not a JSON object or holds values
# of the wrong type or range; a damaged tokenizer) and hypothesis properties over generated damage
# of the tiny GGUF and Hugging Face checkpoint: every input either converts to a file that mixrt.load
# accepts or refuses with MixrtError, or is refused with a ConversionError of one line naming the
# input file, never another exception, and leaves no output or temporary file behind.
# Run: python -m pytest tests/test_convert_damaged.py -q  (about 20 s; needs no ../shared)
import contextlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import mixrt
from mixrt.convert import ConversionError, convert
from mixrt.convert.cli import main as convert_main
from mixrt.devtools.hf_to_gguf import write_gguf

# Deterministic (CI runs the same examples every time) and without a database in the checkout.
PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Values a damaged count, length, type or offset is set to (reduced modulo the field's width).
EXTREMES = (0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1, 2**63, 2**64 - 1, -1)
HF_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.model",
            "tokenizer_config.json", "chat_template.jinja")


# ---- the small valid inputs and how to damage them ------------------------------------------------

@pytest.fixture(scope="module")
def tiny_gguf(tiny_hf, tmp_path_factory) -> Path:
    """The tiny random Llama (conftest's tiny_hf) as a float32 GGUF, as llama.cpp writes it."""
    return write_gguf(tmp_path_factory.mktemp("damaged-gguf") / "tiny.gguf", tiny_hf)


def part_offset(reader: gguf.GGUFReader, part: np.ndarray) -> int:
    """Where in the file one part of a reader field lies (the parts are views of its memmap)."""
    return part.ctypes.data - reader.data.ctypes.data


@pytest.fixture(scope="module")
def gguf_layout(tiny_gguf) -> dict:
    """The sections of the tiny GGUF (byte ranges) and its integer fields as (offset, width, what):
    the header counts, every key's lengths, type and scalar value or array type and count, every
    tensor info's name length, dim count, dims, type and data offset."""
    reader = gguf.GGUFReader(tiny_gguf)
    infos = reader.tensors[0].field.offset
    fields = [(4, 4, "version"), (8, 8, "tensor count"), (16, 8, "kv count")]
    for key, field in reader.fields.items():
        if not key.startswith("GGUF."):
            fields += [(part_offset(reader, part), part.nbytes, f"key {key} part {i}")
                       for i, part in enumerate(field.parts[:5]) if part.size == 1 and part.nbytes in (4, 8)]
    for tensor in reader.tensors:
        name_len, _, n_dims, dims, kind, offset = tensor.field.parts
        fields += [(part_offset(reader, name_len), 8, f"tensor {tensor.name} name length"),
                   (part_offset(reader, n_dims), 4, f"tensor {tensor.name} dim count"),
                   (part_offset(reader, kind), 4, f"tensor {tensor.name} type"),
                   (part_offset(reader, offset), 8, f"tensor {tensor.name} data offset")]
        fields += [(part_offset(reader, dims) + 8 * i, 8, f"tensor {tensor.name} dim {i}") for i in range(dims.size)]
    size = tiny_gguf.stat().st_size
    return {"sections": {"header": (0, 24), "metadata": (24, infos), "tensor infos": (infos, reader.data_offset),
                         "tensor data": (reader.data_offset, size)},
            "fields": fields, "reader": reader}


def with_bytes(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new):]


def with_int(data: bytes, offset: int, width: int, value: int) -> bytes:
    return with_bytes(data, offset, (value % 2 ** (8 * width)).to_bytes(width, "little"))


def kv_part(layout: dict, key: str, index: int) -> tuple[int, int]:
    """(offset, width) of part `index` of a GGUF key: 0 its name length, 2 its value type, 3 the
    scalar value or the array's item type, 4 the array's count, 5 its first value."""
    part = layout["reader"].fields[key].parts[index]
    return part_offset(layout["reader"], part), part.nbytes


def tensor_part(layout: dict, name: str, index: int) -> tuple[int, int]:
    """(offset, width) of part `index` of a tensor info: 0 the name length, 2 the dim count, 3 the
    dims, 4 the type, 5 the data offset."""
    tensor = next(t for t in layout["reader"].tensors if t.name == name)
    part = tensor.field.parts[index]
    return part_offset(layout["reader"], part), part.itemsize


def safetensors_parts(file: Path) -> tuple[dict, bytes]:
    """The header (a dict) and the data of a safetensors file."""
    data = file.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def safetensors_bytes(header, data: bytes, length: int | None = None) -> bytes:
    """A safetensors file of this header (any JSON value) and data; length: the stated header
    length (default: the real one)."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length % 2**64) + text + data


def edit_json(file: Path, **changes) -> None:
    value = json.loads(file.read_text())
    value.update(changes)
    file.write_text(json.dumps(value))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def refusal(src: Path, tmp_path: Path) -> str:
    """convert()'s refusal of src: a ConversionError of one printable line; no file is left in the
    output directory."""
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    with pytest.raises(ConversionError) as error:
        convert(src, out_dir / "out.mixrt", recipe="f16", progress=False)
    message = str(error.value)
    print(f"\n{message}")
    assert message.isprintable(), message  # no line break, no control character
    assert leftovers(out_dir) == []
    return message


@pytest.fixture
def hf_copy(tiny_hf, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_hf, tmp_path / "hf")).resolve()


# ---- GGUF regressions ---------------------------------------------------------------------------

def test_gguf_cut_anywhere_is_refused_by_the_reader(tiny_gguf, gguf_layout, tmp_path):
    """Cut at each section's edges and middle, and at and inside every integer field of the header,
    the general.* keys and the first and last tensor infos."""
    data = tiny_gguf.read_bytes()
    cuts = {offset for start, end in gguf_layout["sections"].values()
            for offset in (start, start + 1, (start + end) // 2, end - 1)}
    chosen = ("version", "tensor count", "kv count", "key general.", "tensor token_embd.weight ",
              "tensor output.weight ")
    cuts |= {offset + delta for offset, width, what in gguf_layout["fields"]
             if what.startswith(chosen) for delta in (0, width - 1)}
    cut = tmp_path / "cut.gguf"
    for offset in sorted(cuts):
        cut.write_bytes(data[:offset])
        message = refusal(cut, tmp_path)
        if offset >= 4:  # shorter: no GGUF magic
            assert message.startswith(f"truncated/corrupt GGUF: {cut}: the gguf reader fails on its "
                                      f"{offset} bytes ("), offset


@pytest.mark.parametrize("key, part, value, message", [
    # before: the head-count check let 0 through to a misleading head-dim refusal
    ("llama.attention.head_count", 3, 0,
     "GGUF key llama.attention.head_count: expected a positive integer, found 0"),
    ("llama.block_count", 3, 2**32 - 1, "llama.n_layers: expected an integer in 1..1024, found 4294967295"),
    ("llama.attention.head_count_kv", 3, 0, "llama.n_kv_heads: expected an integer in 1..1024, found 0"),
    ("llama.context_length", 3, 0, "llama.context_length: expected an integer in 1..4194304, found 0"),
    ("llama.vocab_size", 3, 2**32 - 1, "llama.vocab_size: expected an integer in 1..1048576, found 4294967295"),
    ("tokenizer.ggml.bos_token_id", 3, 2**32 - 1,
     "tokenizer: tokenizer.bos_id 4294967295 is outside the vocabulary of 1000 tokens"),
    # before: converted, and the runtime refused the file
    ("tokenizer.ggml.token_type", 5, 0,
     "tokenizer: GGUF key tokenizer.ggml.token_type: expected values in 1..6, found 0 for token 0"),
])
def test_gguf_out_of_range_value_is_refused(tiny_gguf, gguf_layout, tmp_path, key, part, value, message):
    offset, width = kv_part(gguf_layout, key, part)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(with_int(tiny_gguf.read_bytes(), offset, width, value))
    assert refusal(bad, tmp_path) == f"{bad}: {message}"


@pytest.mark.parametrize("count", [2**20, 2**63, 2**64 - 1])
def test_gguf_array_count_past_the_end_is_refused_at_once(tiny_gguf, gguf_layout, tmp_path, count):
    """Before: the reader looped over the count reading empty arrays past the end (2**63: it ran
    away); now the count is bounded by the bytes left before the loop."""
    offset, width = kv_part(gguf_layout, "tokenizer.ggml.scores", 4)
    data = tiny_gguf.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(with_int(data[:offset + width + 4000], offset, width, count))
    start = time.perf_counter()
    message = refusal(bad, tmp_path)
    assert time.perf_counter() - start < 2
    assert message == (f"truncated/corrupt GGUF: {bad}: the gguf reader fails on its {bad.stat().st_size} bytes "
                       f"(IndexError: an array of {count} values at byte {offset - 4} runs past the end of "
                       f"the file)")


@pytest.mark.parametrize("part, value, found", [
    (0, 2**64 - 1, "IndexError: 18446744073709551615 x uint8 at byte"),  # name length
    (2, 2**32 - 1, "IndexError: 4294967295 x uint64 at byte"),  # dim count
    (3, 2**40, "IndexError: "),  # first dim: data past the end
    (4, 2**31 - 1, "ValueError: "),  # unknown type
    (5, 2**63, "IndexError: a tensor's data offset 9223372036854775808 runs past the end"),
    (5, 2**64 - 64, "IndexError: a tensor's data offset"),  # before: wrapped around to the tensor infos
])
def test_gguf_tensor_info_extremes_are_refused(tiny_gguf, gguf_layout, tmp_path, part, value, found):
    offset, width = tensor_part(gguf_layout, "blk.0.attn_q.weight", part)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(with_int(tiny_gguf.read_bytes(), offset, width, value))
    assert refusal(bad, tmp_path).startswith(
        f"truncated/corrupt GGUF: {bad}: the gguf reader fails on its {bad.stat().st_size} bytes ({found}")


def gguf_with(tmp_path: Path, tiny_hf: Path, extra) -> Path:
    return write_gguf(tmp_path / "variant.gguf", tiny_hf, extra=extra)


GGUF_VALUE_REFUSALS = {
    # before: UnicodeDecodeError
    "name not UTF-8": (lambda w: w.add_string("general.name", "x"),
                       lambda data: data.replace(b"general.name\x08\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00x",
                                                 b"general.name\x08\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xff"),
                       "GGUF key general.name: expected UTF-8 text, found b'\\xff'"),
    # before: NotImplementedError from the dequantizer
    "rope_freqs of integers": (lambda w: w.add_tensor("rope_freqs.weight", np.ones(8, np.int32)), None,
                               "tensor rope_freqs.weight: GGUF type expected one of F32, "),
    # before: FormatError from the writer (the value does not fit an i64)
    "sliding window": (lambda w: w.add_uint64("llama.attention.sliding_window", 2**64 - 1), None,
                       "llama.sliding_window: expected an integer in 0..4194304, found 18446744073709551615"),
    # before: OverflowError (int of an infinite context)
    "yarn context": (lambda w: (w.add_rope_scaling_type(gguf.RopeScalingType.YARN),
                                w.add_float64("llama.rope.scaling.factor", 1e308)), None,
                     "llama.context_length: expected an integer in 1..4194304, found rope scaling (yarn) "
                     "factor 1e+308 x original_context_length 256"),
    "rope theta": (lambda w: w.add_float64("llama.rope.freq_base", float("inf")), None,
                   "llama.rope_theta: expected a positive finite number, found inf"),
    # before: IndexError (name.split(".")[2])
    "tensor name": (lambda w: w.add_tensor("blk.", np.ones(4, np.float32)), None,
                    "tensor blk.: expected only the tensors of a llama model, found 1 unknown: blk."),
    # before: the line break was printed as is
    "tensor name with a line break": (lambda w: w.add_tensor("blk.0\nx", np.ones(4, np.float32)), None,
                                      "tensor blk.0\\nx: expected only the tensors of a llama model"),
    "token id not an integer": (lambda w: w.add_array("tokenizer.ggml.eos_token_id", [1, 2]), None,
                        "tokenizer: GGUF key tokenizer.ggml.eos_token_id: expected integer, found [1, 2]"),
}


@pytest.mark.parametrize("case", GGUF_VALUE_REFUSALS)
def test_gguf_bad_value_is_refused(tiny_hf, tmp_path, case):
    extra, patch, message = GGUF_VALUE_REFUSALS[case]
    path = gguf_with(tmp_path, tiny_hf, extra)
    if patch is not None:
        path.write_bytes(patch(path.read_bytes()))
    assert refusal(path, tmp_path).startswith(f"{path}: {message}")


# ---- Hugging Face regressions -------------------------------------------------------------------

def write_index(hf: Path, value) -> None:
    (hf / "model.safetensors.index.json").write_text(value if isinstance(value, str) else json.dumps(value))


def st_edit(hf: Path, change) -> Path:
    """model.safetensors rewritten as change(header, data) -> bytes."""
    shard = hf / "model.safetensors"
    shard.write_bytes(change(*safetensors_parts(shard)))
    return shard


def entry(header: dict, name: str, **changes) -> dict:
    return {**header, name: {**header[name], **changes}}


NORM = "model.norm.weight"
HF_REFUSALS = {
    "index not JSON": (lambda d: write_index(d, "weight_map"),
                       "{d}/model.safetensors.index.json: expected a JSON object, found invalid JSON ("),
    "index an array": (lambda d: write_index(d, [1, 2]),
                       "{d}/model.safetensors.index.json: expected a JSON object, found an array"),
    "index shard empty": (lambda d: write_index(d, {"weight_map": {NORM: ""}}),
                          "{d}/model.safetensors.index.json: weight_map shard expected a file name in the "
                          "checkpoint directory, found ''"),  # before: OSError "No such device"
    "index shard outside": (lambda d: write_index(d, {"weight_map": {NORM: "/etc/passwd"}}),
                            "{d}/model.safetensors.index.json: weight_map shard expected a file name in the "
                            "checkpoint directory, found '/etc/passwd'"),
    "index shard a directory": (lambda d: ((d / "sub").mkdir(), write_index(d, {"weight_map": {NORM: "sub"}})),
                                "{d}/model.safetensors.index.json: weight_map shard sub expected in {d}, "
                                "found a directory"),
    "shard a directory": (lambda d: (d / "x.safetensors").mkdir(), None),  # ignored: converts
    "config not JSON": (lambda d: (d / "config.json").write_text("{"),
                        "{d}/config.json: expected a JSON object, found invalid JSON ("),
    "config an array": (lambda d: (d / "config.json").write_text("[]"),
                        "{d}/config.json: expected a JSON object, found an array"),
    # before: TypeError (unhashable type)
    "model_type a list": (lambda d: edit_json(d / "config.json", model_type=["llama"]),
                          "config.json: model_type expected one of llama, mistral, qwen2, found ['llama']"),
    "rope_type an object": (lambda d: edit_json(d / "config.json", rope_scaling={"rope_type": {}}),
                            "config.json: rope_scaling.rope_type expected one of default, linear, dynamic, yarn, "
                            "llama3, found {}"),
    # before: OverflowError
    "rope factor huge": (lambda d: edit_json(d / "config.json", rope_scaling={
                             "rope_type": "dynamic", "factor": 1e308, "original_max_position_embeddings": 256}),
                         "config.json: llama.context_length: expected an integer in 1..4194304, found rope scaling "
                         "(dynamic) factor 1e+308 x original_context_length 256"),
    "zero heads": (lambda d: edit_json(d / "config.json", num_attention_heads=0),
                   "config.json: num_attention_heads expected a positive integer, found 0"),
    "absurd layer count": (lambda d: edit_json(d / "config.json", num_hidden_layers=10**9),
                           "config.json: llama.n_layers: expected an integer in 1..1024, found 1000000000"),
    # before: TypeError from the writer
    "name an object": (lambda d: edit_json(d / "config.json", _name_or_path={"a": 1}),
                       "config.json: _name_or_path expected a str, found {'a': 1}"),
    "header length huge": (lambda d: st_edit(d, lambda h, data: safetensors_bytes(h, data, 2**64 - 1)),
                           "truncated/corrupt safetensors: {d}/model.safetensors: Error while deserializing "
                           "header: header too large"),
    "header length past the end": (lambda d: st_edit(d, lambda h, data: safetensors_bytes(h, data, 10**7)),
                                   "truncated/corrupt safetensors: {d}/model.safetensors: Error while "
                                   "deserializing header: "),
    "header not JSON": (lambda d: st_edit(d, lambda h, data: struct.pack("<Q", 5) + b"{{{{{" + data),
                        "truncated/corrupt safetensors: {d}/model.safetensors: Error while deserializing "
                        "header: invalid JSON in header"),
    "header an array": (lambda d: st_edit(d, lambda h, data: safetensors_bytes([1], data)),
                        "truncated/corrupt safetensors: {d}/model.safetensors: Error while deserializing "
                        "header: invalid JSON in header: invalid type: sequence"),
    "data cut short": (lambda d: st_edit(d, lambda h, data: safetensors_bytes(h, data[:-1])),
                       "truncated/corrupt safetensors: {d}/model.safetensors: Error while deserializing "
                       "header: incomplete metadata, file not fully covered"),
    "offsets past the end": (lambda d: st_edit(d, lambda h, data: safetensors_bytes(
                                 entry(h, NORM, data_offsets=[0, 2**40]), data)),
                             "truncated/corrupt safetensors: {d}/model.safetensors: Error while deserializing "
                             "header: invalid offset for tensor"),
    "offsets overlapping": (lambda d: st_edit(d, lambda h, data: safetensors_bytes(
                                entry(h, NORM, data_offsets=[0, 256]), data)),
                            "truncated/corrupt safetensors: {d}/model.safetensors: Error while deserializing "
                            "header: invalid offset for tensor"),
    "offsets negative": (lambda d: st_edit(d, lambda h, data: safetensors_bytes(
                             entry(h, NORM, data_offsets=[-256, 0]), data)),
                         "truncated/corrupt safetensors: {d}/model.safetensors: Error while deserializing "
                         "header: invalid JSON in header: invalid value: integer `-256`"),
    "dtype unknown": (lambda d: st_edit(d, lambda h, data: safetensors_bytes(entry(h, NORM, dtype="F7"), data)),
                      "truncated/corrupt safetensors: {d}/model.safetensors: Error while deserializing header: "
                      "invalid JSON in header: unknown variant `F7`"),
    "dtype unsupported": (lambda d: st_edit(d, lambda h, data: safetensors_bytes(
                              entry(h, NORM, dtype="I32"), data)),
                          "{d}/model.safetensors: tensor model.norm.weight: safetensors dtype expected one of "
                          "F32, F16, BF16, found I32"),
    "shape not the byte size": (lambda d: st_edit(d, lambda h, data: safetensors_bytes(
                                    entry(h, NORM, shape=[65]), data)),
                                "truncated/corrupt safetensors: {d}/model.safetensors: Error while deserializing "
                                "header: invalid shape, data type, or offset for tensor"),
    "shape overflowing": (lambda d: st_edit(d, lambda h, data: safetensors_bytes(
                              entry(h, NORM, shape=[2**62, 2**62]), data)),
                          "truncated/corrupt safetensors: {d}/model.safetensors: Error while deserializing "
                          "header: overflow computing buffer size"),
    "shape other but same size": (lambda d: st_edit(d, lambda h, data: safetensors_bytes(
                                      entry(h, NORM, shape=[8, 8]), data)),
                                  "{d}/model.safetensors: tensor model.norm.weight: dims expected [64], found [8, 8]"),
    # before: IndexError in the protobuf reader
    "tokenizer.model junk": (lambda d: (d / "tokenizer.model").write_bytes(b"\xff" * 100),
                             "tokenizer: {d}/tokenizer.model: sentencepiece model: truncated/corrupt protobuf"),
    "tokenizer.model cut": (lambda d: (d / "tokenizer.model").write_bytes((d / "tokenizer.model").read_bytes()[:999]),
                            "tokenizer: {d}/tokenizer.model: sentencepiece model: truncated/corrupt protobuf"),
    # before: AttributeError
    "chat template list": (lambda d: edit_json(d / "tokenizer_config.json", chat_template=[1, "x"]), None),
    # before: the UnicodeDecodeError's text without the file
    "chat template not UTF-8": (lambda d: (d / "chat_template.jinja").write_bytes(b"\xff"),
                                "tokenizer: {d}/chat_template.jinja: expected UTF-8 text"),
}


@pytest.mark.parametrize("case", HF_REFUSALS)
def test_hf_damage_is_refused(hf_copy, tmp_path, case):
    damage, message = HF_REFUSALS[case]
    damage(hf_copy)
    if message is None:  # harmless: converts
        convert(hf_copy, tmp_path / "out.mixrt", recipe="f16", progress=False)
        return
    assert refusal(hf_copy, tmp_path).startswith(message.replace("{d}", str(hf_copy)))


def test_bf16_header_changed_after_opening_is_refused(hf_copy, tmp_path):
    """bf16 tensors are read through the header again: one that became invalid is refused."""
    from mixrt.convert import open_source

    shard = hf_copy / "model.safetensors"
    header, data = safetensors_parts(shard)
    bf16 = {name: {**info, "dtype": "BF16", "data_offsets": [offset // 2 for offset in info["data_offsets"]]}
            if name != "__metadata__" else info for name, info in header.items()}
    shard.write_bytes(safetensors_bytes(bf16, data[:len(data) // 2]))
    model = open_source(hf_copy)
    shard.write_bytes(struct.pack("<Q", 3) + b"[1]")
    with pytest.raises(ConversionError, match=rf"^truncated/corrupt safetensors: {re.escape(str(shard))}: header "
                                              rf"changed while converting \(TypeError: "):
        model.tensors[0][1].load()


# ---- properties over generated damage -----------------------------------------------------------

def outcome(src: Path, names: tuple[str, ...]) -> str:
    """Converts src (f16) into a fresh directory and checks the outcome: a file that mixrt.load
    accepts or refuses with MixrtError, or a ConversionError of one printable line naming the input
    (one of names) with nothing left behind. Any other exception fails the test. The outcome is
    a hypothesis event (pytest --hypothesis-show-statistics counts them)."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "out.mixrt"
        try:
            convert(src, out, recipe="f16", progress=False)
        except ConversionError as error:
            message = str(error)
            assert message.isprintable() and message, message
            assert any(name in message for name in names), message
            assert os.listdir(directory) == []
            event("refused: " + re.sub(r"\d+", "N", message.replace(str(src), "SRC"))[:60])
            return "refused"
        assert os.listdir(directory) == ["out.mixrt"]
        try:
            mixrt.load(out, backend="cpu")
        except mixrt.MixrtError:
            event("converted, refused by mixrt.load")
            return "converted, refused by mixrt.load"
        event("converted")
        return "converted"


def extreme(width: int):
    return st.one_of(st.sampled_from(EXTREMES), st.integers(0, 2 ** (8 * width) - 1))


json_values = st.recursive(
    st.none() | st.booleans() | st.sampled_from(EXTREMES) | st.integers(-2**70, 2**70) | st.floats()
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8)


@st.composite
def byte_damage(draw, data: bytes, sections: dict, fields: list):
    """One piece of damage to a file's bytes, in a section drawn evenly (so that small headers are
    hit as often as large data): cut there, overwrite bytes there, or set one of `fields` (offset,
    width, what) to an extreme value."""
    kind = draw(st.sampled_from(["cut", "overwrite", "field"] if fields else ["cut", "overwrite"]))
    if kind == "field":
        offset, width, what = draw(st.sampled_from(fields))
        return with_int(data, offset, width, draw(extreme(width)))
    start, end = sections[draw(st.sampled_from(sorted(sections)))]
    offset = draw(st.integers(start, max(start, end - 1)))
    if kind == "cut":
        return data[:offset]
    return with_bytes(data, offset, draw(st.binary(min_size=1, max_size=16)))[:len(data)]


@PROPERTY
@given(damage=st.data())
def test_damaged_gguf_is_converted_or_refused_in_one_line(tiny_gguf, gguf_layout, damage):
    data = tiny_gguf.read_bytes()
    bad = damage.draw(byte_damage(data, gguf_layout["sections"], gguf_layout["fields"]))
    with tempfile.TemporaryDirectory() as directory:
        src = Path(directory) / "damaged.gguf"
        src.write_bytes(bad)
        outcome(src, (str(src),))


@pytest.fixture(scope="module")
def st_layout(tiny_hf) -> dict:
    header, data = safetensors_parts(tiny_hf / "model.safetensors")
    shard = (tiny_hf / "model.safetensors").read_bytes()
    (stated,) = struct.unpack("<Q", shard[:8])
    return {"header": header, "data": data,
            "sections": {"length": (0, 8), "header": (8, 8 + stated), "data": (8 + stated, len(shard))},
            "fields": [(0, 8, "header length")]}


@st.composite
def header_damage(draw, header: dict, data: bytes) -> bytes:
    """A safetensors file whose header has one entry changed: a tensor's dtype, shape or offsets
    set to another value (extreme integers, other dtypes, any JSON), the tensor dropped or
    renamed, or __metadata__ replaced; the stated length is the real one or drawn."""
    header = dict(header)
    name = draw(st.sampled_from(sorted(header)))
    kind = draw(st.sampled_from(["dtype", "shape", "data_offsets", "drop", "rename", "metadata"]))
    if kind == "drop":
        del header[name]
    elif kind == "rename":
        header[draw(st.text(max_size=40))] = header.pop(name)
    elif kind == "metadata":
        header["__metadata__"] = draw(json_values)
    elif name != "__metadata__":
        value = draw(st.one_of(
            st.lists(st.sampled_from(EXTREMES) | st.integers(-1, 2**16), max_size=3),
            st.sampled_from(["F64", "I8", "U8", "BF16", "F16", "BOOL", "F8_E4M3", "Q4"]), json_values))
        header[name] = {**header[name], kind: value}
    length = draw(st.one_of(st.none(), st.none(), extreme(8)))
    return safetensors_bytes(header, data, length)


@PROPERTY
@given(damage=st.data())
def test_damaged_safetensors_is_converted_or_refused_in_one_line(tiny_hf, st_layout, damage):
    data = (tiny_hf / "model.safetensors").read_bytes()
    if damage.draw(st.booleans()):
        bad = damage.draw(byte_damage(data, st_layout["sections"], st_layout["fields"]))
    else:
        bad = damage.draw(header_damage(st_layout["header"], st_layout["data"]))
    with tempfile.TemporaryDirectory() as directory:
        src = Path(shutil.copytree(tiny_hf, Path(directory) / "hf"))
        (src / "model.safetensors").write_bytes(bad)
        outcome(src, (str(src), *HF_FILES))


# Keys a damaged config.json sets (besides its own): the optional ones the converter reads.
EXTRA_CONFIG_KEYS = ("rope_scaling", "rope_parameters", "head_dim", "sliding_window", "_name_or_path",
                     "attention_bias", "mlp_bias", "use_sliding_window", "bos_token_id", "eos_token_id",
                     "pad_token_id", "architectures", "hidden_act")
TOKENIZER_CONFIG_KEYS = ("bos_token", "eos_token", "unk_token", "add_bos_token", "chat_template")


@st.composite
def json_damage(draw, value: dict, keys: tuple) -> bytes:
    """A JSON file's new content: `value` with one key (its own or one of keys) set to a drawn
    value or removed, or any JSON value, or text that is no JSON."""
    kind = draw(st.sampled_from(["key", "key", "key", "remove", "value", "text"]))
    if kind == "value":
        return json.dumps(draw(json_values)).encode()
    if kind == "text":
        return draw(st.binary(max_size=40))
    value = dict(value)
    key = draw(st.sampled_from(sorted(set(value) | set(keys))))
    if kind == "remove":
        value.pop(key, None)
    elif key in ("rope_scaling", "rope_parameters") and draw(st.booleans()):
        value[key] = {"rope_type": draw(st.sampled_from(["linear", "dynamic", "yarn", "llama3", "default"])),
                      **draw(st.dictionaries(st.sampled_from(["factor", "original_max_position_embeddings",
                                                              "low_freq_factor", "high_freq_factor", "beta_fast",
                                                              "beta_slow", "attention_factor", "rope_theta"]),
                                             json_values, max_size=4))}
    else:
        value[key] = draw(json_values)
    return json.dumps(value).encode()


@PROPERTY
@given(damage=st.data())
def test_damaged_json_files_are_converted_or_refused_in_one_line(tiny_hf, damage):
    """config.json, tokenizer_config.json or a model.safetensors.index.json damaged (the index
    added: the tiny model has one shard)."""
    file = damage.draw(st.sampled_from(["config.json", "tokenizer_config.json", "model.safetensors.index.json"]))
    if file == "model.safetensors.index.json":
        index = {"metadata": {}, "weight_map": {name: "model.safetensors" for name in
                                                safetensors_parts(tiny_hf / "model.safetensors")[0]}}
        content = damage.draw(json_damage(index, ("weight_map",)))
    else:
        content = damage.draw(json_damage(json.loads((tiny_hf / file).read_text()),
                                          EXTRA_CONFIG_KEYS if file == "config.json" else TOKENIZER_CONFIG_KEYS))
    with tempfile.TemporaryDirectory() as directory:
        src = Path(shutil.copytree(tiny_hf, Path(directory) / "hf"))
        (src / file).write_bytes(content)
        outcome(src, (str(src), *HF_FILES))


# ---- the command line ---------------------------------------------------------------------------

def run_main(*argv) -> tuple[int, str]:
    """mixrt-convert in-process: (exit status, stderr)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            status = convert_main([str(a) for a in argv])
        except SystemExit as exit:
            status = exit.code
    return status, stderr.getvalue()


def test_cli_refuses_damaged_inputs_in_one_line(tiny_gguf, gguf_layout, hf_copy, tmp_path):
    """In a subprocess and in-process: exit status 1, one line on stderr, no traceback, no file."""
    offset, width = kv_part(gguf_layout, "tokenizer.ggml.scores", 4)
    runaway = tmp_path / "runaway.gguf"
    runaway.write_bytes(with_int(tiny_gguf.read_bytes(), offset, width, 2**63))
    edit_json(hf_copy / "config.json", rope_scaling={"rope_type": ["yarn"]})
    out = tmp_path / "out.mixrt"
    for src in (runaway, hf_copy):
        result = subprocess.run([sys.executable, "-m", "mixrt.convert.cli", str(src), "-o", str(out)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("mixrt-convert: error: ")
        assert (1, result.stderr) == run_main(src, "-o", out, "--quiet")
        assert not out.exists() and leftovers(tmp_path) == ["hf", "runaway.gguf"]
