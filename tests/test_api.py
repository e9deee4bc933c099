# test_api.py: the Python API's contract on a generated model: results carry finish_reason and
# token counts, streams hand their context back when they end, are closed or dropped (no call ever
# waits on an abandoned stream), two threads on one model, close() and the context manager, the
# argument checks (each error names its argument), the f16 and f32 KV caches, step-by-step use
# through Model.context() and Model.sampler(), sampling defaults that are the C API's, and the
# module surface (dir, signatures, -m).
import gc
import inspect
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

import mixrt

PROMPT = "Once upon a time"
GREEDY = dict(max_tokens=12, temperature=0)


@pytest.fixture
def model(random_model):
    with mixrt.load(random_model, threads=2) as m:
        yield m


def test_completion_is_a_str_with_finish_reason_and_counts(model):
    out = model.generate(PROMPT, **GREEDY)
    assert isinstance(out, str) and out
    assert out.finish_reason == "length" and out.completion_tokens == 12
    assert out.prompt_tokens == len(model.tokenize(PROMPT))


def test_until_the_end_of_the_context(model):
    out = model.generate(PROMPT, max_tokens=-1, temperature=0, repeat_penalty=1.0)
    # The random model rarely samples its EOS; either way the context bounds the answer.
    assert out.prompt_tokens + out.completion_tokens <= model.n_ctx
    if out.finish_reason == "length":
        assert out.prompt_tokens + out.completion_tokens == model.n_ctx


def test_an_abandoned_stream_does_not_block_the_next_call(model):
    stream = model.generate(PROMPT, stream=True, **GREEDY)
    first = next(stream)
    # The caller broke out of its loop but still holds the stream: other calls go on.
    whole = model.generate(PROMPT, **GREEDY)
    assert whole.startswith(first)
    # ... and the held stream still finishes correctly on its own context.
    assert first + "".join(stream) == whole
    assert stream.finish_reason == "length"


def test_closed_or_dropped_streams_hand_their_context_back(model):
    stream = model.generate(PROMPT, stream=True, **GREEDY)
    next(stream)
    stream.close()
    assert stream.finish_reason is None and list(stream) == []
    assert len(model._idle) == 1
    with model.generate(PROMPT, stream=True, **GREEDY) as stream:
        next(stream)
    assert len(model._idle) == 1
    stream = model.generate(PROMPT, stream=True, **GREEDY)
    next(stream)
    del stream
    gc.collect()
    assert len(model._idle) == 1
    assert model.generate(PROMPT, **GREEDY)


def test_two_threads_on_one_model_get_their_own_results(model):
    prompts = ["Once upon a time", "The quick brown fox"]
    want = {p: model.generate(p, max_tokens=40, temperature=0) for p in prompts}
    got, errors = {}, []

    def run(prompt):
        try:
            for _ in range(3):
                got.setdefault(prompt, []).append("".join(model.generate(prompt, max_tokens=40, temperature=0,
                                                                         stream=True)))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    assert got == {p: [want[p]] * 3 for p in prompts}


def test_close_and_context_manager(random_model):
    with mixrt.load(random_model) as m:
        stream = m.generate(PROMPT, stream=True, **GREEDY)
        next(stream)
        assert "backend='cpu'" in repr(m)
    assert m.closed and "closed" in repr(m)
    with pytest.raises(mixrt.MixrtError, match="the model is closed"):
        m.generate(PROMPT, **GREEDY)
    with pytest.raises(mixrt.MixrtError, match="the model is closed"):
        next(stream)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(max_tokens=None), TypeError, "max_tokens: expected an integer, found NoneType None"),
    (dict(max_tokens=2.5), TypeError, "max_tokens: expected an integer, found float 2.5"),
    (dict(max_tokens=-2), ValueError, "max_tokens: expected an integer >= 0 or -1, found -2"),
    (dict(stop=[None]), TypeError, r"stop\[0\]: expected a str, found NoneType"),
    (dict(temperature=-0.5), ValueError, "temperature: expected a finite number >= 0.0, found -0.5"),
    (dict(temperature=float("nan")), ValueError, "temperature: expected a finite number >= 0.0, found nan"),
    (dict(top_p=1.5), ValueError, r"top_p: expected a finite number > 0.0 and <= 1.0, found 1.5"),
    (dict(top_k=-1), ValueError, "top_k: expected an integer >= 0, found -1"),
    (dict(seed="x"), TypeError, "seed: expected an integer, found str"),
])
def test_bad_generation_arguments_name_themselves(model, kwargs, error, message):
    with pytest.raises(error, match=message):
        model.generate(PROMPT, **{**GREEDY, **kwargs})


def test_bad_prompts_name_themselves(model):
    with pytest.raises(TypeError, match=r"prompt: expected a str, found bytes \(decode it first"):
        model.generate(b"Hello", **GREEDY)
    with pytest.raises(ValueError, match="prompt: expected text that UTF-8 can encode, found the lone "
                                         "surrogate U\\+D800 at index 2"):
        model.generate("ab\ud800c", **GREEDY)
    with pytest.raises(TypeError, match="text: expected a str, found NoneType"):
        model.tokenize(None)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(n_ctx=0), ValueError, "n_ctx: expected an integer >= 1, found 0"),
    (dict(n_ctx="big"), TypeError, "n_ctx: expected an integer, found str"),
    (dict(threads=0), ValueError, "threads: expected an integer >= 1, found 0"),
    (dict(backend="tpu"), ValueError, "backend: expected one of auto, cpu, cuda, found 'tpu'"),
    (dict(kv_cache="q8"), ValueError, "kv_cache: expected one of f16, f32, found 'q8'"),
    (dict(kv_cache="f32", backend="cuda"), ValueError, r"kv_cache: 'f32' runs on the CPU backend only"),
])
def test_bad_load_arguments_name_themselves(random_model, kwargs, error, message):
    with pytest.raises(error, match=message):
        mixrt.load(random_model, **kwargs)


