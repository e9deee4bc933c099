# test_model_variants.py: every architecture variant of the Llama family that mixrt runs (RoPE
# scalings linear, dynamic, yarn and llama3, attention and MLP biases, an explicit head_dim,
# Mistral's sliding window, Qwen2) as a random checkpoint in real Hugging Face layout
# (mixrt.devtools.model_variants; Llama 3 and Qwen2 with byte-level tokenizers built like theirs),
# converted through the HF path and through a GGUF written as
# llama.cpp writes it (mixrt.devtools.hf_to_gguf): both files' logits against the independent
# float64 reference (mixrt.devtools.reference_llama, read from the HF directory and from the GGUF),
# greedy tokens identical, the stored metadata, and the CUDA backend refusing what it does not run.
import json

import numpy as np
import pytest

import mixrt
from mixrt.convert import convert
from mixrt.devtools.hf_to_gguf import write_gguf
from mixrt.devtools.model_variants import VARIANTS
from mixrt.devtools.random_model import make_random_model
from mixrt.devtools.reference_llama import ReferenceLlama
from mixrt.format import MixrtWriter, read_mixrt

# GGUF has no key for dynamic NTK scaling (llama.cpp does not implement it): HF path only.
HF_ONLY = {"rope-dynamic"}
PROMPT_TOKENS = 48  # past the sliding window (16), the dynamic variant's original context (24)
N_GREEDY = 12
# Tolerance of the f32 files against the float64 reference, in logit units (these tiny models'
# logits reach |16| to |54|). The weights are the same values, so only fp32 arithmetic differs:
# measured 3.0e-6 to 7.3e-6 over the variants (fp32 roundoff 6e-8 carried through two layers and
# sums of 64 to 172 terms); 1e-4 is 14x the largest, yet far below what any variant does to the
# logits (test_variants_change_the_logits: 4.4 to 28 measured, 0.05 required), so a variant
# applied wrongly or not at all cannot pass.
ATOL = 1e-4


# The tokenizer each variant's checkpoint carries: the family's kind (trained on the repository's
# text by the `tokenizers` library as Llama 3's and Qwen2's are built), sentencepiece otherwise.
FAMILY_TOKENIZERS = {"llama3": "llama3_bpe", "qwen2": "qwen2_bpe"}


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request, spm_tokenizer, tmp_path_factory):
    """(name, HF directory, {path: .mixrt file}) with the f32 files converted from HF and GGUF."""
    from conftest import REPO
    from mixrt.devtools.train_tokenizer import TRAINERS, repository_text

    name = request.param
    root = tmp_path_factory.mktemp(name)
    tokenizer = spm_tokenizer
    if name in FAMILY_TOKENIZERS:
        tokenizer = TRAINERS[FAMILY_TOKENIZERS[name]](root / "tokenizer", repository_text(REPO), 1000)
    hf = make_random_model(root / "hf", shape="tiny", tokenizer=tokenizer, seed=1, variant=name)
    files = {"hf": root / "hf.mixrt"}
    convert(hf, files["hf"], dtype="f32", progress=False)
    if name not in HF_ONLY:
        gguf = write_gguf(root / "model.gguf", hf)
        files["gguf"] = root / "gguf.mixrt"
        convert(gguf, files["gguf"], dtype="f32", progress=False)
    return name, hf, files


@pytest.fixture(scope="module")
def prompt(variant):
    vocab = json.loads((variant[1] / "config.json").read_text())["vocab_size"]
    return np.random.default_rng(7).integers(3, vocab, PROMPT_TOKENS).tolist()


def reference_logits(reference: ReferenceLlama, name: str, ids: list) -> np.ndarray:
    # dynamic scaling: the runtime rotates each position by its own sequence length, as a
    # reference that decodes token by token does (transformers on a whole prompt would use the
    # prompt's length for every position)
    return reference.logits_stepwise(ids) if name == "rope-dynamic" else reference.logits(ids)


def test_logits_match_the_reference(variant, prompt):
    name, hf, files = variant
    want = reference_logits(ReferenceLlama.from_hf(hf), name, prompt)
    for path, file in files.items():
        got = mixrt.load(file, backend="cpu", kv_cache="f32", threads=2).eval_logits(prompt)
        err = float(np.abs(got - want).max())
        print(f"{name} via {path}: max |logit error| {err:.2e} (logits up to {np.abs(want).max():.1f})")
        assert err < ATOL, (name, path)


