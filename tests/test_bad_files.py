# test_bad_files.py: handcrafted broken .mixrt files, one per rule of FORMAT.md section 6 ("a reader
# must reject"); each must raise mixrt.MixrtError with its own message (naming the field or tensor)
# and never crash. A valid base file is written with mixrt.format, then damaged.
import struct

import numpy as np
import pytest

import mixrt
from mixrt.devtools.random_model import (BYTE_SHAPE, BYTE_VOCAB, byte_alphabet, byte_model_metadata,
                                         byte_model_tensors, write_byte_model)

V, D = BYTE_VOCAB, BYTE_SHAPE.hidden  # the base file's vocabulary and width


def table_fields(path):
    """Absolute file offsets of each tensor's dtype, ndim, first dim and first part's offset/size."""
    data = path.read_bytes()
    table_off = struct.unpack_from("<Q", data, 40)[0]
    pos = table_off + 8
    fields = {}
    for _ in range(struct.unpack_from("<Q", data, table_off)[0]):
        (n,) = struct.unpack_from("<I", data, pos)
        name = data[pos + 4: pos + 4 + n].decode()
        pos += 4 + n
        ndim = struct.unpack_from("<I", data, pos + 4)[0]
        f = {"dtype": pos, "ndim": pos + 4, "dim0": pos + 8}
        pos += 8 + 8 * ndim
        f["nparts"] = pos
        f["offset"], f["size"] = pos + 4, pos + 12
        pos += 4 + 16 * struct.unpack_from("<I", data, pos)[0]
        fields[name] = f
    return fields


def patch(path, offset, fmt_, value):
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt_, data, offset, value)
    path.write_bytes(bytes(data))


def load_error(path):
    with pytest.raises(mixrt.MixrtError) as e:
        mixrt.load(path)
    print(f"{path.name}: {e.value}")
    return str(e.value)


@pytest.fixture
def good(tmp_path):
    return write_byte_model(tmp_path / "good.mixrt")


def test_the_base_file_is_valid(good):
    m = mixrt.load(good)
    assert m.n_vocab == V
    assert m.generate("ab", max_tokens=3, temperature=0) is not None


# ---- header and sections -----------------------------------------------------------------------
def test_truncated(good):
    good.write_bytes(good.read_bytes()[:-10])
    assert "truncated" in load_error(good)


def test_shorter_than_the_header(good):
    good.write_bytes(good.read_bytes()[:100])
    assert "shorter than the 128-byte header" in load_error(good)


def test_wrong_magic(good):
    patch(good, 0, "<8s", b"MIXRX\0\0\0")
    assert "wrong magic" in load_error(good)


def test_a_gguf_file_is_sent_to_the_converter(good):
    patch(good, 0, "<8s", b"GGUF\0\0\0\0")
    assert load_error(good) == (f"{good} is a GGUF file, not a .mixrt file: convert it first: "
                                f"mixrt-convert {good} -o OUT.mixrt")


def test_wrong_major_version(good):
    patch(good, 8, "<I", 2)
    assert "version_major is 2" in load_error(good)


def test_newer_minor_version_is_accepted(good):
    patch(good, 12, "<I", 7)
    assert mixrt.load(good).n_vocab == V


@pytest.mark.parametrize("alignment", [0, 32, 96, 1 << 20])
def test_bad_alignment(good, alignment):
    patch(good, 16, "<I", alignment)
    assert f"alignment is {alignment}" in load_error(good)


def test_nonzero_flags(good):
    patch(good, 20, "<I", 1)
    assert "flags is 1" in load_error(good)


def test_nonzero_reserved(good):
    patch(good, 100, "<B", 1)
    assert "reserved header byte 100" in load_error(good)


def test_section_outside_the_file(good):
    patch(good, 32, "<Q", 1 << 40)
    assert "metadata section" in load_error(good) and "outside the file" in load_error(good)


