# compare_llama_cpp.py: CPU speed of mixrt against llama.cpp (through the llama-cpp-python package,
# `pip install .[compare]`) on the same model: llama.cpp at F16, Q8_0 and Q4_0, mixrt at f16, q8,
# q4 and the mix recipe. Same threads, same prompt tokens, same token counts, runs interleaved
# (every repeat visits every model in turn); prints one table with prompt and decode tokens/s
# (medians), file sizes and ratios, and the machine's load average before and after.
#
# The llama.cpp files are made from the source GGUF honestly: its tensors are decoded to float
# (gguf package) and written as an F16 GGUF with the same metadata; Q8_0 and Q4_0 come from that
# F16 file through llama.cpp's own quantizer (llama_model_quantize). The mixrt files are passed in
# (made with mixrt-convert from the same source GGUF).
#
#   python tools/compare_llama_cpp.py SOURCE.gguf --workdir DIR --mixrt f16=A.mixrt q8=B.mixrt \
#       q4=C.mixrt mix=D.mixrt -t 2 -p 512 -n 128 -r 5
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

PROMPT_TEXT = ("The history of the city begins with a small settlement on the river, where traders from the "
               "north and the south met to exchange grain, salt and cloth. Over the centuries it grew into ")


def write_f16_gguf(src: Path, dst: Path) -> None:
    """Every tensor of src decoded to float and stored as F16 (1-dim tensors stay F32), with src's
    metadata; general.file_type set to MOSTLY_F16."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(dst), arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        values = values.reshape([int(d) for d in reversed(t.shape.tolist())])
        writer.add_tensor(t.name, values.astype(np.float32 if values.ndim == 1 else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_cpp_quantize(src: Path, dst: Path, ftype: int, threads: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise RuntimeError(f"llama_model_quantize failed for {dst}")


def prepare_llama_cpp_files(source: Path, workdir: Path, threads: int) -> dict:
    import llama_cpp

    workdir.mkdir(parents=True, exist_ok=True)
    f16 = workdir / "llama-cpp-F16.gguf"
    if not f16.exists():
        write_f16_gguf(source, f16)
    files = {"F16": f16}
    for name, ftype in (("Q8_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0), ("Q4_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0)):
        path = workdir / f"llama-cpp-{name}.gguf"
        if not path.exists():
            llama_cpp_quantize(f16, path, ftype, threads)
        files[name] = path
    return files


class LlamaCppRunner:
    def __init__(self, path: Path, threads: int, n_ctx: int):
        import llama_cpp

        self.llm = llama_cpp.Llama(str(path), n_threads=threads, n_threads_batch=threads, n_ctx=n_ctx, n_batch=512,
                                   n_ubatch=512, logits_all=False, verbose=False)

    def prompt(self, ids: list) -> float:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(ids)
        return time.perf_counter() - start

    def decode(self, ids: list, n: int) -> float:
        self.llm.reset()
        self.llm.eval(ids)
        start = time.perf_counter()
        for _ in range(n):
            self.llm.eval([self.llm.sample(temp=0.0)])  # greedy
        return time.perf_counter() - start


class MixrtRunner:
    def __init__(self, path: Path, threads: int, n_ctx: int):
        import mixrt

        self.model = mixrt.load(path, threads=threads, n_ctx=n_ctx, backend="cpu")
        self.greedy = self.model.sampler(temperature=0, repeat_penalty=1.0)

    def prompt(self, ids: list) -> float:
        with self.model.context() as ctx:  # reset; the same context every time (the model's pool)
            start = time.perf_counter()
            ctx.feed(ids, False)
            return time.perf_counter() - start

    def decode(self, ids: list, n: int) -> float:
        with self.model.context() as ctx:
            ctx.feed(ids, False)
            start = time.perf_counter()
            for _ in range(n):
                ctx.feed([self.greedy.sample(ctx)], False)
            return time.perf_counter() - start


def prompt_ids(mixrt_file: Path, count: int) -> list:
    """count token ids: PROMPT_TEXT (repeated as needed) through the model's own tokenizer."""
    import mixrt

    model = mixrt.load(mixrt_file, backend="cpu")
    ids = []
    while len(ids) < count:
        ids += model.tokenize(PROMPT_TEXT, add_bos=False)
    return ids[:count]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("source", type=Path, help="the GGUF both sides were made from")
    ap.add_argument("--workdir", type=Path, required=True, help="where the llama.cpp GGUFs are written")
    ap.add_argument("--mixrt", nargs="+", required=True, metavar="NAME=FILE", help="mixrt files, e.g. mix=X.mixrt")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-p", type=int, default=512, help="prompt tokens (one batch)")
    ap.add_argument("-n", type=int, default=128, help="decoded tokens after a 32-token prompt")
    ap.add_argument("-r", "--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    llama_files = prepare_llama_cpp_files(args.source, args.workdir, args.threads)
    prep_s = time.perf_counter() - t0
    mixrt_files = dict(item.split("=", 1) for item in args.mixrt)
    n_ctx = max(args.p, 32 + args.n) + 8
    runners = {f"llama.cpp {k}": (LlamaCppRunner(v, args.threads, n_ctx), Path(v)) for k, v in llama_files.items()}
    runners.update({f"mixrt {k}": (MixrtRunner(Path(v), args.threads, n_ctx), Path(v)) for k, v in mixrt_files.items()})
    ids = prompt_ids(Path(next(iter(mixrt_files.values()))), max(args.p, 32))

    load_before = os.getloadavg()[0]
    prompt_rates = {k: [] for k in runners}
    decode_rates = {k: [] for k in runners}
    for _ in range(args.repeats):  # interleaved: each repeat runs every model once
        for name, (runner, _) in runners.items():
            if args.p > 0:
                prompt_rates[name].append(args.p / runner.prompt(ids[: args.p]))
            decode_rates[name].append(args.n / runner.decode(ids[:32], args.n))
            print(f"  {name}: prompt {prompt_rates[name][-1] if args.p > 0 else 0:.1f} tok/s, "
                  f"decode {decode_rates[name][-1]:.1f} tok/s", file=sys.stderr, flush=True)
            time.sleep(0.05)
    load_after = os.getloadavg()[0]

    ref = "llama.cpp Q4_0"
    rows = []
    for name, (_, path) in runners.items():
        rows.append({"runtime": name, "file_MB": path.stat().st_size / 1e6,
                     "prompt_tokens_per_s": statistics.median(prompt_rates[name]) if args.p > 0 else None,
                     "decode_tokens_per_s": statistics.median(decode_rates[name]),
                     "decode_min": min(decode_rates[name]), "decode_max": max(decode_rates[name])})
    by = {r["runtime"]: r for r in rows}
    print(f"CPU: {cpu_description()}; mixrt kernels: {mixrt_kernels()}; {args.threads} threads; "
          f"prompt {args.p} tokens, decode {args.n} tokens after 32; "
          f"median of {args.repeats} interleaved repeats; load average {load_before:.2f} -> {load_after:.2f}")
    print("command: python " + " ".join([sys.argv[0], *map(str, argv if argv is not None else sys.argv[1:])]))
    print(f"llama.cpp {llama_cpp_version()} system info: {llama_cpp_system_info()}")
    print(f"llama.cpp files made in {prep_s:.0f} s (F16 GGUF written with the gguf package, then llama_model_quantize)")
    print(f"\n| runtime | file MB | prompt tok/s | decode tok/s (min-max) | decode vs {ref} | decode vs mixrt f16 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        vs_ref = r["decode_tokens_per_s"] / by[ref]["decode_tokens_per_s"]
        vs_f16 = (r["decode_tokens_per_s"] / by["mixrt f16"]["decode_tokens_per_s"]) if "mixrt f16" in by else float("nan")
        prompt = f"{r['prompt_tokens_per_s']:.1f}" if r["prompt_tokens_per_s"] else "-"
        print(f"| {r['runtime']} | {r['file_MB']:.1f} | {prompt} | {r['decode_tokens_per_s']:.1f} "
              f"({r['decode_min']:.1f}-{r['decode_max']:.1f}) | {vs_ref:.2f}x | {vs_f16:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "threads": args.threads, "p": args.p, "n": args.n,
                                         "repeats": args.repeats, "load_average": [load_before, load_after]}))
    return 0


def cpu_description() -> str:
    from mixrt.cli import cpu_description as describe

    return describe()


def mixrt_kernels() -> str:
    from mixrt import _internal

    return _internal.best_kernels()


def llama_cpp_version() -> str:
    import llama_cpp

    return llama_cpp.__version__


def llama_cpp_system_info() -> str:
    """What llama.cpp was built with and uses on this CPU (its llama_print_system_info)."""
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode().strip()


if __name__ == "__main__":
    sys.exit(main())
