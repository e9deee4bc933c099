# test_tokenizer.py: the native tokenizers token for token against the reference libraries:
# byte-level BPE (SmolLM2 converted from GGUF) vs `tokenizers` on its tokenizer.json, sentencepiece
# BPE (random models with a vocabulary trained on the repository's text and with Llama-2's) vs
# `sentencepiece`; and the tokenizer export.
# Run: python -m pytest tests/test_tokenizer.py -q -s  (-s shows the measurements)
import random
import shutil
import time

import gguf
import numpy as np
import pytest
import sentencepiece
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from conftest import LLAMA2_SPM, REPO, SHAKESPEARE, SMOLLM2_HF_FILES, WIKI_EVAL, random_model_file, require
from mixrt.convert.tokenizer_export import (tokenizer_metadata_from_gguf,
                                            tokenizer_metadata_from_hf_dir)
from mixrt.devtools.train_tokenizer import repository_text

TRICKY = [
    "", " ", "  ", "   ", "\n", "\n\n", "\t", " \t \n ", "a", " a", "a ", "  a  ", "Hello world",
    "Hello  world", "it's I'm we're they've he'll she'd IT'S 'S 're 'll", " 's", "''s", "x'sy",
    "12345678901234567890", "3.14159 2,000,000 1e10 0x1F", "٣٤٥ ²³ ½ ⅞ Ⅻ ①②",
    "新年快乐，你好世界！", "日本語のテキスト", "한국어 텍스트", "Ελληνικά", "Привет, мир!",
    "café naïve résumé Ångström", "e\u0301 a\u0308", "مرحبا بالعالم", "😀 🤖👍🏽 👨‍👩‍👧‍👦 🇫🇷",
    "\u200b\u200d\ufeff", "\u00a0\u3000\u2028\u2029\x85", "a\u00a0b", "\x00\x01\x04\x1f\x7f",
    "<|im_start|>user\nHi<|im_end|>\n", "<|im_start|><|im_end|>", "a<|endoftext|>b", "<|im_start",
    "<s> </s> <unk> <s>x", "    def f(x):\n        return x  \n", "line1\r\nline2\rline3",
    "!!!???...---", "$100 & 50% @home #tag", "A" * 1000, " " * 100 + "x", "\n" * 50, "ab" * 300,
    "▁ ▁▁ x▁y", "\ufffd", "ﬁ ﬂ ＡＢＣ １２３", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈 \U0010fffd",
]
CHAT = "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi there!<|im_end|>\n"


def read_text(path) -> str:
    """The file's exact text (its \\r\\n line ends kept)."""
    return require(path).read_bytes().decode("utf-8")


# Texts the tokenizers are checked on: two real ones from ../shared, and the repository's own.
TEXTS = {"wikitext-eval": WIKI_EVAL, "shakespeare": SHAKESPEARE, "repository": None}


def source_text(source: str) -> str:
    return repository_text(REPO) if TEXTS[source] is None else read_text(TEXTS[source])


def assert_same_ids(got, want, what):
    first = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
    assert got == want, (f"{what}: first difference at token {first} of {len(want)}: "
                         f"got {got[first:first + 8]}, expected {want[first:first + 8]}")


def random_id_sequences(n_vocab, seed=0):
    """Random sequences over the whole vocabulary and over its first 300 ids (control tokens,
    byte tokens: the cases where decoding has to repair UTF-8)."""
    rng = random.Random(seed)
    return [[rng.randrange(limit) for _ in range(rng.randrange(12))]
            for limit in (n_vocab, 300) for _ in range(2000)]


def random_byte_strings(seed=0):
    rng = random.Random(seed)
    strings = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(1500)]
    pieces = b"\xc2\xe2\xf0\x80\xbf\xedA "  # lead and continuation bytes: near-valid UTF-8
    strings += [bytes(rng.choice(pieces) for _ in range(rng.randrange(1, 20)))
                for _ in range(1500)]
    return strings