def test_a_thread_the_os_refuses_is_an_error_not_an_abort(random_model):
    # Under an address-space limit each thread's stack mapping fails once the limit is reached: the
    # pool stops the threads it started and the call raises MixrtError naming the count, instead of
    # the process aborting with joinable threads left behind.
    script = f"""
import resource, mixrt
m = mixrt.load({str(random_model)!r}, threads=1)
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + (256 << 20), resource.RLIM_INFINITY))
try:
    mixrt.load({str(random_model)!r}, threads=10000).generate("a", max_tokens=1)
except mixrt.MixrtError as e:
    print("MixrtError:", e)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"MixrtError: could not start thread \d+ of 10000 \(.+\); use fewer threads\n", r.stdout), r.stdout


def test_perplexity_base_must_be_a_model(model):
    with pytest.raises(TypeError, match="base: expected a mixrt.Model, found str"):
        model.perplexity("some text to score " * 4, ctx=16, base="f16.mixrt")


def test_kv_cache_types_agree(random_model):
    # The f16 cache rounds each cached key and value by at most 2^-11 of itself; on this small model
    # the logits of the two caches stay within 1% of their range (tests/test_forward_reference.py
    # bounds it on the real model), while both runs are deterministic.
    f16, f32 = mixrt.load(random_model), mixrt.load(random_model, kv_cache="f32")
    assert (f16.kv_cache, f32.kv_cache) == ("f16", "f32")
    assert f32.backend == "cpu"
    ids = f16.tokenize("the cache holds keys and values", add_bos=True)
    a, b = f16.eval_logits(ids), f32.eval_logits(ids)
    assert np.array_equal(a, f16.eval_logits(ids))
    assert not np.array_equal(a, b)
    assert np.abs(a - b).max() <= 0.01 * np.abs(b).max()


def test_control_tokens_in_a_prompt_are_text_unless_special(random_chat_model):
    m = mixrt.load(random_chat_model)
    im_end = m.tokenize("<|im_end|>", special=True)
    assert im_end == [m.eos_id]
    assert m.eos_id not in m.tokenize("a<|im_end|>b")
    assert m.generate("<|im_end|>", **GREEDY).prompt_tokens > 1
    assert m.generate("<|im_end|>", special=True, **GREEDY).prompt_tokens == 1


def test_a_context_is_the_callers_own_until_the_block_ends(model):
    ids = model.tokenize(PROMPT)
    with model.context() as ctx:
        assert ctx.n_past == 0 and ctx.n_ctx == model.n_ctx
        ctx.feed(ids, False)
        assert ctx.n_past == len(ids) and ctx.logits().shape == (1, model.n_vocab)
        assert model.generate(PROMPT, **GREEDY)  # other calls go on meanwhile, on other contexts
        token = model.sampler(temperature=0).sample(ctx)
        assert ctx.n_past == len(ids)
    assert token == int(np.argmax(model.eval_logits(ids)[-1]))
    with model.context() as again:  # handed back reset
        assert again.n_past == 0


def test_sampling_defaults_are_the_c_apis():
    from mixrt import _core
    from mixrt.api import SAMPLER_DEFAULTS
    from mixrt.cli import build_parser

    c_defaults = _core.sampler_default_params()
    assert SAMPLER_DEFAULTS.keys() == c_defaults.keys()
    for name, value in SAMPLER_DEFAULTS.items():
        assert np.float32(value) == np.float32(c_defaults[name]), name
    for function in (mixrt.generate, mixrt.Model.generate, mixrt.Model.sampler, mixrt.Model.create_chat_completion):
        params = inspect.signature(function).parameters
        for name in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty"):
            assert params[name].default == SAMPLER_DEFAULTS[name], (function.__qualname__, name)
    args = build_parser().parse_args(["run", "model.mixrt", "prompt"])
    assert (args.temp, args.top_k, args.top_p, args.min_p, args.repeat_penalty) == tuple(
        SAMPLER_DEFAULTS[name] for name in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty"))


def test_module_surface():
    assert {"load", "generate", "Model", "MixrtError", "Completion", "CompletionStream",
            "__version__"} <= set(dir(mixrt))
    params = inspect.signature(mixrt.generate).parameters
    assert ["prompt", "model", "max_tokens", "temperature"] == list(params)[:4] and "stream" in params
    r = subprocess.run([sys.executable, "-m", "mixrt", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"mixrt {mixrt.__version__}"


def test_token_id_arguments_name_themselves(model):
    """Ids past int32, negative or beyond the vocabulary, and an empty eval, are refused naming
    the argument and the entry (not nanobind's "incompatible function arguments")."""
    with pytest.raises(ValueError, match=r"ids: expected token ids in 0..\d+, found 1099511627776 at index 0"):
        model.detokenize([2**40])
    with pytest.raises(ValueError, match=r"ids: expected token ids in 0..\d+, found -1 at index 1"):
        model.detokenize([1, -1])
    with pytest.raises(ValueError, match="ids: expected at least one token id, found none"):
        model.eval_logits([])
    with pytest.raises(TypeError, match="ids: expected a sequence of token ids, found str"):
        model.detokenize("abc")
    with pytest.raises(ValueError, match="n_ctx: expected an integer <= 2147483647"):
        mixrt.load(model.path, n_ctx=2**40)
