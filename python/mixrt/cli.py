"""The `mixrt` command: run (stream a continuation), chat (an interactive conversation), info (what
a file holds), perplexity and bench (prompt and decode tokens/s, GB/s against the measured read
bandwidth, per-shape GEMV speed). Errors print one line, never a traceback. Tested by
tests/test_cli.py and tests/test_chat.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


MB = 1e6  # every size is printed in MB (10^6 bytes)


def _load(args, n_ctx=None):
    from .api import load

    return load(args.model, threads=args.threads, n_ctx=n_ctx, backend=args.backend, kv_cache=args.kv_cache,
                activations=args.activations)


def _read_prompt(args) -> str:
    """The prompt: the PROMPT argument, standard input for "-", or the file of -f."""
    if args.file is not None and args.prompt is not None:
        raise ValueError("give the prompt either as PROMPT or with -f FILE, not both")
    if args.file is not None:
        return Path(args.file).read_text(encoding="utf-8")
    if args.prompt is None:
        raise ValueError("no prompt: give PROMPT, - to read standard input, or -f FILE")
    return sys.stdin.read() if args.prompt == "-" else args.prompt


def _sampling(args) -> dict:
    return dict(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                repeat_penalty=args.repeat_penalty, seed=args.seed)


def cmd_run(args) -> int:
    prompt = _read_prompt(args)
    model = _load(args, n_ctx=args.ctx)
    if args.verbose:
        print(load_line(model), file=sys.stderr)
    start = time.perf_counter()
    stream = model.generate(prompt, max_tokens=args.n, stop=args.stop, stream=True, special=args.special,
                            **_sampling(args))
    fed = time.perf_counter()
    with stream:
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    if args.verbose:
        end = time.perf_counter()
        print(f"[prompt {stream.prompt_tokens} tokens in {fed - start:.2f} s "
              f"({stream.prompt_tokens / max(fed - start, 1e-9):.1f} tokens/s), "
              f"generated {stream.completion_tokens} tokens in {end - fed:.2f} s "
              f"({stream.completion_tokens / max(end - fed, 1e-9):.1f} tokens/s), "
              f"finish: {stream.finish_reason}]", file=sys.stderr)
    return 0


CHAT_HELP = "/reset clears the conversation, /exit or Ctrl-D quits, Ctrl-C stops an answer"


def chat_repl(model, system: str | None, options: dict, read_line=input, write=None) -> int:
    """The interactive chat loop of `mixrt chat`: reads a line, streams the answer, keeps the
    history. Ctrl-C during an answer stops that answer (what was said stays in the history);
    Ctrl-C or Ctrl-D at the prompt ends the loop."""
    write = write or (lambda text: (sys.stdout.write(text), sys.stdout.flush()))
    from .api import MixrtError

    def fresh():
        return [{"role": "system", "content": system}] if system else []

    messages = fresh()
    while True:
        try:
            line = read_line("> ")
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return 0
        if line.strip() in ("/exit", "/quit"):
            return 0
        if line.strip() == "/reset":
            messages = fresh()
            print("[conversation cleared]", file=sys.stderr)
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        answer = []
        try:
            with model.chat(messages, stream=True, **options) as stream:
                for piece in stream:
                    answer.append(piece)
                    write(piece)
        except KeyboardInterrupt:
            print("\n[stopped]", file=sys.stderr)
        except MixrtError as e:
            messages.pop()
            print(f"\nmixrt: error: {e}" + (" (/reset starts a new conversation)" if "context" in str(e) else ""),
                  file=sys.stderr)
            continue
        write("\n")
        messages.append({"role": "assistant", "content": "".join(answer)})


def cmd_chat(args) -> int:
    model = _load(args, n_ctx=args.ctx)
    model.chat_template()  # a model without a template is refused before the first line
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    print(f"{load_line(model)}, {model.threads} threads. {CHAT_HELP}.", file=sys.stderr)
    options = dict(max_tokens=args.n, stop=args.stop, **_sampling(args))
    return chat_repl(model, args.system, options)


def describe(model) -> dict:
    """Hyperparameters, tensors and bit counts of a loaded model. Per tensor: bits per weight from
    the bytes stored, and for mix and quik tensors the share of 4-bit columns and of fp16 weights
    (mix outliers, quik fp16 columns)."""
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
        "n_ctx": model.n_ctx,
        "kv_cache_bytes": model.kv_cache_bytes,
        "variants": variant_summary(meta, set(model._model.meta_keys())),
        "tensors": tensors,
    }


def variant_summary(meta: dict, keys: set) -> str:
    """The model variants of FORMAT.md 3.3 the file uses, in words ("" for plain Llama); keys: all
    its metadata keys (meta holds the scalar ones)."""
    parts = []
    scaling = meta.get("llama.rope.scaling_type")
    if scaling:
        parts.append(f"RoPE {scaling} x{meta['llama.rope.scaling_factor']:g}"
                     + (f" of {meta['llama.rope.original_context_length']}"
                        if "llama.rope.original_context_length" in meta else ""))
    if "llama.rope.freq_factors" in keys:
        parts.append("RoPE frequency factors")
    biases = [group for group in ("qkv", "attn_output", "mlp") if meta.get(f"llama.bias.{group}")]
    if biases:
        parts.append("biases " + ", ".join(biases))
    if meta.get("llama.sliding_window"):
        parts.append(f"sliding window {meta['llama.sliding_window']}")
    return "; ".join(parts)


def load_line(model) -> str:
    """What a command that loads a model says first: where it runs, its context and KV cache."""
    return (f"mixrt: {Path(model.path).name} on {model.backend}, context {model.n_ctx} tokens "
            f"(model: {model.context_length}), KV cache {model.kv_cache_bytes / MB:.1f} MB ({model.kv_cache})")


HYPERPARAMETERS = (("layers", "llama.n_layers"), ("hidden", "llama.hidden_size"), ("heads", "llama.n_heads"),
                   ("kv heads", "llama.n_kv_heads"), ("ffn", "llama.ffn_size"), ("vocab", "llama.vocab_size"),
                   ("context", "llama.context_length"))


def cmd_info(args) -> int:
    info = describe(_load(args))
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    meta = info["metadata"]
    dtypes = {}
    for t in info["tensors"]:
        dtypes[t["dtype"]] = dtypes.get(t["dtype"], 0) + 1
    print(f"{info['file']}: {info['file_bytes'] / MB:.1f} MB, {info['parameters'] / 1e6:.1f} M parameters, "
          f"{info['bits_per_param_file']:.3f} bits per parameter (whole file)")
    print(f"  model: {meta.get('general.name', '?')} ({meta.get('general.architecture', '?')}), "
          + ", ".join(f"{label} {meta[key]}" for label, key in HYPERPARAMETERS if key in meta))
    if info["variants"]:
        print(f"  variants: {info['variants']}")
    print(f"  default context: {info['n_ctx']} tokens, KV cache {info['kv_cache_bytes'] / MB:.1f} MB (f16)")
    print(f"  recipe: {meta.get('mixrt.recipe', '?')}, decoder linear layers "
          f"{info['bits_per_weight_decoder_linear']:.3f} bits per weight; tensors: "
          + ", ".join(f"{n} {d}" for d, n in sorted(dtypes.items())))
    print(f"  tokenizer: {meta.get('tokenizer.model', '?')}, BOS {meta.get('tokenizer.bos_id', -1)}, "
          f"EOS {meta.get('tokenizer.eos_id', -1)}; converted from {meta.get('mixrt.source', '?')}")
    template = meta.get("tokenizer.chat_template")
    print("  chat template: " + ("none (mixrt chat needs one)" if not template else "\n    "
                                 + "\n    ".join(template.strip().splitlines())))
    if args.metadata:
        print("\n  metadata:")
        for key, value in meta.items():
            if key != "tokenizer.chat_template":
                print(f"    {key} = {value}")
    if args.tensors:
        print(f"\n  {'tensor':<32} {'dtype':<6} {'dims':<16} {'MB':>9} {'bits/w':>7} {'4-bit cols':>10} {'outliers':>9}")
        for t in info["tensors"]:
            dims = "x".join(str(d) for d in t["dims"])
            mix = t["dtype"] in ("mix", "quik")
            cols = f"{100 * t['share_4bit_cols']:.1f}%" if mix else "-"
            outl = f"{100 * t['share_outliers']:.2f}%" if mix else "-"
            print(f"  {t['name']:<32} {t['dtype']:<6} {dims:<16} {t['n_bytes'] / MB:>9.3f} "
                  f"{t['bits_per_weight']:>7.2f} {cols:>10} {outl:>9}")
    return 0


def cmd_perplexity(args) -> int:
    text = Path(args.textfile).read_text(encoding="utf-8")
    model = _load(args, n_ctx=args.ctx)
    start = time.perf_counter()
    base = None
    if args.kl_base:
        from .api import load

        base = load(args.kl_base, threads=args.threads, n_ctx=args.ctx, backend=args.backend, kv_cache=args.kv_cache)
    result = model.perplexity(text, ctx=args.ctx, max_tokens=args.tokens, progress=not args.no_progress,
                              base=base)
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["model"] = args.model
    result["text"] = args.textfile
    if args.kl_base:
        result["kl_base"] = args.kl_base
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"ppl {result['ppl']:.4f} over {result['tokens_scored']} scored tokens "
          f"(first {result['tokens']} tokens, windows of {result['ctx']}, no BOS) in {result['seconds']} s")
    if base is not None:
        print(f"against {args.kl_base} (ppl {result['ppl_base']:.4f}, ratio {result['ppl'] / result['ppl_base']:.4f}): "
              f"KL divergence mean {result['kl_mean']:.5f}, 99th percentile {result['kl_p99']:.5f}; "
              f"same top token {100 * result['top1_agreement']:.2f}%")
    return 0


# The CPU flags that decide which kernel table runs (cpu/kernels.cpp) or that peers use.
KERNEL_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "amx_int8")


def resident_bytes():
    """This process's resident memory (VmRSS), or None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpu_info() -> tuple:
    """(the CPU's model name, those of its flags in KERNEL_FLAGS)."""
    import platform

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor() or platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return name, [f for f in KERNEL_FLAGS if f in flags]