# ---- the tokenizer export (no runtime needed) --------------------------------------------------

@pytest.mark.real_model
def test_smollm2_gguf_and_hf_exports_agree(smollm2_gguf):
    from_gguf = tokenizer_metadata_from_gguf(gguf.GGUFReader(smollm2_gguf))
    from_hf = tokenizer_metadata_from_hf_dir(require(SMOLLM2_HF_FILES))
    assert from_gguf.keys() == from_hf.keys()
    for key, value in from_gguf.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == from_hf[key].dtype and np.array_equal(value, from_hf[key]), key
        else:
            assert value == from_hf[key], key
    assert from_gguf["tokenizer.model"] == "byte_bpe"
    assert from_gguf["tokenizer.add_bos"] == 0
    assert (from_gguf["tokenizer.bos_id"], from_gguf["tokenizer.eos_id"]) == (1, 2)
    types = from_gguf["tokenizer.token_types"]
    assert list(np.flatnonzero(types == 3)) == list(range(17))
    print(f"\nSmolLM2 export: {len(from_gguf['tokenizer.tokens'])} tokens, "
          f"{len(from_gguf['tokenizer.merges'])} merges, 17 control tokens, GGUF == tokenizer.json")


def test_llama2_export(llama2_spm, tmp_path):
    shutil.copy(llama2_spm, tmp_path / "tokenizer.model")
    meta = tokenizer_metadata_from_hf_dir(tmp_path)
    types = meta["tokenizer.token_types"]
    assert meta["tokenizer.model"] == "sentencepiece_bpe"
    assert len(meta["tokenizer.tokens"]) == len(meta["tokenizer.scores"]) == len(types) == 32000
    assert {t: int((types == t).sum()) for t in (1, 2, 3, 6)} == {1: 31741, 2: 1, 3: 2, 6: 256}
    assert meta["tokenizer.scores"].dtype == np.float32 and types.dtype == np.int32
    special = (meta["tokenizer.bos_id"], meta["tokenizer.eos_id"], meta["tokenizer.unk_id"])
    assert special == (1, 2, 0)
    assert meta["tokenizer.add_bos"] == 1 and meta["tokenizer.add_space_prefix"] == 1


def test_hf_export_prefers_tokenizer_model_over_other_kinds_and_pads_to_vocab_size(spm_tokenizer,
                                                                                    tmp_path):
    shutil.copy(spm_tokenizer / "tokenizer.model", tmp_path / "tokenizer.model")
    vocab = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model")).vocab_size()
    metaspace = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    metaspace.pre_tokenizer = pre_tokenizers.Metaspace()
    metaspace.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text(f'{{"vocab_size": {vocab + 64}}}')
    meta = tokenizer_metadata_from_hf_dir(tmp_path)
    assert meta["tokenizer.model"] == "sentencepiece_bpe"
    assert len(meta["tokenizer.tokens"]) == len(meta["tokenizer.scores"]) == vocab + 64
    assert meta["tokenizer.tokens"][vocab] == f"[PAD{vocab}]"
    assert set(meta["tokenizer.token_types"][vocab:]) == {5}


def write_tokenizer_json(tokenizer: Tokenizer):
    return lambda d: tokenizer.save(str(d / "tokenizer.json"))


def byte_level_bpe_with_nfkc() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.normalizer = normalizers.NFKC()
    return tokenizer


def split_regex_bpe(pattern: str) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"), pre_tokenizers.ByteLevel(use_regex=False)])
    return tokenizer


def metaspace_bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    return tokenizer


def train_sentencepiece(**options):
    def make(d):
        text = d / "train.txt"
        text.write_text(repository_text(REPO)[:200_000])
        sentencepiece.SentencePieceTrainer.train(
            input=str(text), model_prefix=str(d / "tokenizer"), vocab_size=300, minloglevel=2,
            **options)
        text.unlink()
    return make


