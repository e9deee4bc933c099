# bench_cuda_decode.py: end-to-end decode speed on the GPU at batch 1, in one run: a
# Llama-2-7B-shaped model with random weights in mixrt's mix recipe (2.9 bits by default) and in
# f16 (files written by tools/make_random_mixrt.py), and PyTorch fp16 transformers
# LlamaForCausalLM with random weights, eager and torch.compile (static cache, CUDA graphs), each
# at a short and a long context (128 and 2048 tokens of prompt before the timed tokens). Prints
# the machine, the command, tokens/s, the bytes one decode step must read (weights + KV cache) and
# that traffic as a fraction of the device-to-device copy bandwidth measured in the same run.
#
#   python tools/bench_cuda_decode.py --workdir /tmp/bench [--contexts 128 2048] [--tokens 128]
from __future__ import annotations

import argparse
import gc
import inspect
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mixrt.devtools.random_model import DEFAULT_VOCAB, SHAPES

TOOLS = Path(__file__).resolve().parent


def copy_bandwidth(torch) -> float:
    """Device-to-device copy of 1 GiB, bytes read + written per second (median of 20)."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    times = []
    for i in range(25):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        if i >= 5:
            times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * (1 << 30) / statistics.median(times)


def kv_bytes(shape, ctx: float) -> float:
    """fp16 keys and values of ctx tokens, all layers (what attention reads per decode step)."""
    head_dim = shape.hidden // shape.heads
    return 2 * shape.layers * ctx * shape.kv_heads * head_dim * 2


# ---- mixrt ---------------------------------------------------------------------------------------

def kernel_profile(torch, ctx, greedy, steps: int) -> str:
    """The CUDA kernels of `steps` decode steps (torch.profiler, CUPTI), by total device time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            ctx.feed([greedy.sample(ctx)], False)
    averages = prof.key_averages()
    for key in ("device_time_total", "cuda_time_total"):
        try:
            return averages.table(sort_by=key, row_limit=16, max_name_column_width=60)
        except (AttributeError, KeyError, ValueError):
            continue
    return averages.table(row_limit=16)


def bench_mixrt(path: Path, contexts, tokens: int, warmup: int, repeats: int, torch=None,
                profile_steps: int = 0) -> dict:
    import mixrt

    n_ctx = max(contexts) + warmup + tokens + 1
    rng = np.random.default_rng(0)
    with mixrt.load(path, backend="cuda", n_ctx=n_ctx, threads=1) as model:
        if model.backend != "cuda":
            raise RuntimeError(f"mixrt did not load on CUDA: {model.backend_note}")
        # Bytes read per decode step: every weight except the embedding (one row of it).
        weight_bytes = sum(t["n_bytes"] for t in model.tensors() if t["name"] != "token_embd.weight")
        greedy = model.sampler(temperature=0, repeat_penalty=1.0)
        out = {"weight_bytes": weight_bytes, "contexts": {}}
        with model.context() as ctx:
            for c in contexts:
                prefill, decode = [], []
                for _ in range(repeats):
                    ctx.reset()
                    ids = rng.integers(3, 259, c).tolist()  # byte tokens of the random vocabulary
                    start = time.perf_counter()
                    ctx.feed(ids, False)
                    prefill.append(c / (time.perf_counter() - start))
                    for _ in range(warmup):  # also captures the decode graph
                        ctx.feed([greedy.sample(ctx)], False)
                    start = time.perf_counter()
                    for _ in range(tokens):
                        ctx.feed([greedy.sample(ctx)], False)
                    decode.append(tokens / (time.perf_counter() - start))
                out["contexts"][c] = {"decode_tok_s": statistics.median(decode),
                                      "prefill_tok_s": statistics.median(prefill), "decode_all": decode}
                if profile_steps and c == contexts[0]:
                    out["profile"] = kernel_profile(torch, ctx, greedy, profile_steps)
                    print(f"{path.name}, context {c}: kernels of {profile_steps} decode steps\n{out['profile']}")
    del ctx  # the last reference to the closed model's device memory: freed before the next model loads
    gc.collect()
    return out


# ---- PyTorch ------------------------------------------------------------------------------------

