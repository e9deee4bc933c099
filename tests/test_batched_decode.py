# test_batched_decode.py: batched decoding of several sequences in one context
# (mixrt_context_decode, _core.Context.decode): sequences at their own positions advance together
# in one pass over the weights, join and leave between steps, and each gets exactly the tokens it
# gets alone; refusals of bad batches change nothing; single-sequence engines refuse batches.
import numpy as np
import pytest

import mixrt
from mixrt import _core

STEPS = 12


def greedy_alone(model, prompt, steps, kv):
    """Greedy tokens and the logits of each step of one sequence in a context of its own."""
    ctx = _core.Context(model._model, 256, 2, kv)
    ctx.feed(prompt, False)
    tokens, logits = [], []
    for _ in range(steps):
        row = ctx.logits()[-1]
        logits.append(row.copy())
        tokens.append(int(np.argmax(row)))
        ctx.feed(tokens[-1:], False)
    return tokens, logits


def entries(rows):
    return np.asarray(rows, np.int32).reshape(-1, 4)


def run_schedule(ctx, prompts: dict, joins: dict, lengths: dict, slots: dict) -> dict:
    """Continuous batching in miniature: at step joins[name] a sequence starts in slot slots[name]
    (its prompt prefilled in the same batch as the others' next tokens), generates lengths[name]
    greedy tokens and leaves (its slot cleared). Returns name -> (tokens, logits per step)."""
    got = {name: ([], []) for name in prompts}
    active, step = [], 0
    while step == 0 or active or any(joins[n] >= step for n in prompts):
        for name in prompts:
            if joins[name] == step:
                assert ctx.seq_len(slots[name]) == 0, name
                active.append(name)
        if not active:
            step += 1
            continue
        batch = []
        for name in active:
            seq, tokens = slots[name], got[name][0]
            if not tokens:
                prompt = prompts[name]
                batch += [(seq, t, i, int(i == len(prompt) - 1)) for i, t in enumerate(prompt)]
            else:
                batch.append((seq, tokens[-1], ctx.seq_len(seq), 1))
        ctx.decode(entries(batch))
        rows = ctx.logits()
        assert rows.shape[0] == len(active)
        for row, name in zip(rows, active):
            got[name][1].append(row.copy())
            got[name][0].append(int(np.argmax(row)))
        for name in list(active):
            if len(got[name][0]) == lengths[name]:
                active.remove(name)
                ctx.seq_clear(slots[name])
        step += 1
    return got


@pytest.mark.parametrize("kv", ["f32", "f16"])
def test_sequences_in_a_batch_decode_as_alone(random_model, kv):
    """Five prompts of different lengths in a context of 4 sequences: three start together, one
    joins at step 4, one takes the slot of a sequence that left at step 6; every sequence's greedy
    tokens and logits equal its own run alone, bit for bit."""
    model = mixrt.load(random_model)
    texts = ["The history of the city", "def f(x):", "A long time ago in a galaxy far away, there", "1 2 3",
             "Another prompt arrives later"]
    prompts = {i: model.tokenize(t, add_bos=True) for i, t in enumerate(texts)}
    joins = {0: 0, 1: 0, 2: 0, 3: 4, 4: 7}
    lengths = {0: STEPS, 1: 6, 2: STEPS, 3: STEPS, 4: STEPS}
    slots = {0: 0, 1: 1, 2: 2, 3: 3, 4: 1}
    ctx = _core.Context(model._model, 256, 2, kv, "", 4)
    assert ctx.n_seq == 4
    got = run_schedule(ctx, prompts, joins, lengths, slots)
    for name, prompt in prompts.items():
        want_tokens, want_logits = greedy_alone(model, prompt, lengths[name], kv)
        assert got[name][0] == want_tokens, name
        for step, (g, w) in enumerate(zip(got[name][1], want_logits)):
            assert np.array_equal(g, w), (name, step, float(np.abs(g - w).max()))


@pytest.fixture(scope="module", params=["q8", "q4", "mix", "quik", "bfp6"])
def quantized_model(request, tmp_path_factory):
    from mixrt.devtools.random_model import make_random_mixrt

    path = tmp_path_factory.mktemp("batched") / f"{request.param}.mixrt"
    make_random_mixrt(path, shape="tiny", recipe=request.param, vocab=512, seed=3,
                      bits=4.0)  # (mix: the tiny shape needs more than the default 2.9 bits)
    return mixrt.load(path)


def test_quantized_sequences_in_a_batch_decode_as_alone(quantized_model):
    """The quantized kernels too (their input rounding is per row; batches of 16 rows and more take
    the tiled paths, AMX included where the CPU has it): prompts of 20 to 40 tokens prefilled while
    others decode, each sequence's logits equal to its own run alone, bit for bit."""
    model = quantized_model
    rng = np.random.default_rng(0)
    prompts = {i: rng.integers(0, 256, 20 + 5 * i).tolist() for i in range(5)}
    joins = {0: 0, 1: 0, 2: 1, 3: 3, 4: 6}
    lengths = {0: 10, 1: 5, 2: 10, 3: 8, 4: 6}
    slots = {0: 0, 1: 1, 2: 2, 3: 3, 4: 1}
    ctx = _core.Context(model._model, 256, 2, "f16", "", 4)
    got = run_schedule(ctx, prompts, joins, lengths, slots)
    for name, prompt in prompts.items():
        want_tokens, want_logits = greedy_alone(model, prompt, lengths[name], "f16")
        assert got[name][0] == want_tokens, name
        for step, (g, w) in enumerate(zip(got[name][1], want_logits)):
            assert np.array_equal(g, w), (name, step, float(np.abs(g - w).max()))


