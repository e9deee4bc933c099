# test_forward_reference.py: the runtime against the independent float64 numpy reference
# (mixrt.devtools.reference_llama) on the real SmolLM2: logits of the f32 and f16 files on real prompts,
# and greedy token ids, with an f32 KV cache; and the default f16 KV cache against the reference with
# and without its cached keys and values rounded to f16. Prompts are tokenized by the Hugging Face
# tokenizer, not by the runtime.
import numpy as np
import pytest
from tokenizers import Tokenizer

from conftest import SMOLLM2_HF_FILES, require
from mixrt.devtools.reference_llama import ReferenceLlama

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

CHAT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n")

# Sentences of the wikitext-2 test text in its raw formatting (36, 46 and 56 tokens) and a chat
# turn (41 tokens).
LOGIT_PROMPTS = {
    "wiki_boulter": " Robert Boulter is an English film , television and theatre actor . He had a guest"
                    " @-@ starring role on the television series The Bill in 2000 .",
    "wiki_powder": " The development of smokeless powder , based on nitroglycerine or nitrocellulose , by"
                   " the French inventor Paul Vielle in 1884 was a further step allowing smaller"
                   " charges of propellant with longer barrels .",
    "wiki_projectiles": " The nature of the projectiles also changed during the ironclad period ."
                        " Initially , the best armor @-@ piercing projectile was a solid cast @-@ iron"
                        " shot . Later , shot of chilled iron , a harder iron alloy , gave better armor"
                        " @-@ piercing qualities .",
    "chat_sky": CHAT.format("Explain in a few sentences why the sky is blue."),
}

# Prompts whose 32-token greedy continuation by the reference has no end token and no near-tie
# (checked by test_greedy_prompts_are_well_posed).
GREEDY_PROMPTS = {
    "wiki_inventor": " The development of smokeless powder , based on nitroglycerine or"
                     " nitrocellulose , by the French inventor",
    "chat_sky": CHAT.format("Explain in a few sentences why the sky is blue."),
    "code": "def fibonacci(n):\n",
}
N_GREEDY = 32
END_TOKENS = (0, 1, 2)  # <|endoftext|>, <|im_start|>, <|im_end|>

# Tolerance of the f32 file, in logit units (SmolLM2's logits reach |40|, std about 7). The weights
# are identical (the f32 file holds exactly the dequantized GGUF values the reference uses), so
# the difference is only fp32 rounding of the runtime's arithmetic. Measured: the same forward pass
# in numpy float32 (BLAS sgemm, exact exp) differs from float64 by at most 6e-5 to 8e-5 on these
# prompts (2e-6 of the logit range, about 30 units of fp32 roundoff 6e-8 after 30 layers with
# K = 576/1536). Another fp32 summation order (per-row SIMD accumulators instead of blocked GEMM)
# typically grows the dot-product error by sqrt(lanes) to sqrt(K) / sqrt(blocks), at most a few
# times; 1e-3 leaves a margin above 10x over the measured fp32 error, yet is 30x below the effect
# of merely rounding the weights to f16 (3e-2 to 4e-2), so a real defect cannot hide under it.
ATOL_F32 = 1e-3
# Tolerance of the f16 file against the unrounded float64 reference. Each matrix and the embedding
# are rounded to f16 (relative error <= 2^-11 = 4.9e-4 per weight, norms stay f32). Measured in the
# reference itself (float64 with f16-rounded matrices vs unrounded): max 2.9e-2 to 4.1e-2, i.e. 1e-3
# of the logit range, as expected from the ~3e-4 rms relative error of every matmul output carried
# through 30 residual layers. 0.15 is 3.5x the largest measured effect. The runtime must in addition
# match the f16-rounded reference within ATOL_F32: both compute with the same f16 weights.
ATOL_F16 = 0.15
# Tolerances of the f16 KV cache (f32 file). Rounding every cached key and value to f16 (relative
# error <= 2^-11) moves the reference's own logits by 1.2e-2 to 4.6e-2 on these prompts (measured:
# float64 reference with and without the rounding), like rounding the weights: ATOL_F16 applies.
# Against the reference that rounds its cache too, the runtime differs by 0.9e-2 to 1.3e-2
# (measured), not by fp32 roundoff alone: a cached value whose fp32 and float64 forms lie on either
# side of a half-way point rounds to neighbouring halves, and each such flip moves the later layers'
# inputs, so the two caches part by a few more. ATOL_KV16 = 0.04 is 3x the largest measured, yet 4x
# below the effect of not rounding the cache at all, so a cache that stored the wrong values
# (or none) cannot pass.
ATOL_KV16 = 0.04


@pytest.fixture(scope="session")
def hf_tokenizer():
    return Tokenizer.from_file(str(require(SMOLLM2_HF_FILES / "tokenizer.json")))


def encode(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="session")
def reference(smollm2_gguf):
    return ReferenceLlama.from_gguf(smollm2_gguf)


@pytest.fixture(scope="session")
def reference_f16_weights(reference):
    """The reference with its matrices and embedding rounded to f16, as the f16 file stores them."""
    weights = {name: w.astype(np.float16).astype(np.float64) if w.ndim == 2 else w
               for name, w in reference.weights.items()}
    return ReferenceLlama(reference.config, weights)


@pytest.fixture(scope="session")
def reference_kv16(reference):
    """The reference with its cached keys and values rounded to f16, as the default cache stores them."""
    return ReferenceLlama(reference.config, reference.weights, cache_dtype=np.float16)


