# train_tokenizer.py: trains small tokenizers of the kinds mixrt runs (a Llama-style sentencepiece
# BPE; a GPT-2-style byte-level BPE with ChatML control tokens and a chat template; byte-level BPEs
# built like Llama 3's (its Split regex, ignore_merges, a post-processor adding
# <|begin_of_text|>) and Qwen2's (its regex, NFC, ChatML, no BOS)), so that test models can be
# generated with no downloaded tokenizer; the tests and
# tools/train_tokenizer.py train them on a repository's own text (repository_text). The random
# models of tests/conftest.py take them through random_model.make_random_model.
from __future__ import annotations

import io
import json
from pathlib import Path

# The chat template of the byte-level kind: ChatML, as SmolLM2 and Qwen use it.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CHATML_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def repository_text(root) -> str:
    """The Markdown and Python files under the repository directory root (but hidden, build and
    dist directories), concatenated in a fixed order."""
    root = Path(root)
    files = sorted(p for pattern in ("*.md", "*.py") for p in root.rglob(pattern)
                   if not any(part.startswith(".") or part in ("build", "dist") for part in
                              p.relative_to(root).parts))
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


def train_sentencepiece(out_dir, text: str, vocab_size: int = 1000) -> Path:
    """Writes tokenizer.model and tokenizer_config.json of a sentencepiece BPE built like
    Llama-2's (byte fallback, digits split, a space prefix, no normalisation, unk 0, BOS 1, EOS 2)."""
    import sentencepiece

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, split_digits=True, add_dummy_prefix=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, character_coverage=1.0, hard_vocab_limit=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    (out / "tokenizer.model").write_bytes(model.getvalue())
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2) + "\n")
    return out


def train_byte_bpe(out_dir, text: str, vocab_size: int = 1000) -> Path:
    """Writes tokenizer.json and tokenizer_config.json of a byte-level BPE like SmolLM2's: GPT-2
    pre-tokenizer, ChatML control tokens (<|im_start|> is BOS, <|im_end|> EOS) and a chat
    template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=CHATML_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
        "add_bos_token": False, "chat_template": CHATML_TEMPLATE}, indent=2) + "\n")
    return out


LLAMA3_SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                         "<|eot_id|>"]


def _train_split_regex_bpe(out_dir, text: str, vocab_size: int, pattern: str, specials: list,
                           ignore_merges: bool, bos: str | None, eos: str, nfc: bool = False) -> Path:
    """A byte-level BPE whose pre-tokenizer is pattern (Split, Isolated) then ByteLevel without its
    own regex, as Llama 3's and Qwen2's tokenizer.json files are; with bos, a post-processor that
    prepends it (inside a Sequence after ByteLevel, as Llama 3.1's)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if nfc:
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    if bos is not None:
        tokenizer.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                          special_tokens=[(bos, tokenizer.token_to_id(bos))])])
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": bos, "eos_token": eos, "chat_template": CHATML_TEMPLATE}, indent=2) + "\n")
    return out


def train_llama3_bpe(out_dir, text: str, vocab_size: int = 1000) -> Path:
    """A byte-level BPE built like Llama 3's tokenizer.json."""
    from ..convert.tokenizer_export import SPLIT_PATTERNS

    return _train_split_regex_bpe(out_dir, text, vocab_size, SPLIT_PATTERNS["llama3"], LLAMA3_SPECIAL_TOKENS,
                                  ignore_merges=True, bos="<|begin_of_text|>", eos="<|end_of_text|>")


def train_qwen2_bpe(out_dir, text: str, vocab_size: int = 1000) -> Path:
    """A byte-level BPE built like Qwen2's tokenizer.json (its regex, NFC normalizer, ChatML)."""
    from ..convert.tokenizer_export import SPLIT_PATTERNS

    return _train_split_regex_bpe(out_dir, text, vocab_size, SPLIT_PATTERNS["qwen2"], CHATML_SPECIAL_TOKENS,
                                  ignore_merges=False, bos=None, eos="<|im_end|>", nfc=True)


TRAINERS = {"sentencepiece": train_sentencepiece, "byte_bpe": train_byte_bpe, "llama3_bpe": train_llama3_bpe,
            "qwen2_bpe": train_qwen2_bpe}
