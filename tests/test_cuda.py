# test_cuda.py: the CUDA backend against the CPU. Every forward-pass kernel (RMSNorm, residual add
# + RMSNorm, RoPE + KV write, attention, SwiGLU, argmax, prefill GEMM) against a float64 numpy
# reference on the same inputs (odd shapes); random tiny models in every dtype, CPU vs CUDA logits for
# prefill (matvec and GEMM paths, chunked feeds) and graph-replayed decode; the real SmolLM2
# (logits within tolerance, greedy generations identical for 32 tokens on several prompts); the
# backend choice and its errors. Without a usable GPU the GPU tests skip; the backend-choice tests
# run everywhere.
import os
from pathlib import Path

import numpy as np
import pytest

import mixrt
from mixrt import _core, _internal
from mixrt.devtools.random_model import byte_model_metadata, make_random_mixrt, write_byte_model

CUDA_REASON = _core.cuda_unavailable_reason()
needs_gpu = pytest.mark.skipif(CUDA_REASON != "", reason=f"CUDA backend unusable here: {CUDA_REASON}")

# Tolerances. The kernels compute in fp32 like the CPU; they differ from a float64 reference by
# fp32 rounding only: a few ulps of the result for elementwise ops (1e-6 relative), and for sums
# over K terms at most K * 2^-24 of the sum of the absolute terms (bound used for the GEMM).
ELEMENTWISE_RTOL = 1e-6
# Whole models: the CUDA backend keeps the KV cache in f16 (each key/value rounded to 2^-11
# relative) and, on the prefill GEMM path, multiplies by weights dequantized to f16 (again 2^-11
# relative); fp32 sums run in another order. Each step perturbs the activations by about 1e-3
# relative, so logits stay within 1e-2 of the logit scale (the largest |logit|).
LOGIT_RTOL = 1e-2


def rel_error(got, want):
    """max |got - want| / max(1, max |want|)."""
    want = np.asarray(want, np.float64)
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / max(1.0, np.max(np.abs(want))))


# ---- ops -----------------------------------------------------------------------------------------

@needs_gpu
@pytest.mark.parametrize("n,d", [(1, 64), (3, 97), (5, 576)])
def test_rmsnorm(n, d):
    rng = np.random.default_rng(n * d)
    x = rng.standard_normal((n, d)).astype(np.float32) * 3
    gain = rng.standard_normal(d).astype(np.float32)
    eps = 1e-5
    y = rng.standard_normal((n, d)).astype(np.float32)

    def reference(v):
        v = v.astype(np.float64)
        return v / np.sqrt((v ** 2).mean(axis=1, keepdims=True) + eps) * gain

    # One fp32 rounding of x * scale * gain after a double sum: a few ulps of |x * gain| <= ~40.
    got = _internal.cuda_rmsnorm(x, gain, n, eps).reshape(n, d)
    np.testing.assert_allclose(got, reference(x), rtol=ELEMENTWISE_RTOL * 10, atol=ELEMENTWISE_RTOL * 10)
    # The residual add fused in front (output written over y): x + y in fp32, as numpy adds.
    total, normed = _internal.cuda_add_rmsnorm(x, y, gain, n, eps)
    np.testing.assert_array_equal(total.reshape(n, d), x + y)
    np.testing.assert_allclose(normed.reshape(n, d), reference(x + y), rtol=ELEMENTWISE_RTOL * 10,
                               atol=ELEMENTWISE_RTOL * 10)


def rope_reference(x, n_heads, head_dim, pos0, theta):
    """Rotate-half RoPE in float64 of x [n, n_heads * head_dim] at positions pos0 + t."""
    n, half = x.shape[0], head_dim // 2
    pos = np.arange(pos0, pos0 + n, dtype=np.float64)[:, None]
    angle = pos * theta ** (-2.0 * np.arange(half) / head_dim)
    c, s = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    v = x.reshape(n, n_heads, head_dim).astype(np.float64)
    a, b = v[..., :half], v[..., half:]
    return np.concatenate([a * c - b * s, a * s + b * c], axis=-1).reshape(n, -1)