@pytest.fixture(scope="session")
def prompt_ids(hf_tokenizer):
    return {name: encode(hf_tokenizer, text) for name, text in LOGIT_PROMPTS.items()}


@pytest.fixture(scope="session")
def reference_logits(reference, prompt_ids):
    return {name: reference.logits(ids) for name, ids in prompt_ids.items()}


@pytest.fixture(scope="session")
def reference_greedy(reference, hf_tokenizer):
    """name -> (prompt ids, 32 greedy ids, reference logits at each of the 32 steps)."""
    out = {}
    for name, text in GREEDY_PROMPTS.items():
        ids = encode(hf_tokenizer, text)
        generated = reference.greedy(ids, N_GREEDY)
        step_logits = reference.logits(ids + generated)[len(ids) - 1:-1]
        out[name] = (ids, generated, step_logits)
    return out


@pytest.fixture(scope="module")
def runtime_f32(smollm2_f32):
    import mixrt

    return mixrt.load(smollm2_f32, kv_cache="f32")


@pytest.fixture(scope="module")
def runtime_f16(smollm2_f16):
    import mixrt

    return mixrt.load(smollm2_f16, kv_cache="f32")


@pytest.fixture(scope="module")
def runtime_kv16(smollm2_f32):
    import mixrt

    return mixrt.load(smollm2_f32)  # the default f16 KV cache


def top2_gap(logits: np.ndarray) -> np.ndarray:
    top2 = np.sort(logits, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


def max_errors(got: np.ndarray, want: np.ndarray) -> tuple:
    """(max abs error, that error relative to the largest |logit|)."""
    err = float(np.abs(got.astype(np.float64) - want).max())
    return err, err / float(np.abs(want).max())


def test_prompt_lengths(prompt_ids):
    for name, ids in prompt_ids.items():
        assert 20 <= len(ids) <= 60, (name, len(ids))


def test_reference_continues_capital_of_france(reference, hf_tokenizer):
    generated = reference.greedy(encode(hf_tokenizer, "The capital of France is"), 4)
    assert hf_tokenizer.decode(generated).startswith(" Paris"), hf_tokenizer.decode(generated)


def test_greedy_prompts_are_well_posed(reference_greedy):
    """The reference's cached decoding agrees with its full pass, no end token comes within 32
    steps, and at every step the top two logits are more than 2 * ATOL_F32 apart: a runtime within
    ATOL_F32 of the reference cannot flip the argmax, so exact equality is a fair demand."""
    for name, (_, generated, step_logits) in reference_greedy.items():
        assert np.argmax(step_logits, axis=-1).tolist() == generated, name
        assert not set(generated) & set(END_TOKENS), (name, generated)
        gaps = top2_gap(step_logits)
        print(f"{name}: smallest top-2 gap {gaps.min():.4f} at step {int(gaps.argmin())}")
        assert gaps.min() > 2 * ATOL_F32, f"{name}: near-tie at step {int(gaps.argmin())}"


def test_f32_logits_match_reference(runtime_f32, prompt_ids, reference_logits):
    for name, ids in prompt_ids.items():
        got = runtime_f32.eval_logits(ids)
        assert got.shape == reference_logits[name].shape
        err, rel = max_errors(got, reference_logits[name])
        print(f"f32 {name} ({len(ids)} tokens): max abs error {err:.2e}, relative {rel:.1e}")
        assert err < ATOL_F32, name


def check_against_references(runtime, label, prompt_ids, reference_logits, matched, matched_what, matched_atol):
    """runtime's logits within ATOL_F16 of the exact reference and within matched_atol of `matched`,
    the reference that rounds as the runtime does (its weights, or its KV cache)."""
    for name, ids in prompt_ids.items():
        got = runtime.eval_logits(ids)
        err, rel = max_errors(got, reference_logits[name])
        err_matched, _ = max_errors(got, matched.logits(ids))
        print(f"{label} {name} ({len(ids)} tokens): max abs error {err:.2e} (relative {rel:.1e}); "
              f"against the reference with {matched_what} {err_matched:.2e}")
        assert err < ATOL_F16, name
        assert err_matched < matched_atol, name


def test_f16_logits_match_reference(runtime_f16, prompt_ids, reference_logits, reference_f16_weights):
    check_against_references(runtime_f16, "f16", prompt_ids, reference_logits, reference_f16_weights,
                             "f16-rounded weights", ATOL_F32)


def test_f16_kv_cache_logits_match_reference(runtime_kv16, prompt_ids, reference_logits, reference_kv16):
    assert runtime_kv16.kv_cache == "f16"
    check_against_references(runtime_kv16, "f16 KV cache", prompt_ids, reference_logits, reference_kv16,
                             "an f16 cache", ATOL_KV16)


def test_f32_greedy_matches_reference(runtime_f32, reference_greedy):
    for name, (ids, want, step_logits) in reference_greedy.items():
        got = runtime_f32.generate_ids(ids, max_tokens=N_GREEDY, temperature=0)
        if got != want:
            step = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(got))
            gap = top2_gap(step_logits[step])
            pytest.fail(f"{name}: greedy ids differ from step {step} (reference top-2 gap there "
                        f"{gap:.4f}, tolerance {ATOL_F32}):\n runtime   {got}\n reference {want}")


def test_runtime_continues_capital_of_france(runtime_f32):
    text = runtime_f32.generate("The capital of France is", max_tokens=4, temperature=0)
    assert text.startswith(" Paris"), text
