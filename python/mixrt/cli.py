"""The `mixrt` command: run (stream a continuation), info (what a file holds), perplexity and
bench (prompt and decode tokens/s). Tested by tests/test_cli.py."""

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


def cmd_bench(args) -> int:
    """Prompt processing (one batched pass over -p tokens) and decode (-n tokens, one at a time,
    after a 32-token prompt), each repeated -r times; prints medians and spreads."""
    import statistics

    from . import _core

    model = _load(args)
    rng = np.random.default_rng(0)
    ids = [int(t) for t in rng.integers(0, model.n_vocab, size=max(args.p, 32))]
    n_ctx = max(args.p, 32 + args.n)
    ctx = _core.Context(model._model, n_ctx, model.threads)
    sampler = _core.Sampler(0.0, 0, 1.0, 0.0, 1.0, 64, 0)
    prompt_rates, decode_rates = [], []
    for _ in range(args.repeats):
        if args.p > 0:
            ctx.reset()
            start = time.perf_counter()
            ctx.feed(ids[: args.p], False)
            prompt_rates.append(args.p / (time.perf_counter() - start))
        ctx.reset()
        ctx.feed(ids[:32], False)
        start = time.perf_counter()
        for _ in range(args.n):
            ctx.feed([sampler.sample(ctx)], False)
        decode_rates.append(args.n / (time.perf_counter() - start))

    def summary(rates):
        return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)} if rates else None

    result = {"model": args.model, "backend": model.backend, "backend_note": model.backend_note,
              "cuda_device": _core.cuda_device() if model.backend == "cuda" else None,
              "cpu": cpu_name(), "threads": model.threads, "kernels": _core.best_kernels(),
              "prompt_tokens": args.p, "decode_tokens": args.n, "repeats": args.repeats,
              "prompt_tokens_per_s": summary(prompt_rates)["median"] if prompt_rates else None,
              "decode_tokens_per_s": summary(decode_rates)["median"],
              "prompt": summary(prompt_rates), "decode": summary(decode_rates)}
    if args.json:
        print(json.dumps(result))
        return 0
    if model.backend == "cuda":
        print(f"{args.model} on {result['cuda_device']} (CUDA backend)")
    else:
        print(f"{args.model} on {result['cpu']}, {model.threads} threads, {result['kernels']} kernels"
              + (f" ({model.backend_note})" if model.backend_note else ""))
    if prompt_rates:
        p = result["prompt"]
        print(f"  prompt {args.p:>4} tokens: {p['median']:8.1f} tokens/s (min {p['min']:.1f}, max {p['max']:.1f})")
    d = result["decode"]
    print(f"  decode {args.n:>4} tokens: {d['median']:8.1f} tokens/s (min {d['min']:.1f}, max {d['max']:.1f})"
          f", median of {args.repeats}")
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
    b.add_argument("-n", type=int, default=128, help="tokens decoded one at a time after a 32-token prompt")
    b.add_argument("-r", "--repeats", type=int, default=5)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
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