def torch_model(torch, shape):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.ffn, num_hidden_layers=shape.layers,
                         num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                         vocab_size=DEFAULT_VOCAB, max_position_embeddings=shape.context, rms_norm_eps=1e-5,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    return model.eval()


def static_cache(torch, model, max_len: int):
    from transformers import StaticCache

    params = inspect.signature(StaticCache.__init__).parameters
    kwargs = {"config": model.config, "max_cache_len": max_len}
    for name, value in (("max_batch_size", 1), ("device", "cuda"), ("dtype", torch.float16)):
        if name in params:
            kwargs[name] = value
    return StaticCache(**kwargs)


def bench_torch_eager(torch, model, contexts, tokens, warmup, repeats) -> dict:
    out = {}
    for c in contexts:
        rates = []
        for _ in range(repeats):
            ids = torch.randint(3, 259, (1, c), device="cuda")
            with torch.inference_mode():
                res = model(input_ids=ids, use_cache=True)
                pkv, nxt = res.past_key_values, res.logits[:, -1:].argmax(-1)
                for i in range(warmup + tokens):
                    if i == warmup:
                        torch.cuda.synchronize()
                        start = time.perf_counter()
                    res = model(input_ids=nxt, past_key_values=pkv, use_cache=True)
                    pkv, nxt = res.past_key_values, res.logits[:, -1:].argmax(-1)
                torch.cuda.synchronize()
            rates.append(tokens / (time.perf_counter() - start))
            del pkv, res
        out[c] = {"decode_tok_s": statistics.median(rates), "decode_all": rates}
    return out