@needs_gpu
@pytest.mark.parametrize("n,n_heads,n_kv,head_dim,pos0", [(1, 4, 4, 128, 0), (5, 3, 1, 40, 7), (4, 9, 3, 64, 250)])
def test_rope_store_kv(n, n_heads, n_kv, head_dim, pos0):
    rng = np.random.default_rng(pos0 + n)
    n_ctx, theta = 300, 10000.0
    q = rng.standard_normal((n, n_heads * head_dim)).astype(np.float32)
    k = rng.standard_normal((n, n_kv * head_dim)).astype(np.float32)
    v = rng.standard_normal((n, n_kv * head_dim)).astype(np.float32)
    q_rot, k_rows, v_rows = _internal.cuda_rope_store_kv(q, k, v, n, n_heads, n_kv, head_dim, pos0, n_ctx, theta)
    # The tables are float32 (as on the CPU): angles rounded to 2^-24 relative, times |x| <= ~5.
    np.testing.assert_allclose(q_rot.reshape(n, -1), rope_reference(q, n_heads, head_dim, pos0, theta), atol=1e-5)
    # Stored as f16: one rounding (2^-11 relative) of the rotated value.
    k_got = k_rows.view(np.float16).astype(np.float64).reshape(n, -1)
    np.testing.assert_allclose(k_got, rope_reference(k, n_kv, head_dim, pos0, theta), rtol=2.0 ** -10, atol=1e-5)
    np.testing.assert_array_equal(v_rows.view(np.float16).reshape(n, -1), v.astype(np.float16))


def attention_reference(q, k_cache, v_cache, n_heads, n_kv, head_dim, pos0):
    """Causal GQA attention in float64: query t (position pos0 + t) over cache rows 0 .. pos0 + t."""
    n = q.shape[0]
    K = k_cache.astype(np.float64).reshape(-1, n_kv, head_dim)
    V = v_cache.astype(np.float64).reshape(-1, n_kv, head_dim)
    out = np.zeros((n, n_heads, head_dim))
    for t in range(n):
        for h in range(n_heads):
            kvh = h // (n_heads // n_kv)
            qv = q[t].reshape(n_heads, head_dim)[h].astype(np.float64)
            s = K[: pos0 + t + 1, kvh] @ qv / np.sqrt(head_dim)
            p = np.exp(s - s.max())
            out[t, h] = p @ V[: pos0 + t + 1, kvh] / p.sum()
    return out.reshape(n, -1)


@needs_gpu
@pytest.mark.parametrize("n,n_heads,n_kv,head_dim,n_ctx,pos0", [
    (1, 4, 4, 128, 300, 0),     # first token: one key
    (1, 9, 3, 64, 1000, 700),   # decode over several chunks, GQA 3:1
    (4, 3, 1, 40, 300, 150),    # prefill across a chunk border, head_dim not a power of 2
    (7, 2, 2, 256, 129, 122),   # the last key row of an n_ctx one past a chunk
    (3, 4, 2, 8, 20, 0),        # tiny head_dim, prefill from position 0
])
def test_attention(n, n_heads, n_kv, head_dim, n_ctx, pos0):
    rng = np.random.default_rng(n_ctx + pos0)
    q = (rng.standard_normal((n, n_heads * head_dim)) * 2).astype(np.float32)
    k_cache = rng.standard_normal((n_ctx, n_kv * head_dim)).astype(np.float16)
    v_cache = rng.standard_normal((n_ctx, n_kv * head_dim)).astype(np.float16)
    got = _internal.cuda_attention(q, k_cache.view(np.uint16), v_cache.view(np.uint16), n, n_heads, n_kv, head_dim,
                               n_ctx, pos0).reshape(n, -1)
    want = attention_reference(q, k_cache, v_cache, n_heads, n_kv, head_dim, pos0)
    # Outputs are convex combinations of values |v| <= ~5; fp32 softmax and sums over <= 1000 keys.
    np.testing.assert_allclose(got, want, atol=2e-5)


