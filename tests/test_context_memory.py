# test_context_memory.py: long advertised contexts are not allocated blindly: n_ctx defaults to
# min(the model's context length, DEFAULT_N_CTX), the KV cache size is known before a context
# exists and shown on load, and a KV cache larger than the memory available is refused with a
# clear MixrtError (not an out-of-memory kill later, when its pages fill).
import subprocess
import sys

import numpy as np
import pytest

import mixrt
from mixrt import _core
from mixrt.devtools.random_model import byte_model_metadata, byte_model_tensors, write_byte_model

# A long-context byte model: 64 KV heads of 512 dims (kv width 32768) advertising 4M tokens, so
# its full KV cache (2 x 4194304 x 32768 x 2 bytes = 512 GiB in f16) fits in no test machine,
# while the file stays small (hidden size 8).
LONG_CONTEXT = 1 << 22
HEADS, HEAD_DIM = 64, 512


@pytest.fixture(scope="module")
def long_context_model(tmp_path_factory):
    meta = byte_model_metadata()
    meta.update({"llama.context_length": LONG_CONTEXT, "llama.n_heads": HEADS, "llama.n_kv_heads": HEADS,
                 "llama.head_dim": HEAD_DIM})
    tensors = byte_model_tensors()
    d, width = meta["llama.hidden_size"], HEADS * HEAD_DIM
    rng = np.random.default_rng(0)
    for kind, dims in (("attn_q", (width, d)), ("attn_k", (width, d)), ("attn_v", (width, d)),
                       ("attn_output", (d, width))):
        tensors[f"blk.0.{kind}.weight"] = ("f16", dims, rng.standard_normal(dims).astype(np.float32) * 0.1)
    return write_byte_model(tmp_path_factory.mktemp("long") / "long.mixrt", meta, tensors)


def test_default_context_is_bounded(long_context_model, random_model):
    long = mixrt.load(long_context_model, threads=1)
    assert long.context_length == LONG_CONTEXT and long.n_ctx == _core.DEFAULT_N_CTX == 4096
    assert long.kv_cache_bytes == 2 * 1 * 4096 * HEADS * HEAD_DIM * 2
    short = mixrt.load(random_model, threads=1)  # context 256 < 4096: all of it
    assert short.n_ctx == short.context_length == 256
    ids = long.tokenize("hello", add_bos=False)
    assert long.eval_logits(ids).shape == (len(ids), 256)  # the bounded cache works


def test_kv_cache_larger_than_memory_is_refused(long_context_model):
    model = mixrt.load(long_context_model, threads=1, n_ctx=LONG_CONTEXT)
    assert model.kv_cache_bytes == 2 * LONG_CONTEXT * HEADS * HEAD_DIM * 2
    with pytest.raises(mixrt.MixrtError, match=r"the KV cache of 4194304 tokens \(1 layers x 32768 keys and "
                                               r"values x 2 bytes\) needs 524288 MiB, more than the \d+ MiB of "
                                               r"memory available; use a smaller n_ctx"):
        model.eval_logits([1, 2, 3])


def test_info_and_run_show_the_kv_cache(long_context_model):
    info = subprocess.run([sys.executable, "-m", "mixrt", "info", str(long_context_model)], capture_output=True,
                          text=True, check=True).stdout
    assert "default context: 4096 tokens, KV cache 536.9 MB (f16)" in info
    run = subprocess.run([sys.executable, "-m", "mixrt", "run", str(long_context_model), "hi", "-n", "2", "-v",
                          "-t", "1"], capture_output=True, text=True, check=True)
    assert "context 4096 tokens (model: 4194304), KV cache 536.9 MB (f16)" in run.stderr