def test_overlapping_sections(good):
    meta_size = struct.unpack_from("<Q", good.read_bytes(), 32)[0]
    patch(good, 40, "<Q", 128 + meta_size - 8)
    assert "overlaps or precedes the metadata" in load_error(good)


def test_misaligned_data_offset(good):
    data = good.read_bytes()
    patch(good, 56, "<Q", struct.unpack_from("<Q", data, 56)[0] + 8)
    patch(good, 64, "<Q", struct.unpack_from("<Q", data, 64)[0] - 8)
    assert "is not a multiple of the alignment" in load_error(good)


def test_metadata_size_mismatch(good):
    data = good.read_bytes()
    patch(good, 32, "<Q", struct.unpack_from("<Q", data, 32)[0] - 3)
    assert "metadata section is truncated" in load_error(good)


def test_huge_metadata_count(good):
    patch(good, 128, "<Q", 1 << 60)
    assert "metadata count" in load_error(good)


# ---- metadata ----------------------------------------------------------------------------------
def with_meta(tmp_path, **changes):
    meta = byte_model_metadata()
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    return write_byte_model(tmp_path / "m.mixrt", metadata=meta)


def test_missing_hyperparameter(tmp_path):
    assert "required metadata key 'llama.n_heads' is missing" in load_error(with_meta(tmp_path, llama__n_heads=None))


def test_wrong_type(tmp_path):
    assert "'llama.rope_theta' is a i64, expected f64" in load_error(with_meta(tmp_path, llama__rope_theta=10000))


@pytest.mark.parametrize("key,value", [("llama.hidden_size", 10**9), ("llama.n_layers", 0),
                                       ("llama.vocab_size", -5), ("llama.context_length", 1 << 40)])
def test_absurd_dimension(tmp_path, key, value):
    meta = byte_model_metadata()
    meta[key] = value
    assert f"metadata '{key}' is {value}, expected" in load_error(write_byte_model(tmp_path / "m.mixrt", metadata=meta))


def test_overlong_token(tmp_path):
    tokens = byte_alphabet()
    tokens[100] = "x" * 65537
    assert ("tokenizer.tokens[100] is 65537 bytes long, expected at most 65536"
            in load_error(with_meta(tmp_path, tokenizer__tokens=tokens)))


@pytest.mark.parametrize("score", [np.nan, np.inf])
def test_non_finite_sentencepiece_score(tmp_path, score):
    # Sentencepiece merges are ordered by score, which NaN would leave without an order.
    scores = np.zeros(V, np.float32)
    scores[7] = score
    error = load_error(with_meta(tmp_path, tokenizer__model="sentencepiece_bpe", tokenizer__scores=scores,
                                 tokenizer__merges=None))
    assert f"tokenizer.scores[7] is {score}, expected a finite number" in error


def test_heads_not_a_multiple_of_kv_heads(tmp_path):
    meta = byte_model_metadata()
    meta["llama.n_kv_heads"] = 3
    assert "not a multiple of llama.n_kv_heads" in load_error(write_byte_model(tmp_path / "m.mixrt", metadata=meta))


def test_bad_rope_theta(tmp_path):
    assert "'llama.rope_theta'" in load_error(with_meta(tmp_path, llama__rope_theta=-1.0))


def test_unknown_architecture(tmp_path):
    assert "general.architecture is 'mamba'" in load_error(with_meta(tmp_path, general__architecture="mamba"))


def test_vocabulary_of_the_wrong_length(tmp_path):
    assert "'tokenizer.tokens' has 255 entries" in load_error(with_meta(tmp_path, tokenizer__tokens=byte_alphabet()[:255]))


def test_bad_token_type(tmp_path):
    types = np.ones(V, np.int32)
    types[7] = 9
    assert "tokenizer.token_types[7] is 9" in load_error(with_meta(tmp_path, tokenizer__token_types=types))


