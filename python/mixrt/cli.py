"""The `mixrt` command: run (stream a continuation), info (what a file holds), perplexity and
bench (prompt and decode tokens/s, GB/s against the measured read bandwidth, per-shape GEMV speed).
Tested by tests/test_cli.py."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _load(args):
    from .api import load

    return load(args.model, threads=args.threads, backend=args.backend)


def cmd_run(args) -> int:
    model = _load(args)
    start = time.perf_counter()
    n = 0
    for piece in model.generate(args.prompt, max_tokens=args.n, temperature=args.temp, top_k=args.top_k,
                                top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                                seed=args.seed, stop=args.stop, stream=True):
        sys.stdout.write(piece)
        sys.stdout.flush()
        n += 1
    sys.stdout.write("\n")
    if args.verbose:
        print(f"[{time.perf_counter() - start:.2f} s, stop: {model.last_stop_reason}]", file=sys.stderr)
    return 0


def describe(model) -> dict:
    """Hyperparameters, tensors and bit counts of a loaded model. Per tensor: bits per weight from
    the bytes stored, and for mix tensors the share of 4-bit columns and of fp16 outliers."""
    meta = model.metadata()
    tensors = model.tensors()
    for t in tensors:
        t["bits_per_weight"] = 8.0 * t["n_bytes"] / t["n_elements"]
        t["share_4bit_cols"] = t["n_cols_4bit"] / t["dims"][-1]
        t["share_outliers"] = t["n_outliers"] / t["n_elements"]
    linear = [t for t in tensors if t["name"].startswith("blk.") and len(t["dims"]) == 2]
    size = Path(model.path).stat().st_size
    total_params = sum(t["n_elements"] for t in tensors)
    return {
        "file": model.path,
        "file_bytes": size,
        "metadata": meta,
        "parameters": total_params,
        "bits_per_param_file": 8.0 * size / total_params,
        "bits_per_weight_decoder_linear": (8.0 * sum(t["n_bytes"] for t in linear) /
                                           max(1, sum(t["n_elements"] for t in linear))),
        "tensor_bytes": sum(t["n_bytes"] for t in tensors),
        "tensors": tensors,
    }


def cmd_info(args) -> int:
    info = describe(_load(args))
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['file']}: {info['file_bytes'] / 1e6:.1f} MB, {info['parameters'] / 1e6:.1f} M parameters")
    for key, value in info["metadata"].items():
        if key != "tokenizer.chat_template":
            print(f"  {key} = {value}")
    print(f"  bits per parameter (whole file): {info['bits_per_param_file']:.3f}")
    print(f"  bits per weight (decoder linear layers): {info['bits_per_weight_decoder_linear']:.3f}")
    print(f"\n  {'tensor':<32} {'dtype':<6} {'dims':<16} {'MB':>9} {'bits/w':>7} {'4-bit cols':>10} {'outliers':>9}")
    for t in info["tensors"]:
        dims = "x".join(str(d) for d in t["dims"])
        mix = t["dtype"] == "mix"
        cols = f"{100 * t['share_4bit_cols']:.1f}%" if mix else "-"
        outl = f"{100 * t['share_outliers']:.2f}%" if mix else "-"
        print(f"  {t['name']:<32} {t['dtype']:<6} {dims:<16} {t['n_bytes'] / 1e6:>9.3f} {t['bits_per_weight']:>7.2f}"
              f" {cols:>10} {outl:>9}")
    return 0


def cmd_perplexity(args) -> int:
    model = _load(args)
    text = Path(args.textfile).read_text(encoding="utf-8")
    start = time.perf_counter()
    result = model.perplexity(text, ctx=args.ctx, max_tokens=args.tokens)
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["model"] = args.model
    result["text"] = args.textfile
    if args.json:
        print(json.dumps(result))
    else:
        print(f"ppl {result['ppl']:.4f} over {result['tokens_scored']} scored tokens "
              f"(first {result['tokens']} tokens, windows of {result['ctx']}, no BOS) in {result['seconds']} s")
    return 0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def weight_bytes_per_token(tensors: list) -> int:
    """Bytes of weights one decoded token reads: every 2-dim matrix but the token embedding (the
    head reads it when tied), all norm vectors, and one embedding row."""
    by_name = {t["name"]: t for t in tensors}
    total = sum(t["n_bytes"] for t in tensors if t["name"] != "token_embd.weight")
    embd = by_name["token_embd.weight"]
    if "output.weight" not in by_name:  # tied: the head is the embedding matrix
        total += embd["n_bytes"]
    return total + embd["n_bytes"] // embd["dims"][0]


def summary(values: list) -> dict | None:
    import statistics

    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else None


READ_BUFFER_BYTES = 1 << 29  # 512 MiB: far beyond any last-level cache


def gemv_rows(model, threads: int, reps: int) -> list:
    """Per matrix role and dtype: the time of a matmul at batch 1 over that role's matrices of every
    layer in turn (so they stream from memory as in decode), as GB/s of weight bytes read."""
    from . import _core

    groups = {}
    for t in model.tensors():
        if len(t["dims"]) != 2 or t["name"] == "token_embd.weight":
            continue
        role = t["name"].split(".", 2)[2] if t["name"].startswith("blk.") else t["name"]
        groups.setdefault((role, t["dtype"], tuple(t["dims"])), []).append(t)
    if not any(role == "output.weight" for role, _, _ in groups):  # tied head
        embd = next(t for t in model.tensors() if t["name"] == "token_embd.weight")
        groups[("output.weight", embd["dtype"], tuple(embd["dims"]))] = [dict(embd, name="output.weight")]
    rows = []
    for (role, dtype, dims), ts in groups.items():
        times = _core.time_gemv(model._model, [t["name"] for t in ts], threads, 1, reps)
        seconds = summary(times)["median"]
        nbytes = sum(t["n_bytes"] for t in ts)
        rows.append({"matrix": role, "dtype": dtype, "M": dims[0], "K": dims[1], "count": len(ts),
                     "bytes": nbytes, "us_per_matrix": 1e6 * seconds / len(ts), "GBps": nbytes / seconds / 1e9})
    return rows


def cmd_bench(args) -> int:
    """Prompt processing (one batched pass over -p tokens) and decode (-n tokens, one at a time,
    after a 32-token prompt), each repeated -r times; medians and spreads, weight bytes read per
    token, achieved GB/s, and the machine's read bandwidth measured by a multi-threaded read in the
    same run (the best of passes before and after the timed runs). --gemv times each matrix shape."""
    import os

    from . import _core

    model = _load(args)
    if args.gemv and model.backend == "cuda":
        raise ValueError("--gemv times the CPU kernels: expected --backend cpu, found the CUDA "
                         "backend (GPU kernels: tools/bench_cuda_gemv.py)")
    threads = model.threads
    load_before = os.getloadavg()[0]
    bandwidth = _core.read_bandwidth(threads, READ_BUFFER_BYTES, 3)
    bytes_per_token = weight_bytes_per_token(model.tensors())
    result = {"model": args.model, "backend": model.backend, "backend_note": model.backend_note,
              "cuda_device": _core.cuda_device() if model.backend == "cuda" else None,
              "cpu": cpu_name(), "threads": threads, "kernels": _core.best_kernels(),
              "command": " ".join(["mixrt", *map(str, args.argv)]),
              "file_bytes": Path(args.model).stat().st_size, "weight_bytes_per_token": bytes_per_token}
    if args.gemv:
        result["gemv"] = gemv_rows(model, threads, args.repeats)
    else:
        rng = np.random.default_rng(0)
        ids = [int(t) for t in rng.integers(0, model.n_vocab, size=max(args.p, 32))]
        ctx = _core.Context(model._model, max(args.p, 32 + args.n), threads)
        sampler = _core.Sampler(0.0, 0, 1.0, 0.0, 1.0, 64, 0)
        prompt_rates, decode_rates = [], []
        for _ in range(args.repeats):
            if args.p > 0:
                ctx.reset()
                start = time.perf_counter()
                ctx.feed(ids[: args.p], False)
                prompt_rates.append(args.p / (time.perf_counter() - start))
            if args.n > 0:
                ctx.reset()
                ctx.feed(ids[:32], False)
                start = time.perf_counter()
                for _ in range(args.n):
                    ctx.feed([sampler.sample(ctx)], False)
                decode_rates.append(args.n / (time.perf_counter() - start))
        prompt, decode = summary(prompt_rates), summary(decode_rates)
        result.update({"prompt_tokens": args.p, "decode_tokens": args.n, "repeats": args.repeats,
                       "prompt_tokens_per_s": prompt["median"] if prompt else None,
                       "decode_tokens_per_s": decode["median"] if decode else None,
                       "prompt": prompt, "decode": decode,
                       "decode_GBps": bytes_per_token * decode["median"] / 1e9 if decode else None})
    bandwidth += _core.read_bandwidth(threads, READ_BUFFER_BYTES, 3)
    result["read_bandwidth_GBps"] = max(bandwidth) / 1e9
    result["read_bandwidth_passes_GBps"] = [round(b / 1e9, 2) for b in bandwidth]
    if result.get("decode_GBps"):
        result["decode_fraction_of_read_bandwidth"] = result["decode_GBps"] / result["read_bandwidth_GBps"]
    result["load_average_1m"] = [load_before, os.getloadavg()[0]]
    if args.json:
        print(json.dumps(result))
        return 0
    bw = result["read_bandwidth_GBps"]
    print(result["command"])
    if model.backend == "cuda":
        print(f"{args.model} on {result['cuda_device']} (CUDA backend), "
              f"load average {load_before:.2f} -> {result['load_average_1m'][1]:.2f}")
    else:
        print(f"{args.model} on {result['cpu']}, {threads} threads, {result['kernels']} kernels"
              + (f" ({model.backend_note})" if model.backend_note else "")
              + f", load average {load_before:.2f} -> {result['load_average_1m'][1]:.2f}")
    print(f"  weights read per token: {bytes_per_token / 1e6:.1f} MB (file {result['file_bytes'] / 1e6:.1f} MB); "
          f"machine read bandwidth {bw:.1f} GB/s (best of {len(bandwidth)} passes of "
          f"{READ_BUFFER_BYTES >> 20} MiB)")
    if args.gemv:
        print(f"  {'matrix':<20} {'dtype':<5} {'M x K':>13} {'us/matrix':>10} {'GB/s':>7} {'of read bw':>10}")
        for r in result["gemv"]:
            print(f"  {r['matrix']:<20} {r['dtype']:<5} {r['M']:>6} x {r['K']:<6} {r['us_per_matrix']:>10.1f} "
                  f"{r['GBps']:>7.1f} {r['GBps'] / bw:>9.0%}")
        return 0
    if result["prompt"]:
        p = result["prompt"]
        print(f"  prompt {args.p:>4} tokens: {p['median']:8.1f} tokens/s (min {p['min']:.1f}, max {p['max']:.1f})")
    if result["decode"]:
        d = result["decode"]
        print(f"  decode {args.n:>4} tokens: {d['median']:8.1f} tokens/s (min {d['min']:.1f}, max {d['max']:.1f}), "
              f"{result['decode_GBps']:.1f} GB/s = {result['decode_fraction_of_read_bandwidth']:.0%} of read bandwidth")
    print(f"  median of {args.repeats} repeats")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mixrt", description="Run Llama-family models stored as .mixrt files.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, runs=True):
        sp.add_argument("model", help="a .mixrt file (see mixrt-convert)")
        sp.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores)")
        sp.add_argument("--backend", choices=("auto", "cpu", "cuda"), default="auto" if runs else "cpu",
                        help="where the model runs (default auto: CUDA when built and a GPU is present)"
                        if runs else argparse.SUPPRESS)

    r = sub.add_parser("run", help="stream a continuation of PROMPT to stdout")
    common(r)
    r.add_argument("prompt")
    r.add_argument("-n", type=int, default=128, help="tokens to generate at most (default 128)")
    r.add_argument("--temp", type=float, default=0.8, help="temperature; 0 = greedy (default 0.8)")
    r.add_argument("--top-k", type=int, default=40)
    r.add_argument("--top-p", type=float, default=0.95)
    r.add_argument("--min-p", type=float, default=0.05)
    r.add_argument("--repeat-penalty", type=float, default=1.0)
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    r.add_argument("-v", "--verbose", action="store_true", help="print time and stop reason to stderr")
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("info", help="hyperparameters, tensors, dtypes, sizes and bits per weight")
    common(i, runs=False)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    pp = sub.add_parser("perplexity", help="perplexity of a text file (windows of --ctx tokens, no BOS)")
    common(pp)
    pp.add_argument("textfile")
    pp.add_argument("--ctx", type=int, default=512)
    pp.add_argument("--tokens", type=int, default=None, help="score only the first N tokens")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_perplexity)
    b = sub.add_parser("bench", help="prompt and decode tokens/s (median of repeats)")
    common(b)
    b.add_argument("-p", type=int, default=512, help="prompt tokens, processed in one pass (0 skips)")
    b.add_argument("-n", type=int, default=128, help="tokens decoded one at a time after a 32-token prompt (0 skips)")
    b.add_argument("-r", "--repeats", type=int, default=5)
    b.add_argument("--gemv", action="store_true",
                   help="time a batch-1 matmul per matrix shape and dtype (GB/s) instead of the model")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    from .api import MixrtError

    try:
        return args.func(args)
    except (MixrtError, ValueError, OSError) as e:
        print(f"mixrt: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