def write_gguf(model: str, pre: str):
    def make(d):
        writer = gguf.GGUFWriter(str(d / "tokenizer.gguf"), "llama")
        writer.add_tokenizer_model(model)
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(["a", "b", "ab"])
        writer.add_token_merges(["a b"])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return make


@pytest.mark.parametrize("make, message", [
    (write_tokenizer_json(Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))),
     "model type 'WordPiece' is not supported"),
    (write_tokenizer_json(Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0))),
     "model type 'Unigram' is not supported"),
    (write_tokenizer_json(metaspace_bpe()), "pre_tokenizer 'Metaspace' is not supported"),
    (write_tokenizer_json(byte_level_bpe_with_nfkc()), "normalizer 'NFKC' is not supported"),
    (train_sentencepiece(model_type="unigram"), "model type 'unigram' is not supported"),
    (train_sentencepiece(model_type="bpe"), "normalizer 'nmt_nfkc' is not supported"),
    (train_sentencepiece(model_type="bpe", normalization_rule_name="identity"),
     "whitespace options are not supported"),
    (write_gguf("gpt2", "deepseek-llm"), "tokenizer.ggml.pre 'deepseek-llm' is not supported"),
    (write_tokenizer_json(split_regex_bpe(r"\p{N}+| ?\p{L}+")),
     "pre_tokenizer Sequence is supported only as Llama 3's or Qwen2's Split regex"),
    (write_gguf("bert", "default"), "tokenizer.ggml.model 'bert' is not supported"),
], ids=["wordpiece", "unigram-json", "metaspace", "normalizer", "unigram-spm", "nfkc-spm",
        "extra-whitespace-spm", "gguf-pre", "split-regex", "gguf-model"])
def test_export_refuses_what_the_runtime_cannot_reproduce(make, message, tmp_path):
    make(tmp_path)
    gguf_file = tmp_path / "tokenizer.gguf"
    with pytest.raises(ValueError, match=message):
        if gguf_file.exists():
            tokenizer_metadata_from_gguf(gguf.GGUFReader(gguf_file))
        else:
            tokenizer_metadata_from_hf_dir(tmp_path)


def test_gguf_pre_tokenizers_map_to_the_runtimes(tmp_path):
    """llama.cpp's pre-tokenizer names become tokenizer.pre (llama-bpe with ignore_merges, as
    llama.cpp encodes Llama 3); GPT-2 style ones add no keys, so their files stay as they were."""
    expected = {"gpt-2": {}, "smollm": {}, "llama-bpe": {"tokenizer.pre": "llama3", "tokenizer.ignore_merges": 1},
                "qwen2": {"tokenizer.pre": "qwen2", "tokenizer.normalizer": "nfc"}}
    keys_of_interest = ("tokenizer.pre", "tokenizer.ignore_merges", "tokenizer.normalizer")
    for pre, keys in expected.items():
        (tmp_path / pre).mkdir()
        write_gguf("gpt2", pre)(tmp_path / pre)
        meta = tokenizer_metadata_from_gguf(gguf.GGUFReader(tmp_path / pre / "tokenizer.gguf"))
        assert {k: v for k, v in meta.items() if k in keys_of_interest} == keys, pre


# ---- byte-level BPE with the Llama 3 and Qwen2 pre-tokenizers vs `tokenizers` -------------------

@pytest.fixture(scope="session", params=["llama3_bpe", "qwen2_bpe", "byte_bpe"])
def regex_pair(request, tmp_path_factory):
    """(mixrt model, `tokenizers` reference) of a byte-level BPE trained by the `tokenizers`
    library on the repository's text with Llama 3's pre-tokenizer (and ignore_merges, and the
    post-processor adding <|begin_of_text|>), Qwen2's, or GPT-2's (byte_bpe). The reference reads
    control tokens written in text as text, as mixrt's tokenize does by default (the repository's
    text names them)."""
    from mixrt.devtools.train_tokenizer import TRAINERS

    root = tmp_path_factory.mktemp(request.param)
    tokenizer_dir = TRAINERS[request.param](root / "tokenizer", repository_text(REPO), 2000)
    import mixrt

    reference = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    reference.encode_special_tokens = True
    return mixrt.load(random_model_file(root, tokenizer_dir)), reference