def test_gguf_reference_agrees(variant, prompt):
    """The GGUF states the same model: the reference read from it gives the HF reference's logits
    (up to the float32 rounding of its keys and rope_freqs)."""
    name, hf, files = variant
    if name in HF_ONLY:
        pytest.skip(f"{name}: GGUF cannot state this variant")
    from_hf = ReferenceLlama.from_hf(hf).logits(prompt)
    from_gguf = ReferenceLlama.from_gguf(hf.parent / "model.gguf").logits(prompt)
    assert np.abs(from_hf - from_gguf).max() < 1e-5, name


def test_greedy_matches_the_reference(variant, prompt):
    name, hf, files = variant
    want = ReferenceLlama.from_hf(hf).greedy(prompt[:20], N_GREEDY)
    for path, file in files.items():
        model = mixrt.load(file, backend="cpu", kv_cache="f32", threads=2)
        assert model.generate_ids(prompt[:20], N_GREEDY) == want, (name, path)


def test_variants_change_the_logits(variant, prompt, tmp_path):
    """Each variant's file with its llama.rope/bias/sliding_window keys removed (the plain Llama a
    reader ignoring them would run) gives logits far outside ATOL: the tests above see the variant."""
    name, hf, files = variant
    if name in ("llama", "head-dim"):
        pytest.skip(f"{name}: nothing to remove (head_dim is a required key)")
    source = read_mixrt(files["hf"])
    plain = tmp_path / "plain.mixrt"
    with MixrtWriter(plain) as writer:
        writer.add_metadata({k: v for k, v in source.metadata.items()
                             if not k.startswith(("llama.rope.", "llama.bias.", "llama.sliding_window"))})
        for t in source.tensors.values():
            writer.declare_tensor(t.name, t.dtype_name, t.dims)
        for t in source.tensors.values():
            writer.write_tensor(t.name, t.array())
    variant_logits = mixrt.load(files["hf"], backend="cpu", kv_cache="f32").eval_logits(prompt)
    plain_logits = mixrt.load(plain, backend="cpu", kv_cache="f32").eval_logits(prompt)
    effect = float(np.abs(variant_logits - plain_logits).max())
    print(f"{name}: effect on the logits {effect:.3f}")
    assert effect > 0.05, name


EXPECTED_KEYS = {
    "llama": {},
    "rope-linear": {"llama.rope.scaling_type": "linear", "llama.rope.scaling_factor": 4.0,
                    "llama.context_length": 256},
    "rope-dynamic": {"llama.rope.scaling_type": "dynamic", "llama.rope.original_context_length": 24,
                     "llama.context_length": 96},
    "rope-yarn": {"llama.rope.scaling_type": "yarn", "llama.rope.original_context_length": 64,
                  "llama.rope.beta_fast": 32.0, "llama.rope.beta_slow": 1.0, "llama.context_length": 256},
    "llama3": {"llama.rope.scaling_type": "llama3", "llama.rope.low_freq_factor": 1.0,
               "llama.rope.high_freq_factor": 4.0},
    "bias": {"llama.bias.qkv": 1, "llama.bias.attn_output": 1, "llama.bias.mlp": 1},
    "head-dim": {"llama.head_dim": 32},
    "mistral": {"llama.sliding_window": 16},
    "qwen2": {"llama.bias.qkv": 1, "llama.tie_word_embeddings": 1},
}


def test_recorded_keys_and_version(variant):
    name, _, files = variant
    file = read_mixrt(files["hf"])
    for key, value in EXPECTED_KEYS[name].items():
        assert file.metadata[key] == pytest.approx(value), (name, key)
    variant_keys = [k for k in file.metadata if k.startswith(("llama.rope.", "llama.bias.", "llama.sliding"))]
    assert file.header["version_minor"] == (4 if variant_keys else 0), name
    if name == "rope-yarn":  # transformers' default attention factor, 0.1 ln(factor) + 1
        assert file.metadata["llama.rope.attention_factor"] == pytest.approx(0.1 * np.log(4.0) + 1)
    if "gguf" in files and name == "llama3":  # from GGUF: llama.cpp's rope_freqs divisors instead
        gguf_meta = read_mixrt(files["gguf"]).metadata
        assert "llama.rope.scaling_type" not in gguf_meta and len(gguf_meta["llama.rope.freq_factors"]) == 16 // 2


