# bench_batched_decode.py: aggregate decode speed of batched decoding (mixrt_context_decode) at
# several numbers of concurrent streams, against one stream, on the CPU: per count S, S prompts of
# --prompt tokens are prefilled in one batch (the time to the first token of every stream), then
# --steps decode steps advance all S streams by one token each in one pass over the weights.
# Prints the machine, the command, tokens/s (aggregate and per stream), the speedup over one
# stream, and the weight bytes read per second against the machine's read bandwidth measured in
# the same run (one pass over the weights serves all S streams).
#   python tools/bench_batched_decode.py MODEL.mixrt [--streams 1 2 4 8] [--steps 64] [-t 2]
import argparse
import json
import sys
import time

import numpy as np


def run(ctx, streams: int, prompt: int, steps: int, vocab: int, rng) -> dict:
    ctx.reset()
    prompts = [rng.integers(0, vocab, prompt).tolist() for _ in range(streams)]
    batch = [(s, t, i, int(i == prompt - 1)) for s in range(streams) for i, t in enumerate(prompts[s])]
    start = time.perf_counter()
    ctx.decode(np.asarray(batch, np.int32))
    first = time.perf_counter() - start
    last = np.argmax(ctx.logits(), axis=1)
    start = time.perf_counter()
    for step in range(steps):
        ctx.decode(np.asarray([(s, int(last[s]), prompt + step, 1) for s in range(streams)], np.int32))
        last = np.argmax(ctx.logits(), axis=1)
    seconds = time.perf_counter() - start
    return {"streams": streams, "time_to_first_token_s": first, "decode_s": seconds,
            "aggregate_tokens_per_s": streams * steps / seconds, "per_stream_tokens_per_s": steps / seconds}


def main() -> int:
    import mixrt
    from mixrt import _core, _internal
    from mixrt.cli import READ_BUFFER_BYTES, cpu_description, weight_bytes_per_token

    parser = argparse.ArgumentParser(description="Aggregate decode tokens/s of batched decoding at several "
                                                 "numbers of concurrent streams (CPU)")
    parser.add_argument("model")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens per stream (32)")
    parser.add_argument("--steps", type=int, default=64, help="decode steps (64)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per stream count; the median is kept (3)")
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model = mixrt.load(args.model, threads=args.threads, backend="cpu")
    ctx = _core.Context(model._model, args.prompt + args.steps, args.threads, "f16", "", max(args.streams))
    bytes_per_pass = weight_bytes_per_token(model.tensors())
    bandwidth = _internal.read_bandwidth(args.threads, READ_BUFFER_BYTES, 3)
    rng = np.random.default_rng(0)
    rows = []
    for streams in args.streams:
        runs = sorted((run(ctx, streams, args.prompt, args.steps, model.n_vocab, rng) for _ in range(args.repeats)),
                      key=lambda r: r["aggregate_tokens_per_s"])
        rows.append(runs[len(runs) // 2])
    bandwidth += _internal.read_bandwidth(args.threads, READ_BUFFER_BYTES, 3)
    read_gbps = max(bandwidth) / 1e9
    single = next((r["aggregate_tokens_per_s"] for r in rows if r["streams"] == 1), None)
    for r in rows:
        r["speedup_over_one_stream"] = r["aggregate_tokens_per_s"] / single if single else None
        r["weights_GBps"] = bytes_per_pass * r["per_stream_tokens_per_s"] / 1e9
        r["fraction_of_read_bandwidth"] = r["weights_GBps"] / read_gbps
    header = {"machine": cpu_description(), "threads": args.threads, "kernels": _internal.best_kernels(),
              "command": " ".join(["python", *sys.argv]), "model": args.model,
              "weight_bytes_per_pass": bytes_per_pass, "read_bandwidth_GBps": read_gbps}
    if args.json:
        print(json.dumps({**header, "rows": rows}))
        return 0
    for key, value in header.items():
        print(f"{key}: {value}")
    print("\n| streams | aggregate tok/s | per stream tok/s | x one stream | time to first token ms | weights GB/s "
          "| of read bandwidth |\n|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        speedup = f"{r['speedup_over_one_stream']:.2f}" if r["speedup_over_one_stream"] else "-"
        print(f"| {r['streams']} | {r['aggregate_tokens_per_s']:.1f} | {r['per_stream_tokens_per_s']:.1f} | "
              f"{speedup} | {1000 * r['time_to_first_token_s']:.0f} | {r['weights_GBps']:.2f} | "
              f"{100 * r['fraction_of_read_bandwidth']:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