@needs_gpu
def test_attention_rejects_bad_head_dim():
    q = np.zeros(12, np.float32)
    cache = np.zeros(12 * 4, np.uint16)
    with pytest.raises(mixrt.MixrtError, match="head_dim is 12, expected a multiple of 8"):
        _internal.cuda_attention(q, cache, cache, 1, 1, 1, 12, 4, 0)


@needs_gpu
def test_swiglu_argmax():
    rng = np.random.default_rng(1)
    g = (rng.standard_normal(1001) * 4).astype(np.float32)
    u = rng.standard_normal(1001).astype(np.float32)
    g64 = g.astype(np.float64)
    np.testing.assert_allclose(_internal.cuda_swiglu(g, u), g64 / (1 + np.exp(-g64)) * u, rtol=1e-5, atol=1e-6)
    x = rng.standard_normal(32003).astype(np.float32)
    x[[17, 5000, 32002]] = 9.0  # ties: the lowest index wins, like std::max_element
    assert _internal.cuda_argmax(x) == 17
    assert _internal.cuda_argmax(np.array([-np.inf, -3.0], np.float32)) == 1


@needs_gpu
@pytest.mark.parametrize("n,rows,cols", [(9, 131, 77), (70, 64, 64), (19, 5, 300)])
def test_gemm_f16w(n, rows, cols):
    rng = np.random.default_rng(rows)
    W = rng.standard_normal((rows, cols)).astype(np.float16)
    X = rng.standard_normal((n, cols)).astype(np.float32)
    got = _internal.cuda_gemm_f16w(W.view(np.uint16), X, n, rows, cols).reshape(n, rows)
    W64, X64 = W.astype(np.float64), X.astype(np.float64)
    bound = cols * 2.0 ** -24 * (np.abs(X64) @ np.abs(W64).T)  # fp32 accumulation of cols terms
    assert np.all(np.abs(got - X64 @ W64.T) <= bound + 1e-6)


# ---- random tiny models in every dtype --------------------------------------------------------------

def write_f32_model(path, context_length=512, layers=2, heads=3, kv_heads=1, head_dim=16):
    """An f32 model, hidden 48, ffn 100, byte vocabulary, tied embedding (by default 2 layers,
    3 heads of 16, 1 KV head)."""
    V, D, L, H, KV, HD, F = 256, 48, layers, heads, kv_heads, head_dim, 100
    meta = byte_model_metadata()
    meta.update({"llama.hidden_size": D, "llama.n_layers": L, "llama.n_heads": H, "llama.n_kv_heads": KV,
                 "llama.head_dim": HD, "llama.ffn_size": F, "llama.context_length": context_length,
                 "llama.tie_word_embeddings": 1, "general.name": "cuda test f32"})
    rng = np.random.default_rng(5)
    shapes = {"token_embd.weight": (V, D), "output_norm.weight": (D,)}
    for l in range(L):
        for name, dims in (("attn_norm", (D,)), ("attn_q", (H * HD, D)), ("attn_k", (KV * HD, D)),
                           ("attn_v", (KV * HD, D)), ("attn_output", (D, H * HD)), ("ffn_norm", (D,)),
                           ("ffn_gate", (F, D)), ("ffn_up", (F, D)), ("ffn_down", (D, F))):
            shapes[f"blk.{l}.{name}.weight"] = dims
    tensors = {}
    for name, dims in shapes.items():
        data = (1 + 0.1 * rng.standard_normal(dims)) if len(dims) == 1 else \
            rng.standard_normal(dims) / np.sqrt(dims[-1])
        tensors[name] = ("f32", dims, data.astype(np.float32))
    return write_byte_model(path, meta, tensors)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda_models")
    paths = {"f32": write_f32_model(out / "f32.mixrt")}
    for recipe in ("f16", "q8", "q4", "mix"):
        paths[recipe] = out / f"{recipe}.mixrt"
        embed = "q4" if recipe == "mix" else None
        make_random_mixrt(paths[recipe], shape="tiny", recipe=recipe, bits=4.0, embed_dtype=embed, vocab=300,
                          seed=3)
    return paths