def cpu_description() -> str:
    """The CPU's model name and its kernel-relevant flags, e.g. "Intel(R) Xeon(R) (avx2, fma, ...)"."""
    name, flags = cpu_info()
    return f"{name} ({', '.join(flags) or 'no AVX2'})"


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


def gemv_rows(model, reps: int) -> list:
    """Per matrix role and dtype: the time of a matmul at batch 1 over that role's matrices of every
    layer in turn (so they stream from memory as in decode), as GB/s of weight bytes read and as
    weights per second per thread (the kernels' compute rate)."""
    from . import _internal

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
    times = _internal.time_gemv(model.path, [[t["name"] for t in ts] for ts in groups.values()], model.threads, 1, reps)
    for ((role, dtype, dims), ts), passes in zip(groups.items(), times):
        seconds = summary(passes)["median"]
        nbytes = sum(t["n_bytes"] for t in ts)
        rows.append({"matrix": role, "dtype": dtype, "M": dims[0], "K": dims[1], "count": len(ts),
                     "bytes": nbytes, "us_per_matrix": 1e6 * seconds / len(ts), "GBps": nbytes / seconds / 1e9,
                     "Gweights_per_s_per_thread": len(ts) * dims[0] * dims[1] / seconds / 1e9 / model.threads})
    return rows