def test_special_id_out_of_range(tmp_path):
    assert "'tokenizer.eos_id' is 256" in load_error(with_meta(tmp_path, tokenizer__eos_id=V))


def test_unknown_tokenizer(tmp_path):
    assert "tokenizer.model is 'wordpiece'" in load_error(with_meta(tmp_path, tokenizer__model="wordpiece"))


def test_missing_merges(tmp_path):
    assert "'tokenizer.merges' is missing" in load_error(with_meta(tmp_path, tokenizer__merges=None))


def test_sentencepiece_without_scores(tmp_path):
    assert "'tokenizer.scores' is missing" in load_error(with_meta(tmp_path, tokenizer__model="sentencepiece_bpe"))


def test_unknown_metadata_type(good):
    # The first entry's type field follows its key ("general.architecture").
    key = "general.architecture".encode()
    pos = good.read_bytes().index(key) + len(key)
    patch(good, pos, "<I", 99)
    assert "unknown value type 99" in load_error(good)


def test_invalid_utf8_key(good):
    key = "general.name".encode()
    data = bytearray(good.read_bytes())
    pos = data.index(key)
    data[pos] = 0xFF
    good.write_bytes(bytes(data))
    assert "not valid UTF-8" in load_error(good)


# ---- tensor table and parts --------------------------------------------------------------------
def test_unknown_dtype(good):
    patch(good, table_fields(good)["blk.0.attn_q.weight"]["dtype"], "<I", 42)
    assert "tensor 'blk.0.attn_q.weight' has unknown dtype code 42" in load_error(good)


def test_bad_ndim(good):
    patch(good, table_fields(good)["blk.0.attn_q.weight"]["ndim"], "<I", 9)
    assert "tensor 'blk.0.attn_q.weight' has ndim 9" in load_error(good)


def test_zero_dimension(good):
    patch(good, table_fields(good)["blk.0.attn_q.weight"]["dim0"], "<Q", 0)
    assert "tensor 'blk.0.attn_q.weight' has a zero dimension" in load_error(good)


def test_size_overflow(good):
    patch(good, table_fields(good)["blk.0.attn_q.weight"]["dim0"], "<Q", 1 << 62)
    assert "size overflows 64 bits" in load_error(good)


def test_wrong_part_size(good):
    f = table_fields(good)["blk.0.ffn_up.weight"]
    patch(good, f["size"], "<Q", 4)
    assert "tensor 'blk.0.ffn_up.weight' part 0 is 4 bytes, its dtype and dims imply 192" in load_error(good)


def test_wrong_number_of_parts(good):
    patch(good, table_fields(good)["blk.0.ffn_up.weight"]["nparts"], "<I", 2)
    assert "tensor 'blk.0.ffn_up.weight' has 2 parts" in load_error(good)


def test_misaligned_part(good):
    f = table_fields(good)["blk.0.ffn_up.weight"]
    off = struct.unpack_from("<Q", good.read_bytes(), f["offset"])[0]
    patch(good, f["offset"], "<Q", off + 2)
    assert "tensor 'blk.0.ffn_up.weight' part 0 offset" in load_error(good) and "alignment" in load_error(good)


def test_part_outside_the_data(good):
    patch(good, table_fields(good)["blk.0.ffn_up.weight"]["offset"], "<Q", 1 << 30)
    assert "lies outside the data section" in load_error(good)


def test_overlapping_tensors(good):
    fields = table_fields(good)
    data = good.read_bytes()
    q_off = struct.unpack_from("<Q", data, fields["blk.0.attn_q.weight"]["offset"])[0]
    patch(good, fields["blk.0.attn_k.weight"]["offset"], "<Q", q_off)
    assert "overlap" in load_error(good)


def test_missing_tensor(tmp_path):
    tensors = byte_model_tensors()
    del tensors["blk.0.ffn_down.weight"]
    assert "required tensor 'blk.0.ffn_down.weight' is missing" in load_error(write_byte_model(tmp_path / "m.mixrt", tensors=tensors))


