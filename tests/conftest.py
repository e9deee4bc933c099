# conftest.py: shared fixtures: paths into ../shared (real data, read-only), converted models
# cached in tests/.cache/ (each conversion happens once per checkout), and generated models whose
# tokenizers are trained here on the repository's text (mixrt.devtools), so that everything but
# the real-model tests runs without ../shared.
import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MIXRT_SHARED", REPO.parent / "shared"))
CACHE = REPO / "tests" / ".cache"

SMOLLM2_GGUF = SHARED / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HF_FILES = SHARED / "models" / "smollm2-135m-instruct" / "hf"
LLAMA2_SPM = SHARED / "tokenizers" / "llama2" / "tokenizer.model"
WIKI_EVAL = SHARED / "data" / "wikitext-2-raw" / "wiki.test.eval-half.txt"
WIKI_CALIB = SHARED / "data" / "wikitext-2-raw" / "wiki.test.calib-half.txt"
SHAKESPEARE = SHARED / "data" / "tinyshakespeare" / "input.txt"


# Without ../shared the tests that need its real data skip with this reason; CI, which is promised
# ../shared, sets MIXRT_REQUIRE_SHARED=1 so that missing data fails instead.
SHARED_REASON = ("needs the real SmolLM2 checkpoint, Llama-2 tokenizer and texts of ../shared "
                 "(set MIXRT_SHARED to their directory)")


def require(path: Path) -> Path:
    """path, or a skip (a failure under MIXRT_REQUIRE_SHARED=1) when the real data is missing."""
    if not path.exists():
        message = f"{SHARED_REASON}: {path} is missing"
        if os.environ.get("MIXRT_REQUIRE_SHARED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def tool_module(name: str):
    """The script tools/<name>.py imported as a module (tools/ is a folder of scripts, not a
    package), for tests of what a tool does."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # registered as an import is (dataclasses look it up)
    spec.loader.exec_module(module)
    return module


def cached_conversion(name: str, make) -> Path:
    """Runs make(out_path) once per checkout and returns the cached file."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / name
    if not out.exists():
        make(out)
    return out


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return require(SMOLLM2_GGUF)


@pytest.fixture(scope="session")
def smollm2_f32(smollm2_gguf) -> Path:
    """SmolLM2 converted from the GGUF with f32 weights (exactly the dequantized GGUF values)."""
    from mixrt.convert import convert

    return cached_conversion("smollm2-f32.mixrt",
                             lambda out: convert(smollm2_gguf, out, dtype="f32", progress=False))


@pytest.fixture(scope="session")
def smollm2_f16(smollm2_gguf) -> Path:
    from mixrt.convert import convert

    return cached_conversion("smollm2-f16.mixrt",
                             lambda out: convert(smollm2_gguf, out, dtype="f16", progress=False))


@pytest.fixture(scope="session")
def llama2_spm() -> Path:
    return require(LLAMA2_SPM)


@pytest.fixture(scope="session")
def spm_tokenizer(tmp_path_factory) -> Path:
    """A Llama-style sentencepiece tokenizer (tokenizer.model, tokenizer_config.json) trained on
    the repository's own text."""
    from mixrt.devtools.train_tokenizer import repository_text, train_sentencepiece

    return train_sentencepiece(tmp_path_factory.mktemp("spm-tokenizer"), repository_text(REPO))


@pytest.fixture(scope="session")
def chatml_tokenizer(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer (tokenizer.json) with ChatML control tokens and a chat
    template, trained on the repository's own text."""
    from mixrt.devtools.train_tokenizer import repository_text, train_byte_bpe

    return train_byte_bpe(tmp_path_factory.mktemp("chatml-tokenizer"), repository_text(REPO))


def random_model_file(directory: Path, tokenizer: Path) -> Path:
    """A tiny randomly initialised Llama (mixrt.devtools.random_model) with the given tokenizer,
    as a Hugging Face directory in directory/hf converted to directory/model.mixrt (f16)."""
    from mixrt.convert import convert
    from mixrt.devtools.random_model import make_random_model

    make_random_model(directory / "hf", shape="tiny", tokenizer=tokenizer, seed=0)
    convert(directory / "hf", directory / "model.mixrt", dtype="f16", progress=False)
    return directory / "model.mixrt"


@pytest.fixture(scope="session")
def tiny_hf(spm_tokenizer, tmp_path_factory) -> Path:
    """The tiny random Llama (mixrt.devtools.random_model, seed 0) as a Hugging Face directory."""
    from mixrt.devtools.random_model import make_random_model

    return make_random_model(tmp_path_factory.mktemp("tiny") / "tiny", shape="tiny",
                             tokenizer=spm_tokenizer, seed=0)


@pytest.fixture(scope="session")
def random_model(spm_tokenizer, tmp_path_factory) -> Path:
    """A tiny random Llama with the trained sentencepiece tokenizer, as f16 .mixrt."""
    return random_model_file(tmp_path_factory.mktemp("random-spm"), spm_tokenizer)


@pytest.fixture(scope="session")
def random_chat_model(chatml_tokenizer, tmp_path_factory) -> Path:
    """A tiny random Llama with the trained ChatML byte-level tokenizer and its chat template."""
    return random_model_file(tmp_path_factory.mktemp("random-chatml"), chatml_tokenizer)