def test_regex_pre_tokenizer_keys(regex_pair):
    model, _ = regex_pair
    meta = model.metadata()
    pre = {"llama3": ("llama3", 1, None), "qwen2": ("qwen2", None, "nfc"), "gpt2": (None, None, None)}
    name = meta.get("tokenizer.pre", "gpt2")
    assert (meta.get("tokenizer.pre"), meta.get("tokenizer.ignore_merges"), meta.get("tokenizer.normalizer")) \
        == pre[name]


@pytest.mark.parametrize("source", TEXTS)
def test_regex_pre_tokenizers_whole_file_and_lines(regex_pair, source):
    model, reference = regex_pair
    text = source_text(source)
    assert_same_ids(model.tokenize(text, add_bos=False), reference.encode(text, add_special_tokens=False).ids,
                    source)
    lines = text.splitlines(keepends=True)
    want = [e.ids for e in reference.encode_batch(lines, add_special_tokens=False)]
    bad = [i for i, line in enumerate(lines) if model.tokenize(line, add_bos=False) != want[i]]
    assert not bad, f"line {lines[bad[0]]!r}: got {model.tokenize(lines[bad[0]], add_bos=False)}, " \
                    f"expected {want[bad[0]]}"


def test_regex_pre_tokenizers_tricky_strings(regex_pair):
    model, reference = regex_pair
    extra = ["'S 'T 'RE 'Ve 'LL 'D 'M 'ſ 'ſt", "a'sb 's's", "1 12 123 1234 12345 ٣٤٥٦ ½¾", "x\r\n\r\ny",
             " \n \n  x", "\t\tfoo\n\n\tbar", "!!\n\n??\r", " ,\n", "a\u00a0b\u3000c", "\u2028x\u0085y",
             # NFC (qwen2): reordering, composition across marks, Hangul, singletons, exclusions
             "e\u0301\u0327 a\u0327\u0301 q\u0307\u0323 \u1100\u1161\u11a8 \uac00\u11a8 \u212b\u2126 \u0344 \u0958"]
    for text in TRICKY + extra:
        assert_same_ids(model.tokenize(text, add_bos=False), reference.encode(text, add_special_tokens=False).ids,
                        repr(text))
        ids = reference.encode(text, add_special_tokens=False).ids
        assert model.detokenize(ids) == reference.decode(ids), repr(text)


def test_ignore_merges_takes_vocabulary_words_whole(tmp_path):
    """With ignore_merges (Llama 3), a word that is a vocabulary entry is one token even where the
    merges would not build it ("abc": merging b+c first leaves a + bc); without, the merges rule."""
    import json

    import mixrt
    from mixrt.convert.tokenizer_export import SPLIT_PATTERNS

    for ignore in (True, False):
        tokenizer = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5, "<s>": 6},
                                         merges=[("b", "c"), ("a", "b")], ignore_merges=ignore))
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(SPLIT_PATTERNS["llama3"]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        d = tmp_path / str(ignore)
        (d / "tok").mkdir(parents=True)
        tokenizer.save(str(d / "tok" / "tokenizer.json"))
        (d / "tok" / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "<s>"}))
        model = mixrt.load(random_model_file(d, d / "tok"))
        want = tokenizer.encode("abc abc", add_special_tokens=False).ids
        # " abc" is not an entry (the space byte has no token and is dropped): merged as without
        assert want == ([5, 0, 4] if ignore else [0, 4, 0, 4])
        assert model.tokenize("abc abc", add_bos=False) == want, ignore


# Separators between the codepoints of the every-codepoint test: each codepoint meets the start of
# a word, a space, an apostrophe, digits, letters, newlines and other classes on both sides.
SEPARATORS = ["", " ", "'", "1", "\n", "a", "  ", "\r\n", ".", "'s", "12345", "\u00a0"]