def test_bad_batches_are_refused_and_change_nothing(random_model):
    model = mixrt.load(random_model)
    ctx = _core.Context(model._model, 16, 1, "f16", "", 2)
    ctx.decode(entries([(0, 5, 0, 0), (1, 6, 0, 1), (1, 7, 1, 1)]))
    assert (ctx.seq_len(0), ctx.seq_len(1), ctx.n_past) == (1, 2, 1)
    assert ctx.logits().shape == (2, model.n_vocab)
    bad = {
        "seq": ([(2, 5, 0, 1)], "decode: entry 0: seq 2, expected 0..1"),
        "token": ([(0, 5, 1, 1), (0, model.n_vocab, 2, 1)],
                  f"decode: entry 1: token {model.n_vocab} is outside the vocabulary"),
        "position": ([(1, 5, 3, 1)], r"decode: entry 0: pos 3, expected 2 \(the next position of sequence 1\)"),
        "order": ([(0, 5, 2, 1), (0, 6, 1, 1)], "decode: entry 0: pos 2, expected 1"),
        "full": ([(1, 5, 2 + i, 1) for i in range(15)], r"decode: entry 14: sequence 1 is full \(16 tokens\)"),
    }
    for name, (rows, message) in bad.items():
        with pytest.raises(mixrt.MixrtError, match=message):
            ctx.decode(entries(rows))
        assert (ctx.seq_len(0), ctx.seq_len(1)) == (1, 2), name
    assert ctx.seq_len(2) == -1 and ctx.seq_len(-1) == -1
    with pytest.raises(mixrt.MixrtError, match="seq_clear: seq 5, expected 0..1"):
        ctx.seq_clear(5)
    ctx.seq_clear(1)
    assert (ctx.seq_len(0), ctx.seq_len(1)) == (1, 0)
    ctx.reset()
    assert (ctx.seq_len(0), ctx.seq_len(1)) == (0, 0)
    with pytest.raises(mixrt.MixrtError, match="n_seq is 5000, expected 0..4096"):
        _core.Context(model._model, 16, 1, "f16", "", 5000)


def test_sequence_zero_is_the_feed_sequence(random_model):
    """feed() and decode() share sequence 0: entries for it continue what feed put there, and a
    one-sequence context decodes too."""
    model = mixrt.load(random_model)
    ids = model.tokenize("Hello there, general", add_bos=True)
    one = _core.Context(model._model, 64, 1, "f32")
    assert one.n_seq == 1
    one.feed(ids[:3], False)
    one.decode(entries([(0, t, 3 + i, 1) for i, t in enumerate(ids[3:])]))
    both = one.logits()
    fed = _core.Context(model._model, 64, 1, "f32")
    fed.feed(ids, True)
    assert np.array_equal(both, fed.logits()[3:]) and one.n_past == len(ids)


def test_sampled_text_of_a_batch_equals_generate(random_chat_model):
    """Sequences sampled from batched decode rows (Sampler.sample_logits with each sequence's
    history) and turned into text by a TextStream each give exactly what Model.generate gives for
    the same prompt, settings and seed: the text, its pieces' concatenation, the finish reason."""
    from mixrt.api import FINISH_REASONS

    model = mixrt.load(random_chat_model)
    # the second request stops on a piece of its own greedy text, so a stop string surely ends it
    greedy = str(model.generate("The answer is", max_tokens=16, temperature=0.0))
    stop = greedy[len(greedy) // 2:len(greedy) // 2 + 2]
    requests = [("Once upon a time", dict(temperature=0.8, top_p=0.9, seed=1), 24, []),
                ("The answer is", dict(temperature=0.0), 16, [stop]),
                ("def main():", dict(temperature=1.2, top_k=20, seed=7), 30, ["\n\n"])]
    ctx = _core.Context(model._model, 128, 2, "f16", "", len(requests))
    states = []
    batch = []
    for seq, (prompt, sampling, max_tokens, stop) in enumerate(requests):
        ids = model.tokenize(prompt)
        states.append({"history": list(ids), "sampler": model.sampler(**sampling),
                       "text": _core.TextStream(model._model, max_tokens, stop), "pieces": [], "reason": 0})
        batch += [(seq, t, i, int(i == len(ids) - 1)) for i, t in enumerate(ids)]
    while batch:
        ctx.decode(entries(batch))
        rows = iter(ctx.logits())
        running = [seq for seq, s in enumerate(states) if s["reason"] == 0]
        batch = []
        for seq in running:
            s = states[seq]
            token = s["sampler"].sample_logits(next(rows), s["history"])
            piece, s["reason"] = s["text"].push(token)
            s["pieces"].append(piece)
            if s["reason"] == 0:
                batch.append((seq, token, len(s["history"]), 1))
                s["history"].append(token)
    for (prompt, sampling, max_tokens, stop), s in zip(requests, states):
        want = model.generate(prompt, max_tokens=max_tokens, stop=stop, **sampling)
        assert "".join(s["pieces"]) == want, prompt
        assert FINISH_REASONS[s["reason"]] == want.finish_reason, prompt
        assert s["text"].n_generated == want.completion_tokens, prompt
    assert states[1]["reason"] == 2  # MIXRT_STOP_STRING