class CompiledDecoder:
    """The model's single-token step under torch.compile (mode reduce-overhead: CUDA graphs) over a
    static KV cache; compiled once, reused for every context."""

    def __init__(self, torch, model, max_len: int):
        self.torch, self.model = torch, model
        self.cache = static_cache(torch, model, max_len)
        self.compiled = torch.compile(self._step, mode="reduce-overhead", fullgraph=False)

    def _step(self, ids, pos):
        return self.model(input_ids=ids, past_key_values=self.cache, cache_position=pos, position_ids=pos[None],
                          use_cache=True).logits[:, -1:].argmax(-1)

    def decode_rate(self, c: int, tokens: int, warmup: int) -> float:
        """Prefill c random tokens (eager), then warmup + tokens compiled steps; tokens/s of the last."""
        torch = self.torch
        ids = torch.randint(3, 259, (1, c), device="cuda")
        with torch.inference_mode():
            self.cache.reset()
            nxt = self._step(ids, torch.arange(c, device="cuda"))
            for i in range(warmup + tokens):
                if i == warmup:
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                nxt = self.compiled(nxt, torch.tensor([c + i], device="cuda")).clone()
            torch.cuda.synchronize()
        return tokens / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description="End-to-end GPU decode speed: mixrt (mix, f16) vs PyTorch fp16.")
    ap.add_argument("--workdir", default="/tmp/mixrt-bench", help="where the model files are written")
    ap.add_argument("--shape", choices=SHAPES, default="llama2-7b")
    ap.add_argument("--bits", type=float, default=2.9, help="mix recipe: bits per decoder linear weight")
    ap.add_argument("--contexts", type=int, nargs="+", default=[128, 2048])
    ap.add_argument("--tokens", type=int, default=128, help="decode tokens timed per measurement")
    ap.add_argument("--warmup", type=int, default=8, help="decode tokens run before timing")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per context (median reported)")
    ap.add_argument("--torch-compile-warmup", type=int, default=16,
                    help="decode steps of the compiled model before its measurements start")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--recipes", nargs="+", choices=("mix", "f16"), default=["mix", "f16"],
                    help="the mixrt models to measure")
    ap.add_argument("--profile-steps", type=int, default=0,
                    help="also profile this many mixrt decode steps (torch.profiler) and print the kernels")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import torch

    from mixrt import _core, _internal

    shape = SHAPES[args.shape]
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    files = {"mixrt mix": (work / f"{args.shape}-mix{args.bits}.mixrt", ["--recipe", "mix", "--bits", str(args.bits)]),
             "mixrt f16": (work / f"{args.shape}-f16.mixrt", ["--recipe", "f16"])}
    files = {name: f for name, f in files.items() if name.split()[1] in args.recipes}
    # The model files are written by background processes while PyTorch builds and compiles.
    writers = []
    for path, extra in files.values():
        if not path.exists():
            cmd = [sys.executable, str(TOOLS / "make_random_mixrt.py"), str(path), "--shape", args.shape, *extra]
            writers.append((path, subprocess.Popen(cmd)))

    started = time.perf_counter()
    device = _internal.cuda_device()
    bandwidth = copy_bandwidth(torch)
    print(f"machine: {device}; torch {torch.__version__}; copy bandwidth {bandwidth / 1e9:.0f} GB/s "
          "(device-to-device, read + write)")
    print(f"command: {' '.join(sys.argv)}")
    results = {"device": device, "copy_bandwidth_Bps": bandwidth, "command": sys.argv, "shape": args.shape,
               "tokens": args.tokens, "engines": {}}
    torch_params = None
    if not args.skip_torch:
        import transformers

        print(f"transformers {transformers.__version__}")
        model = torch_model(torch, shape)
        torch_params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
        decoder = CompiledDecoder(torch, model, max(args.contexts) + args.warmup + args.tokens + 1)
        # Compile (and record the CUDA graphs) while the model files are still being written.
        warm = decoder.decode_rate(min(args.contexts), args.torch_compile_warmup, 2)
        print(f"torch.compile warm-up done at {time.perf_counter() - started:.0f} s ({warm:.1f} tok/s)")
    for path, proc in writers:
        if proc.wait() != 0:
            raise RuntimeError(f"make_random_mixrt.py failed for {path}")
    print(f"model files ready at {time.perf_counter() - started:.0f} s")
    if not args.skip_torch:
        results["engines"]["torch fp16 eager"] = {
            "weight_bytes": 2 * torch_params,
            "contexts": bench_torch_eager(torch, model, args.contexts, args.tokens, args.warmup, args.repeats)}
        compiled = {}
        for c in args.contexts:
            rates = [decoder.decode_rate(c, args.tokens, args.warmup) for _ in range(args.repeats)]
            compiled[c] = {"decode_tok_s": statistics.median(rates), "decode_all": rates}
        results["engines"]["torch fp16 compile"] = {"weight_bytes": 2 * torch_params, "contexts": compiled}
        del model, decoder
        gc.collect()
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    for name, (path, _) in files.items():
        results["engines"][name] = bench_mixrt(path, args.contexts, args.tokens, args.warmup, args.repeats, torch,
                                               args.profile_steps)

    print(f"\n{args.shape} shape, batch 1, {args.tokens} timed decode tokens after {args.warmup} warm-up ones, "
          f"median of {args.repeats}")
    print(f"{'engine':<20} {'context':>7} {'tok/s':>8} {'ms/tok':>7} {'MB/tok':>8} {'GB/s':>6} {'of copy bw':>10} "
          f"{'prefill tok/s':>13}")
    for name, r in results["engines"].items():
        for c, m in r["contexts"].items():  # the KV cache read grows over the timed tokens: mean
            per_token = r["weight_bytes"] + kv_bytes(shape, c + args.warmup + args.tokens / 2)
            rate = m["decode_tok_s"]
            m["bytes_per_token"] = per_token
            m["fraction_of_copy_bw"] = per_token * rate / bandwidth
            prefill = f"{m['prefill_tok_s']:>13.0f}" if "prefill_tok_s" in m else ""
            print(f"{name:<20} {c:>7} {rate:>8.1f} {1e3 / rate:>7.3f} {per_token / 1e6:>8.1f} "
                  f"{per_token * rate / 1e9:>6.0f} {m['fraction_of_copy_bw']:>10.1%} {prefill}")
    if not args.skip_torch and "mixrt mix" in results["engines"]:
        for c in args.contexts:
            mix = results["engines"]["mixrt mix"]["contexts"][c]["decode_tok_s"]
            ref = results["engines"]["torch fp16 compile"]["contexts"][c]["decode_tok_s"]
            print(f"context {c}: mixrt mix / torch.compile fp16 = {mix / ref:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