def test_tensor_with_wrong_dims(tmp_path):
    tensors = byte_model_tensors()
    tensors["blk.0.attn_k.weight"] = ("f16", (8, 8), np.zeros((8, 8), np.float32))
    assert "tensor 'blk.0.attn_k.weight' has dims [8, 8], expected [4, 8]" in load_error(write_byte_model(tmp_path / "m.mixrt", tensors=tensors))


def test_norm_in_f16_is_refused(tmp_path):
    tensors = byte_model_tensors()
    tensors["output_norm.weight"] = ("f16", (D,), np.ones(D, np.float32))
    assert "tensor 'output_norm.weight' has dtype f16, expected f32" in load_error(write_byte_model(tmp_path / "m.mixrt", tensors=tensors))


def test_output_weight_present_although_tied(tmp_path):
    tensors = byte_model_tensors()
    tensors["output.weight"] = ("f16", (V, D), np.zeros((V, D), np.float32))
    assert "'output.weight' is present but llama.tie_word_embeddings is 1" in load_error(write_byte_model(tmp_path / "m.mixrt", tensors=tensors))


def test_untied_model_needs_output_weight(tmp_path):
    meta = byte_model_metadata()
    meta["llama.tie_word_embeddings"] = 0
    assert "required tensor 'output.weight' is missing" in load_error(write_byte_model(tmp_path / "m.mixrt", metadata=meta))


def test_not_a_file(tmp_path):
    with pytest.raises(mixrt.MixrtError, match="not found"):
        mixrt.load(tmp_path / "nope.mixrt")
    with pytest.raises(mixrt.MixrtError, match="is a directory, expected a .mixrt file"):
        mixrt.load(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(mixrt.MixrtError, match="is a Hugging Face checkpoint directory, not a .mixrt file: "
                                               "convert it first: mixrt-convert"):
        mixrt.load(tmp_path)


def test_random_corruption_never_crashes(good):
    # Flip random bytes of the header, metadata and table: every result must be a clean load or a
    # MixrtError, never a crash (a crash would kill the test process).
    original = good.read_bytes()
    table_end = struct.unpack_from("<Q", original, 40)[0] + struct.unpack_from("<Q", original, 48)[0]
    rng = np.random.default_rng(1)
    outcomes = {"error": 0, "loaded": 0}
    for _ in range(300):
        data = bytearray(original)
        for pos in rng.integers(0, table_end, size=rng.integers(1, 4)):
            data[pos] = rng.integers(0, 256)
        good.write_bytes(bytes(data))
        try:
            mixrt.load(good)
            outcomes["loaded"] += 1
        except mixrt.MixrtError:
            outcomes["error"] += 1
    print(outcomes)
    assert outcomes["error"] > 0


# ---- files that follow the format but whose numbers overflow ------------------------------------
@pytest.mark.parametrize("value", [3e38, np.inf, np.nan])
def test_overflowing_weights_report_non_finite_logits(good, value):
    # A norm weight of 3e38 overflows the activations (inf, then NaN); inf and NaN weights are
    # allowed by the format too (written into the file directly: mixrt.format's writer refuses
    # them). Sampling refuses such logits (greedy and at a temperature) instead of picking a token
    # from them; eval_logits hands them over as they are.
    offset_field = table_fields(good)["output_norm.weight"]["offset"]
    patch(good, struct.unpack_from("<Q", good.read_bytes(), offset_field)[0], "<f", value)
    m = mixrt.load(good)
    assert not np.isfinite(m.eval_logits(m.tokenize("ab"))).all()
    for temperature in (0.0, 0.8):
        with pytest.raises(mixrt.MixrtError, match=r"the model computed a logit of (NaN|\+inf) \(token \d+\): its "
                                                   r"weights or activations overflow float32"):
            m.generate("ab", max_tokens=2, temperature=temperature)