def cmd_bench(args) -> int:
    """Prompt processing (one batched pass over -p tokens) and decode (-n tokens, one at a time,
    after a 32-token prompt), each repeated -r times; medians and spreads, weight bytes read per
    token, achieved GB/s, and the machine's read bandwidth measured by a multi-threaded read in the
    same run (the best of passes before and after the timed runs). --gemv times each matrix shape."""
    from . import _core, _internal

    resident_before = resident_bytes()
    start = time.perf_counter()
    model = _load(args, n_ctx=max(args.p, 32 + args.n))
    load_s = time.perf_counter() - start
    resident_after = resident_bytes()
    if args.gemv and model.backend == "cuda":
        raise ValueError("--gemv times the CPU kernels: expected --backend cpu, found the CUDA "
                         "backend (GPU kernels: tools/bench_cuda_gemv.py)")
    threads = model.threads
    load_before = os.getloadavg()[0]
    bandwidth = _internal.read_bandwidth(threads, READ_BUFFER_BYTES, 3)
    bytes_per_token = weight_bytes_per_token(model.tensors())
    result = {"model": args.model, "backend": model.backend, "backend_note": model.backend_note,
              "cuda_device": _internal.cuda_device() if model.backend == "cuda" else None,
              "cpu": cpu_info()[0], "cpu_flags": cpu_info()[1], "threads": threads,
              "kernels": _internal.best_kernels(), "kernels_available": _internal.available_kernels(),
              "command": " ".join(["mixrt", *map(str, args.argv)]),
              "file_bytes": Path(args.model).stat().st_size, "weight_bytes_per_token": bytes_per_token,
              "tensor_bytes": sum(t["n_bytes"] for t in model.tensors()), "load_s": load_s,
              "resident_bytes_added_by_load": (resident_after - resident_before
                                               if resident_before is not None and resident_after is not None else None)}
    if args.gemv:
        result["gemv"] = gemv_rows(model, args.repeats)
    else:
        rng = np.random.default_rng(0)
        ids = [int(t) for t in rng.integers(0, model.n_vocab, size=max(args.p, 32))]
        greedy = model.sampler(temperature=0, repeat_penalty=1.0)
        prompt_rates, decode_rates = [], []
        with model.context() as ctx:
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
                        ctx.feed([greedy.sample(ctx)], False)
                    decode_rates.append(args.n / (time.perf_counter() - start))
        prompt, decode = summary(prompt_rates), summary(decode_rates)
        result.update({"prompt_tokens": args.p, "decode_tokens": args.n, "repeats": args.repeats,
                       "prompt_tokens_per_s": prompt["median"] if prompt else None,
                       "decode_tokens_per_s": decode["median"] if decode else None,
                       "prompt": prompt, "decode": decode,
                       "decode_GBps": bytes_per_token * decode["median"] / 1e9 if decode else None})
    bandwidth += _internal.read_bandwidth(threads, READ_BUFFER_BYTES, 3)
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
        print(f"  CPU flags: {' '.join(result['cpu_flags']) or 'none of ' + ' '.join(KERNEL_FLAGS)}; kernel tables "
              f"available: {', '.join(result['kernels_available'])} (MIXRT_CPU_KERNELS picks one)")
    added = result["resident_bytes_added_by_load"]
    print(f"  load: {load_s:.2f} s, resident memory +"
          + (f"{added / 1e6:.1f} MB = {added / result['tensor_bytes']:.2f}x" if added is not None else "? (no /proc)")
          + f" the tensor bytes of the file ({result['tensor_bytes'] / 1e6:.1f} MB)")
    print(f"  weights read per token: {bytes_per_token / 1e6:.1f} MB (file {result['file_bytes'] / 1e6:.1f} MB); "
          f"machine read bandwidth {bw:.1f} GB/s (best of {len(bandwidth)} passes of "
          f"{READ_BUFFER_BYTES >> 20} MiB)")
    if args.gemv:
        print(f"  {'matrix':<20} {'dtype':<5} {'M x K':>13} {'us/matrix':>10} {'GB/s':>7} {'of read bw':>10} "
              f"{'G weights/s/thread':>18}")
        for r in result["gemv"]:
            print(f"  {r['matrix']:<20} {r['dtype']:<5} {r['M']:>6} x {r['K']:<6} {r['us_per_matrix']:>10.1f} "
                  f"{r['GBps']:>7.1f} {r['GBps'] / bw:>9.0%} {r['Gweights_per_s_per_thread']:>18.1f}")
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