def test_calibration_decoder_matches_the_runtime(variant, prompt):
    """The numpy decoder of sequential calibration (quant.calibration.run_layer_stack: the core's
    RoPE tables, biases, the sliding window) sees the same layer inputs as the runtime, over
    windows past the sliding window and the dynamic variant's original context."""
    from mixrt.quant.calibration import SITE_OF, collect_hessians, run_layer_stack

    name, _, files = variant
    windows = [prompt, prompt[::-1]]
    hessians = collect_hessians(files["hf"], windows=windows, ctx=len(prompt), threads=1, progress=False)
    model = read_mixrt(files["hf"])
    seen = {}

    def keep(tensor, w, h):
        seen[(int(tensor.split(".")[1]), SITE_OF[tensor.split(".")[2]])] = h
        return w

    run_layer_stack(model.metadata, lambda t: np.asarray(model.tensors[t].array(), np.float32), windows, keep,
                    sequential=False)
    assert set(seen) == set(hessians)
    for key, h in hessians.items():
        np.testing.assert_allclose(seen[key], h, rtol=1e-4, atol=1e-5 * np.abs(h).max(), err_msg=f"{name} {key}")


@pytest.mark.parametrize("calib_method", ["runtime", "sequential"])
def test_calibrated_mix_converts_every_variant(variant, tmp_path, calib_method):
    """The calibrated mix recipe (Hessians, the Fisher sensitivities of the numpy decoder with the
    variant's biases and RoPE, GPTQ) converts each variant, into logits of the same model: the
    relative RMS error against the f32 file measured 0.35 to 0.61 (4-bit groups on these tiny random
    models lose that much in every variant alike); 0.8 catches a conversion that lost the variant
    or broke the model (relative errors of 1 and more), while the exact agreement of the numpy
    decoder with the runtime is the test above."""
    name, hf, files = variant
    text = " ".join(f"line {i} of a calibration text about variant {name}." for i in range(200))
    calib = tmp_path / "calib.txt"
    calib.write_text(text)
    out = tmp_path / "mix.mixrt"
    convert(hf, out, "mix", bits=4.0, calib=calib, calib_tokens=256, calib_method=calib_method, progress=False)
    ids = list(range(3, 40))
    want = mixrt.load(files["hf"], backend="cpu").eval_logits(ids)
    got = mixrt.load(out, backend="cpu").eval_logits(ids)
    rel = float(np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2)))
    print(f"{name} mix 4 bits ({calib_method}): relative logit error {rel:.3f}")
    assert rel < 0.8, name


def test_tokenizers_of_both_paths_agree(variant):
    """The HF and GGUF files tokenize the same (Llama 3's and Qwen2's byte-level vocabularies go
    through llama.cpp's pre-tokenizer names), as the checkpoint's own tokenizer does."""
    from tokenizers import Tokenizer

    name, hf, files = variant
    text = "Hello, world! It's 12345 tokens\n\n  of café and 日本語."
    ids = [mixrt.load(file).tokenize(text) for file in files.values()]
    assert all(i == ids[0] for i in ids), name
    if (hf / "tokenizer.json").exists():
        assert ids[0] == Tokenizer.from_file(str(hf / "tokenizer.json")).encode(text).ids, name


def test_cuda_refuses_the_variants(variant):
    """The CUDA backend does not implement these yet: backend="cuda" is refused naming what, and
    "auto" runs on the CPU saying why."""
    name, _, files = variant
    if name in ("llama", "head-dim"):
        pytest.skip(f"{name}: CUDA runs it")
    model = mixrt.load(files["hf"], backend="auto")
    assert model.backend == "cpu"
    assert "CUDA backend does not implement" in model.backend_note or "without the CUDA" in model.backend_note
    with pytest.raises(mixrt.MixrtError, match="backend cuda requested but unavailable"):
        mixrt.load(files["hf"], backend="cuda")


@pytest.mark.parametrize("embed_dtype", ["q8", "q4"])
def test_llama3_sized_vocabulary(tmp_path, embed_dtype):
    """A 128256-token vocabulary (Llama 3's) with a quantized embedding and head loads and runs;
    the logits cover it."""
    from mixrt.devtools.random_model import make_random_mixrt

    path = tmp_path / "big-vocab.mixrt"
    make_random_mixrt(path, shape="tiny", recipe="q4", embed_dtype=embed_dtype, vocab=128256)
    model = mixrt.load(path, backend="cpu", threads=2)
    assert model.n_vocab == 128256
    logits = model.eval_logits([5, 128255, 70000])
    assert logits.shape == (3, 128256) and np.isfinite(logits).all()