def test_regex_pre_tokenizers_every_codepoint(regex_pair):
    """Every Unicode scalar value (all 1,112,064), in runs of 24 consecutive ones joined by
    varying separators, tokenizes as `tokenizers` does."""
    model, reference = regex_pair
    scalars = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts = []
    for start in range(0, len(scalars), 24):
        block = scalars[start:start + 24]
        texts.append("".join(chr(c) + SEPARATORS[(start // 24 + k) % len(SEPARATORS)] for k, c in enumerate(block)))
    want = [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    bad = [i for i, text in enumerate(texts) if model.tokenize(text, add_bos=False) != want[i]]
    print(f"\n{len(texts)} texts covering every codepoint: {len(bad)} differ")
    assert not bad, f"{texts[bad[0]]!r}: got {model.tokenize(texts[bad[0]], add_bos=False)}, expected {want[bad[0]]}"


def test_regex_pre_tokenizers_invalid_utf8(regex_pair):
    from mixrt import _core

    model, reference = regex_pair
    core = _core.Model(model.path, "cpu")
    for raw in random_byte_strings():
        want = reference.encode(raw.decode("utf-8", errors="replace"), add_special_tokens=False).ids
        assert core.tokenize(raw, 0, True) == want, raw


def test_regex_pre_tokenizers_bos_and_specials(regex_pair):
    """Llama 3 style: the post-processor's <|begin_of_text|> is the file's BOS, added by default;
    Qwen2 and GPT-2 style: no BOS. Control tokens parse with special=True."""
    model, plain = regex_pair
    reference = Tokenizer.from_str(plain.to_str())  # control tokens in text parsed
    text = "Hello <|im_start|> world <|eot_id|>"
    assert model.tokenize(text, special=True) == reference.encode(text).ids
    assert model.tokenize("Hi") == reference.encode("Hi").ids
    assert model.tokenize(text) == plain.encode(text).ids


# ---- byte-level BPE: SmolLM2 vs `tokenizers` ---------------------------------------------------

@pytest.fixture(scope="session")
def smollm2(smollm2_f16):
    import mixrt

    return mixrt.load(smollm2_f16)


@pytest.fixture(scope="session")
def hf_tokenizer():
    return Tokenizer.from_file(str(require(SMOLLM2_HF_FILES / "tokenizer.json")))


@pytest.mark.real_model
@pytest.mark.parametrize("path", [WIKI_EVAL, SHAKESPEARE], ids=["wikitext-eval", "shakespeare"])
def test_byte_bpe_whole_file(smollm2, hf_tokenizer, path):
    text = read_text(path)
    start = time.perf_counter()
    got = smollm2.tokenize(text, add_bos=False)
    seconds = time.perf_counter() - start
    want = hf_tokenizer.encode(text).ids
    assert_same_ids(got, want, path.name)
    print(f"\nbyte_bpe {path.name}: {len(text.encode())} bytes -> {len(got)} tokens, equal to "
          f"tokenizers; encoded in {seconds * 1000:.0f} ms")
    assert seconds < 2.0
    assert smollm2.detokenize(got) == hf_tokenizer.decode(want) == text


@pytest.mark.real_model
def test_byte_bpe_line_by_line(smollm2, hf_tokenizer):
    lines = read_text(WIKI_EVAL).splitlines(keepends=True) + \
        read_text(SHAKESPEARE).splitlines(keepends=True)
    want = [e.ids for e in hf_tokenizer.encode_batch(lines)]
    got = [smollm2.tokenize(line, add_bos=False) for line in lines]
    bad = [i for i in range(len(lines)) if got[i] != want[i]]
    print(f"\nbyte_bpe: {len(lines)} lines, {sum(map(len, want))} tokens, {len(bad)} mismatches")
    assert not bad, f"line {lines[bad[0]]!r}: got {got[bad[0]]}, expected {want[bad[0]]}"


@pytest.mark.real_model
def test_byte_bpe_tricky_strings(smollm2, hf_tokenizer):
    for text in TRICKY:
        want = hf_tokenizer.encode(text).ids
        assert_same_ids(smollm2.tokenize(text, add_bos=False, special=True), want, repr(text))
        assert smollm2.detokenize(want) == hf_tokenizer.decode(want), repr(text)
        assert smollm2.detokenize(want, special=True) == \
            hf_tokenizer.decode(want, skip_special_tokens=False), repr(text)
    print(f"\nbyte_bpe: {len(TRICKY)} tricky strings equal to tokenizers (encode and decode)")


@pytest.mark.real_model
def test_byte_bpe_special_tokens(smollm2, hf_tokenizer):
    assert smollm2.tokenize("<|im_start|>", add_bos=False, special=True) == [1]
    assert_same_ids(smollm2.tokenize(CHAT, add_bos=False, special=True), hf_tokenizer.encode(CHAT).ids, "chat")
    plain = Tokenizer.from_file(str(SMOLLM2_HF_FILES / "tokenizer.json"))
    plain.encode_special_tokens = True
    for text in [CHAT] + TRICKY:
        assert_same_ids(smollm2.tokenize(text, add_bos=False, special=False),
                        plain.encode(text).ids, f"special=False {text!r}")
    assert smollm2.tokenize("Hi", add_bos=True)[0] == 1
    assert smollm2.tokenize("Hi") == hf_tokenizer.encode("Hi").ids  # the file says: no BOS
    # By default control tokens written in text are plain text.
    assert smollm2.tokenize(CHAT) == smollm2.tokenize(CHAT, special=False)
    ids = smollm2.tokenize(CHAT, special=True)
    assert smollm2.detokenize(ids) == "system\nYou are helpful.\nuser\nHi there!\n"
    assert smollm2.detokenize(ids, special=True) == CHAT


@pytest.mark.real_model
def test_byte_bpe_decodes_any_ids_like_tokenizers(smollm2, hf_tokenizer):
    sequences = random_id_sequences(smollm2.n_vocab)
    for special in (False, True):
        for ids in sequences:
            assert smollm2.detokenize(ids, special=special) == \
                hf_tokenizer.decode(ids, skip_special_tokens=not special), ids
    print(f"\nbyte_bpe: {len(sequences)} random id sequences decode as tokenizers does")


@pytest.mark.real_model
def test_byte_bpe_invalid_utf8(smollm2_f16, hf_tokenizer):
    """Invalid UTF-8 (reachable from C, through the binding; Python strings are valid) is
    tokenized like the text Python's errors="replace" makes of it, never a crash."""
    from mixrt import _core

    model = _core.Model(str(smollm2_f16), "cpu")
    strings = random_byte_strings()
    for raw in strings:
        want = hf_tokenizer.encode(raw.decode("utf-8", errors="replace")).ids
        assert model.tokenize(raw, 0, True) == want, raw
    print(f"\nbyte_bpe: {len(strings)} random byte strings tokenized as their repaired text")


# ---- sentencepiece BPE: a trained vocabulary and Llama-2's vs `sentencepiece` -------------------

@pytest.fixture(scope="session", params=["trained", "llama2"])
def spm_pair(request, tmp_path_factory):
    """(mixrt model, sentencepiece reference) of one sentencepiece vocabulary: the one trained on
    the repository's text (mixrt.devtools.train_tokenizer), or Llama-2's (from ../shared), each on a
    tiny random model."""
    import mixrt

    if request.param == "trained":
        spm_file = request.getfixturevalue("spm_tokenizer") / "tokenizer.model"
        model_file = request.getfixturevalue("random_model")
    else:
        spm_file = require(LLAMA2_SPM)
        model_file = random_model_file(tmp_path_factory.mktemp("random-llama2"), spm_file)
    return mixrt.load(model_file), sentencepiece.SentencePieceProcessor(model_file=str(spm_file))


@pytest.mark.parametrize("source", TEXTS)
def test_sentencepiece_whole_file(spm_pair, source):
    model, spm_reference = spm_pair
    text = source_text(source)
    start = time.perf_counter()
    got = model.tokenize(text, add_bos=False, special=False)
    seconds = time.perf_counter() - start
    want = spm_reference.encode(text)
    assert_same_ids(got, want, source)
    print(f"\nsentencepiece_bpe {source}: {len(text.encode())} bytes -> {len(got)} tokens, "
          f"equal to sentencepiece; encoded in {seconds * 1000:.0f} ms")
    assert seconds < 2.0
    # Decoding gives the text back, but for U+2581, which sentencepiece reserves for the space.
    assert model.detokenize(got) == spm_reference.decode(want) == text.replace("\u2581", " ")


@pytest.mark.parametrize("source", TEXTS)
def test_sentencepiece_line_by_line(spm_pair, source):
    model, spm_reference = spm_pair
    lines = source_text(source).splitlines(keepends=True)
    want = [spm_reference.encode(line) for line in lines]
    got = [model.tokenize(line, add_bos=False, special=False) for line in lines]
    bad = [i for i in range(len(lines)) if got[i] != want[i]]
    print(f"\nsentencepiece_bpe {source}: {len(lines)} lines, {sum(map(len, want))} tokens, "
          f"{len(bad)} mismatches")
    assert not bad, f"line {lines[bad[0]]!r}: got {got[bad[0]]}, expected {want[bad[0]]}"


def test_sentencepiece_tricky_strings(spm_pair):
    model, spm_reference = spm_pair
    for text in TRICKY:
        want = spm_reference.encode(text)
        assert_same_ids(model.tokenize(text, add_bos=False, special=False), want, repr(text))
        assert model.detokenize(want) == spm_reference.decode(want), repr(text)
    print(f"\nsentencepiece_bpe: {len(TRICKY)} tricky strings equal to sentencepiece "
          "(encode and decode)")


def test_sentencepiece_bos_and_special_tokens(spm_pair):
    model, spm_reference = spm_pair
    assert model.tokenize("Hello world") == [1] + spm_reference.encode("Hello world")  # add_bos 1
    assert model.tokenize("Hello", add_bos=False) == spm_reference.encode("Hello")
    # Control tokens in text are plain text unless special, then each text segment is encoded on
    # its own, with its own space prefix.
    text = "<s>[INST] Hi [/INST]</s>"
    assert model.tokenize(text, add_bos=False, special=False) == spm_reference.encode(text)
    assert model.tokenize(text, add_bos=False, special=True) == \
        [1] + spm_reference.encode("[INST] Hi [/INST]") + [2]
    hello = spm_reference.encode("Hello")
    assert model.detokenize([1, *hello, 2]) == "Hello"
    assert model.detokenize([1, *hello, 2], special=True) == "<s>Hello</s>"


def test_sentencepiece_decodes_any_ids_like_sentencepiece(spm_pair):
    model, spm_reference = spm_pair
    sequences = random_id_sequences(model.n_vocab)
    for ids in sequences:
        assert model.detokenize(ids) == spm_reference.decode(ids), ids
    print(f"\nsentencepiece_bpe: {len(sequences)} random id sequences decode as sentencepiece does")


def test_sentencepiece_invalid_utf8(spm_pair):
    """sentencepiece takes bytes too, as does the C API (through the binding): each byte of an
    ill-formed sequence becomes U+FFFD."""
    from mixrt import _core

    model, spm_reference = spm_pair
    core = _core.Model(model.path, "cpu")
    strings = random_byte_strings()
    for raw in strings:
        assert core.tokenize(raw, 0, False) == spm_reference.encode(raw), raw
    print(f"\nsentencepiece_bpe: {len(strings)} random byte strings tokenized as sentencepiece "
          "does")