def _at_least(minimum: int, *also: int):
    """An argparse type: an integer >= minimum (or one of also)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None
        if value < minimum and value not in also:
            extra = "".join(f" or {a}" for a in also)
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}{extra}, found {value}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="mixrt", description="Run Llama-family models stored as .mixrt files "
                                "(make them with mixrt-convert).")
    p.add_argument("--version", action="version", version=f"mixrt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="what to do (COMMAND --help for its options)")

    def command(name, help_text):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("--version", action="version", version=f"mixrt {__version__}")
        sp.add_argument("model", help="a .mixrt file (see mixrt-convert)")
        sp.add_argument("-t", "--threads", type=_at_least(1), default=None,
                        help="CPU threads (default: all cores)")
        return sp

    def backend(sp):
        from .api import ACTIVATIONS

        sp.add_argument("--backend", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the model runs (default auto: CUDA when built and a GPU is present, "
                             "else the CPU)")
        sp.add_argument("--kv-cache", choices=("f16", "f32"), default="f16",
                        help="how the KV cache stores keys and values (default f16: half the memory; "
                             "f32 runs on the CPU only)")
        sp.add_argument("--activations", choices=ACTIVATIONS, default=None,
                        help="bfpW: round every matmul input to block floating point of W bits first "
                             "(16 values per shared exponent, as arXiv 2310.05079's W6A6); token4: the "
                             "inputs of quik weights to 4 bits per token instead of 8 (QUIK's W4A4); "
                             "CPU only; default: the kernels' own rounding")

    def sampling(sp, n_default):
        from .api import SAMPLER_DEFAULTS as d

        sp.add_argument("-n", type=_at_least(0, -1), default=n_default,
                        help=f"tokens to generate at most; -1: until the end-of-sequence token or the end "
                             f"of the context (default {n_default})")
        sp.add_argument("-c", "--ctx", type=_at_least(1), default=None,
                        help="context size in tokens: prompt plus generated text (default: the model's, at "
                             "most 4096; a KV cache larger than the free memory is refused)")
        sp.add_argument("--temp", type=float, default=d["temperature"],
                        help="temperature; 0 = greedy (default %(default)s)")
        sp.add_argument("--top-k", type=int, default=d["top_k"], help="sample among the k most likely tokens; "
                        "0 = off (default %(default)s)")
        sp.add_argument("--top-p", type=float, default=d["top_p"], help="sample within this probability mass "
                        "(nucleus); 1 = off (default %(default)s)")
        sp.add_argument("--min-p", type=float, default=d["min_p"], help="drop tokens below this fraction of the "
                        "most likely one's probability; 0 = off (default %(default)s)")
        sp.add_argument("--repeat-penalty", type=float, default=d["repeat_penalty"],
                        help=f"make the last {d['repeat_last_n']} tokens less likely by this factor; 1 = off "
                             "(default %(default)s)")
        sp.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one)")
        sp.add_argument("--stop", action="append", default=None,
                        help="stop before this string (repeatable)")

    r = command("run", "stream a continuation of a prompt to stdout")
    backend(r)
    r.add_argument("prompt", nargs="?", help='the prompt; "-" reads it from standard input')
    r.add_argument("-f", "--file", help="read the prompt from this file")
    sampling(r, 128)
    r.add_argument("--special", action="store_true",
                   help="recognise control tokens (such as <|im_start|>) written in the prompt; by default "
                        "they are plain text")
    r.add_argument("-v", "--verbose", action="store_true",
                   help="print prompt and generation speed (tokens/s) and the finish reason to stderr")
    r.set_defaults(func=cmd_run)

    c = command("chat", f"chat with an instruct model in the terminal ({CHAT_HELP})")
    backend(c)
    sampling(c, -1)
    c.add_argument("--system", help="a system message that starts the conversation")
    c.set_defaults(func=cmd_chat)

    i = command("info", "what a file holds: model, recipe, bits, tokenizer, chat template")
    i.set_defaults(backend="cpu", kv_cache="f16", activations=None)
    i.add_argument("--tensors", action="store_true", help="also list every tensor (dtype, dims, MB, bits)")
    i.add_argument("--metadata", action="store_true", help="also list every scalar metadata key")
    i.add_argument("--json", action="store_true", help="everything as one JSON object")
    i.set_defaults(func=cmd_info)

    pp = command("perplexity", "perplexity of a text file (windows of --ctx tokens, no BOS)")
    backend(pp)
    pp.add_argument("textfile", help="a UTF-8 text file")
    pp.add_argument("-c", "--ctx", type=_at_least(2), default=512, help="window size in tokens (default 512)")
    pp.add_argument("--tokens", type=_at_least(2), default=None, help="score only the first N tokens")
    pp.add_argument("--kl-base", metavar="BASE", help="also compare the next-token distributions with those of "
                    "BASE (e.g. the f16 file): mean and 99th percentile of KL(BASE || MODEL), same top token %%")
    pp.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    pp.add_argument("--json", action="store_true", help="the result as one JSON object")
    pp.set_defaults(func=cmd_perplexity)

    b = command("bench", "prompt and decode tokens/s (median of repeats), GB/s against measured bandwidth")
    backend(b)
    b.add_argument("-p", type=_at_least(0), default=512, help="prompt tokens, processed in one pass (0 skips; "
                   "default 512)")
    b.add_argument("-n", type=_at_least(0), default=128,
                   help="tokens decoded one at a time after a 32-token prompt (0 skips; default 128)")
    b.add_argument("-r", "--repeats", type=_at_least(1), default=5, help="repeats (default 5)")
    b.add_argument("--gemv", action="store_true",
                   help="time a batch-1 matmul per matrix shape and dtype (GB/s) instead of the model")
    b.add_argument("--json", action="store_true", help="the result as one JSON object")
    b.set_defaults(func=cmd_bench)

    sv = command("serve", "an OpenAI-compatible HTTP server with continuous batching (needs mixrt[server])")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                    "0.0.0.0 for every interface)")
    sv.add_argument("--port", type=_at_least(1), default=8080, help="port (default 8080)")
    sv.add_argument("--parallel", type=_at_least(1), default=4,
                    help="requests decoded together, each with its own KV cache of --ctx tokens (default 4)")
    sv.add_argument("-c", "--ctx", type=_at_least(1), default=None,
                    help="tokens per request: prompt plus completion (default: the model's, at most 4096)")
    sv.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: none)")
    sv.add_argument("--queue", type=_at_least(1), default=64,
                    help="requests waiting for a free slot before new ones get 429 (default 64)")
    sv.add_argument("--timeout", type=float, default=600.0, help="seconds a request may take (default 600)")
    sv.set_defaults(func=cmd_serve)
    return p


def cmd_serve(args) -> int:
    """Serves the model until SIGINT/SIGTERM; running requests get a few seconds to finish."""
    try:
        import uvicorn
    except ImportError:
        raise ValueError("mixrt serve needs its extra: pip install 'mixrt[server]' (FastAPI and uvicorn)") from None
    from .serve import build_app

    app, server = build_app(args.model, parallel=args.parallel, n_ctx=args.ctx, api_key=args.api_key,
                            max_queue=args.queue, timeout=args.timeout, threads=args.threads)
    print(f"mixrt serve: {Path(args.model).name} on {server.model.backend}, {args.parallel} parallel requests of "
          f"{server.scheduler.n_ctx} tokens, http://{args.host}:{args.port}/v1", file=sys.stderr)
    # On SIGTERM/SIGINT uvicorn stops accepting, the app's shutdown lets running requests finish
    # (app.DRAIN_SECONDS), and the process then ends by that signal, as servers do.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=10)
    return 0


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (e.g. `| head`): stop quietly, as command-line tools do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    from .api import MixrtError

    try:
        status = args.func(args)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (MixrtError, ValueError, OSError) as e:
        print(f"mixrt: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
