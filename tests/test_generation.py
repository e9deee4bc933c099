# test_generation.py: generation and sampling on the generated random model (no real data needed):
# greedy determinism, seeds, stop strings, streaming, sampling
# filters and their distribution, the context limit, and mixrt.generate's model lookup.
import numpy as np
import pytest

import mixrt
from mixrt.devtools.random_model import make_random_mixrt, write_byte_model


@pytest.fixture(scope="module")
def model(random_model):
    return mixrt.load(random_model, threads=2)


PROMPT = "Once upon a time"


def test_greedy_is_deterministic_and_matches_the_step_api(model):
    a = model.generate(PROMPT, max_tokens=24, temperature=0)
    b = model.generate(PROMPT, max_tokens=24, temperature=0)
    assert a == b and a
    ids = model.generate_ids(model.tokenize(PROMPT), 24, temperature=0)
    assert model.detokenize(ids) .strip() == a.strip()
    print(f"greedy: {a!r}")


def test_seed_reproduces_a_sample(model):
    a = model.generate(PROMPT, max_tokens=20, temperature=1.0, seed=123, top_k=0, top_p=1.0, min_p=0.0)
    b = model.generate(PROMPT, max_tokens=20, temperature=1.0, seed=123, top_k=0, top_p=1.0, min_p=0.0)
    c = model.generate(PROMPT, max_tokens=20, temperature=1.0, seed=124, top_k=0, top_p=1.0, min_p=0.0)
    assert a == b
    assert a != c


def test_filters_that_keep_one_token_are_greedy(model):
    greedy = model.generate(PROMPT, max_tokens=16, temperature=0)
    for kwargs in ({"top_k": 1}, {"top_p": 1e-9, "top_k": 0}, {"min_p": 1.0, "top_k": 0}):
        got = model.generate(PROMPT, max_tokens=16, temperature=1.5, seed=5, **kwargs)
        assert got == greedy, kwargs