def step_logits(model, prompt, steps):
    """Feeds prompt, then `steps` single tokens (a fixed sequence, cycling through the prompt),
    returning the last logits row after every feed, and the context's backend."""
    with model.context() as ctx:
        ctx.feed(list(prompt), False)
        rows = [ctx.logits()[-1]]
        for t in range(steps):
            ctx.feed([int(prompt[t % len(prompt)])], False)
            rows.append(ctx.logits()[-1])
        return np.array(rows), ctx.backend


@needs_gpu
@pytest.mark.parametrize("recipe", ["f32", "f16", "q8", "q4", "mix"])
def test_tiny_model_cpu_vs_cuda(tiny_models, recipe):
    path = tiny_models[recipe]
    cpu = mixrt.load(path, backend="cpu", threads=2)
    gpu = mixrt.load(path, backend="cuda")
    assert (cpu.backend, gpu.backend, gpu.backend_note) == ("cpu", "cuda", "")
    rng = np.random.default_rng(7)
    for n in (6, 40):  # prefill through matvec (<= 8 tokens) and through dequantize + GEMM
        ids = rng.integers(0, 256, n).tolist()
        err = rel_error(gpu.eval_logits(ids), cpu.eval_logits(ids))
        print(f"{recipe} prefill {n} tokens: max |dlogit| / scale = {err:.2e}")
        assert err <= LOGIT_RTOL
    prompt = rng.integers(0, 256, 5).tolist()
    want, cpu_backend = step_logits(cpu, prompt, 24)
    got, gpu_backend = step_logits(gpu, prompt, 24)  # steps 3.. replay the captured decode graph
    assert (cpu_backend, gpu_backend) == ("cpu", "cuda")
    err = rel_error(got, want)
    print(f"{recipe} decode 24 steps: max |dlogit| / scale = {err:.2e}")
    assert err <= LOGIT_RTOL


@needs_gpu
def test_long_feed_in_chunks_and_reset(tiny_models, tmp_path):
    path = write_f32_model(tmp_path / "long.mixrt", context_length=1024)
    cpu = mixrt.load(path, backend="cpu", threads=2)
    gpu = mixrt.load(path, backend="cuda")
    ids = np.random.default_rng(2).integers(0, 256, 600).tolist()  # 3 chunks of at most 256
    err = rel_error(gpu.eval_logits(ids), cpu.eval_logits(ids))
    print(f"600-token feed: max |dlogit| / scale = {err:.2e}")
    assert err <= LOGIT_RTOL
    # A second use of the context resets it; the decode graph keeps working across resets.
    assert gpu.generate_ids(ids[:50], 30) == cpu.generate_ids(ids[:50], 30)
    assert gpu.generate_ids(ids[100:120], 30) == cpu.generate_ids(ids[100:120], 30)


@needs_gpu
def test_context_full_and_capture_errors(tiny_models):
    gpu = mixrt.load(tiny_models["f16"], backend="cuda", n_ctx=16)
    with gpu.context() as ctx:
        ctx.feed(list(range(10)), False)
        with pytest.raises(mixrt.MixrtError, match="exceed the context of 16 tokens"):
            ctx.feed(list(range(7)), False)
        ctx.set_capture(lambda *a: None)
        with pytest.raises(mixrt.MixrtError, match="CPU backend only"):
            ctx.feed([1], False)