def test_stop_string_cuts_the_text_before_it(model):
    full = model.generate(PROMPT, max_tokens=32, temperature=0)
    assert len(full) > 10
    # Three characters from the middle, none a replacement for ill-formed bytes (which the raw
    # bytes do not contain, so it could never match).
    start = next(i for i in range(len(full) // 2, len(full) - 3) if "\ufffd" not in full[i:i + 3])
    stop = full[start:start + 3]
    cut = model.generate(PROMPT, max_tokens=32, temperature=0, stop=[stop, "never appears"])
    assert cut == full[: full.index(stop)]
    assert cut.finish_reason == "stop" and full.finish_reason == "length"


def test_stream_pieces_join_to_the_whole_text(model):
    whole = model.generate(PROMPT, max_tokens=30, temperature=0)
    stream = model.generate(PROMPT, max_tokens=30, temperature=0, stream=True)
    assert stream.finish_reason is None
    pieces = list(stream)
    assert "".join(pieces) == whole
    assert len(pieces) > 1
    assert stream.finish_reason == whole.finish_reason in ("length", "stop")
    assert stream.completion_tokens == whole.completion_tokens


def test_sampling_follows_the_softmax(model):
    # top_k=4 at temperature 1: each of the 4 best tokens must be drawn with its renormalised
    # softmax probability; 4000 draws put each frequency within 5 standard errors.
    with model.context() as ctx:
        ctx.feed(model.tokenize(PROMPT), False)
        logits = ctx.logits()[0].astype(np.float64)
        top = np.argsort(-logits)[:4]
        p = np.exp(logits[top] - logits[top].max())
        p /= p.sum()
        sampler = model.sampler(temperature=1.0, top_k=4, top_p=1.0, min_p=0.0, repeat_penalty=1.0, seed=42)
        draws = np.array([sampler.sample(ctx) for _ in range(4000)])
    assert set(draws) <= set(top)
    freq = np.array([(draws == t).mean() for t in top])
    se = np.sqrt(p * (1 - p) / len(draws))
    print("p", p.round(4), "freq", freq.round(4))
    assert np.all(np.abs(freq - p) <= 5 * se + 1e-9)


def test_repetition_penalty_prevents_repeats(model):
    ids = model.generate_ids(model.tokenize(PROMPT), 30, temperature=0, repeat_penalty=1e6)
    assert len(set(ids)) == len(ids)


def test_prompt_plus_tokens_beyond_the_context_is_an_error(model):
    with pytest.raises(mixrt.MixrtError, match=r"context holds 256"):
        model.generate(PROMPT, max_tokens=300, temperature=0)
    with pytest.raises(mixrt.MixrtError, match=r"exceed the context of 256"):
        model.eval_logits([1] * 257)


def test_bad_sampler_arguments_are_errors(model):
    with pytest.raises(ValueError, match="top_p: expected a finite number > 0.0 and <= 1.0, found 0.0"):
        model.generate(PROMPT, max_tokens=2, top_p=0.0)
    with pytest.raises(ValueError, match=rf"ids: expected token ids in 0..{model.n_vocab - 1}, found "
                                         rf"{model.n_vocab} at index 1"):
        model.eval_logits([1, model.n_vocab])


def test_module_generate_uses_the_model_argument_or_the_environment(random_model, monkeypatch):
    monkeypatch.delenv("MIXRT_MODEL", raising=False)
    with pytest.raises(mixrt.MixrtError, match="MIXRT_MODEL"):
        mixrt.generate("Hi", max_tokens=2)
    a = mixrt.generate("Hi", model=random_model, max_tokens=5, temperature=0)
    monkeypatch.setenv("MIXRT_MODEL", str(random_model))
    assert mixrt.generate("Hi", max_tokens=5, temperature=0) == a


def test_prefill_in_one_pass_equals_token_by_token(model):
    # The batched prompt pass (matrix-matrix) and one-token decode steps see the same weights:
    # the last logits agree to fp32 rounding (different summation order in the kernel tiles).
    ids = model.tokenize("The quick brown fox jumps over the lazy dog again and again")
    batched = model.eval_logits(ids)[-1]
    with model.context() as ctx:
        for t in ids:
            ctx.feed([t], False)
        stepwise = ctx.logits()[0]
    err = np.abs(batched - stepwise).max()
    print(f"batched vs stepwise max abs diff {err:.3g} (logit scale {np.abs(batched).max():.3g})")
    assert err <= 1e-4 * max(1.0, np.abs(batched).max())


def test_results_do_not_depend_on_the_thread_count(random_model):
    ids = mixrt.load(random_model, threads=1).tokenize(PROMPT)
    one = mixrt.load(random_model, threads=1).eval_logits(ids)
    three = mixrt.load(random_model, threads=3).eval_logits(ids)
    np.testing.assert_array_equal(one, three)


@pytest.mark.parametrize("recipe", ["q8", "q4", "mix", "bfp6", "bfp4", "mxfp4"])
def test_quantized_results_do_not_depend_on_the_thread_count(tmp_path, recipe):
    # The quantized paths split across threads too: inputs rounded per token in parallel, Q/K/V
    # and gate/up (with SwiGLU) in shared regions, the query heads of a KV head taken in runs cut
    # at thread boundaries (tiny: 4 heads, 2 KV heads). Prefill and one-token decode, 1/2/3 threads.
    path = tmp_path / f"{recipe}.mixrt"
    make_random_mixrt(path, shape="tiny", recipe=recipe, bits=4.0, vocab=300, seed=3)
    ids = [int(i) for i in np.random.default_rng(0).integers(3, 300, size=40)]
    results = []
    for threads in (1, 2, 3):
        model = mixrt.load(path, threads=threads)
        steps = []
        with model.context() as ctx:
            ctx.feed(ids[:-8], False)
            for t in ids[-8:]:
                ctx.feed([t], False)
                steps.append(np.array(ctx.logits()[0]))
        results.append((model.eval_logits(ids), np.stack(steps)))
    for prefill, decode in results[1:]:
        np.testing.assert_array_equal(prefill, results[0][0])
        np.testing.assert_array_equal(decode, results[0][1])


def test_streamed_pieces_are_valid_utf8_even_when_tokens_split_characters(tmp_path):
    # A model whose tokens are single bytes emits arbitrary byte sequences: multibyte characters
    # split across tokens must be held back until complete, and invalid bytes become U+FFFD.
    # Every piece crosses into Python as a str, which would fail on invalid UTF-8.
    model = mixrt.load(write_byte_model(tmp_path / "bytes.mixrt"))
    for seed in range(5):
        kwargs = dict(max_tokens=200, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
        pieces = list(model.generate("a", stream=True, **kwargs))
        whole = model.generate("a", **kwargs)
        assert "".join(pieces) == whole
        assert all(p.encode("utf-8").decode("utf-8") == p for p in pieces)
        # The same text as decoding all sampled tokens in one go (U+FFFD for ill-formed bytes).
        ids = model.generate_ids(model.tokenize("a"), 200, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
        assert whole == model.detokenize(ids)
        print(f"seed {seed}: {len(pieces)} pieces, {len(ids)} bytes, {whole.count(chr(0xFFFD))} replacements")


def test_multibyte_stop_string(tmp_path):
    model = mixrt.load(write_byte_model(tmp_path / "bytes.mixrt"))
    kwargs = dict(max_tokens=200, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=3)
    whole = model.generate("a", **kwargs)
    # Two characters, the second a well-formed multibyte one (not a replacement character).
    i = next(i for i in range(1, len(whole)) if ord(whole[i]) > 127 and "\ufffd" not in whole[i - 1:i + 1])
    stop = whole[i - 1:i + 1]
    print(f"stop string {stop!r} ({len(stop.encode())} bytes)")
    assert model.generate("a", stop=stop, **kwargs) == whole[: whole.index(stop)]