@needs_gpu
def test_out_of_device_memory_names_the_bytes(tmp_path):
    n_ctx = 1 << 22  # the longest context a file may declare
    path = write_f32_model(tmp_path / "huge_ctx.mixrt", context_length=n_ctx, layers=4, heads=32, kv_heads=32,
                           head_dim=256)
    model = mixrt.load(path, backend="cuda")
    # 4 layers x 2^22 tokens x 8192 values x 2 bytes = 256 GiB, more than any single GPU holds.
    with pytest.raises(mixrt.MixrtError, match=r"cannot allocate 274877906944 bytes for the key cache"):
        with model.context():
            pass


# ---- the real SmolLM2 -----------------------------------------------------------------------------

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
           "Water boils at a temperature of"]


@pytest.fixture(scope="module")
def smollm2_for_cuda(request):
    """MIXRT_SMOLLM2_MIX (the converted mix file) if set, else the f16 conversion from ../shared."""
    env = os.environ.get("MIXRT_SMOLLM2_MIX")
    if env:
        return Path(env)
    return request.getfixturevalue("smollm2_f16")


@needs_gpu
@pytest.mark.real_model
def test_smollm2_logits_and_greedy(smollm2_for_cuda):
    cpu = mixrt.load(smollm2_for_cuda, backend="cpu", n_ctx=512)
    gpu = mixrt.load(smollm2_for_cuda, backend="cuda", n_ctx=512)
    text = ("The tower is 324 metres (1,063 ft) tall, about the same height as an 81-storey building, and the "
            "tallest structure in Paris. Its base is square, measuring 125 metres on each side.")
    ids = cpu.tokenize(text)
    want, got = cpu.eval_logits(ids), gpu.eval_logits(ids)
    err = rel_error(got, want)
    top1 = float(np.mean(got.argmax(axis=1) == want.argmax(axis=1)))
    print(f"SmolLM2 {len(ids)} tokens: max |dlogit| / scale = {err:.2e}, top-1 agreement {top1:.3f}")
    assert err <= LOGIT_RTOL
    for prompt in PROMPTS:
        p = cpu.tokenize(prompt)
        a, b = cpu.generate_ids(p, 32), gpu.generate_ids(p, 32)
        print(f"{prompt!r}: {gpu.detokenize(b)!r}")
        assert a == b


# ---- backend choice (runs everywhere) -------------------------------------------------------------

def test_backend_choice_without_gpu_or_with(tmp_path):
    path = write_f32_model(tmp_path / "m.mixrt")
    auto = mixrt.load(path, backend="auto")
    if CUDA_REASON:
        assert auto.backend == "cpu"
        assert CUDA_REASON in auto.backend_note
        with pytest.raises(mixrt.MixrtError, match="backend cuda requested but unavailable"):
            mixrt.load(path, backend="cuda")
    else:
        assert (auto.backend, auto.backend_note) == ("cuda", "")
    assert mixrt.load(path, backend="cpu").backend == "cpu"
    with pytest.raises(ValueError, match="backend: expected one of auto, cpu, cuda"):
        mixrt.load(path, backend="gpu")


def test_the_unavailable_reason_is_true():
    """Without an NVIDIA driver the CUDA runtime reports an "insufficient driver"; the reason must
    say that there is no driver (no GPU) instead, and never claim that on a machine with one."""
    import ctypes

    if CUDA_REASON == "mixrt was built without the CUDA backend":
        pytest.skip("this build has no CUDA backend, so it never asks the driver")
    try:
        ctypes.CDLL("libcuda.so.1")
        has_driver = True
    except OSError:
        has_driver = False
    print(f"\nNVIDIA driver library present: {has_driver}; reason: {CUDA_REASON!r}")
    if has_driver:
        assert "no NVIDIA GPU driver" not in CUDA_REASON
    else:
        assert CUDA_REASON == "no NVIDIA GPU driver is installed (no NVIDIA GPU on this machine)"
