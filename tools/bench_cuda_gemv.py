# bench_cuda_gemv.py: GEMV benchmark of the CUDA weight kernels (cuda/device_weight.h) on the
# Llama-2-7B shapes: mix at about 2.9 bits (overlapped and synchronous scale schedules), q4, q8 and
# f16, and PyTorch's fp16 F.linear on the same device. Each row: median time of >= 100 launches
# (CUDA events per launch, after a warm-up, all launches queued behind a device-side sleep so the
# host never starves the GPU), inputs rotated through several copies of the weight and x totalling
# more than 3x the L2 cache, GB/s of the bytes the kernel actually reads (every stored part on the
# device, x) and writes (y), and that as a fraction of the device-to-device copy bandwidth measured
# in the same run (bytes read + written, like the kernel's). Needs a CUDA build and PyTorch.
#   python tools/bench_cuda_gemv.py [--n 1] [--repeat 200] [--shapes 4096x4096,...]
from __future__ import annotations

import argparse
import shlex
import statistics
import sys

import numpy as np
import torch
import torch.nn.functional as F

from mixrt import _core, _internal
from mixrt.convert import DEFAULT_BITS, DEFAULT_OUTLIER_FRAC
from mixrt.devtools.random_model import random_weight
from mixrt.quant.plan import plan_mix

SHAPES = {"4096x4096": (4096, 4096), "11008x4096": (11008, 4096), "4096x11008": (4096, 11008),
          "32000x4096": (32000, 4096)}
STD = 0.02


def timed(launches, repeat: int) -> float:
    """Median seconds of one launch; launches is a list of callables (rotated)."""
    for f in launches[: max(3, len(launches))]:
        f()  # warm-up
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeat)]
    torch.cuda._sleep(50_000_000)  # ~25 ms: the queue below fills before the GPU reaches it
    for i, (start, stop) in enumerate(events):
        start.record()
        launches[i % len(launches)]()
        stop.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events) / 1e3


def copy_bandwidth(repeat: int) -> float:
    """Device-to-device copy of 1 GiB: (bytes read + bytes written) / median time."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    src.fill_(1)
    t = timed([lambda: dst.copy_(src)], max(20, repeat // 10))
    return 2 * src.numel() / t


def copies_for(bytes_per_copy: int, l2_bytes: int) -> int:
    return max(2, -(-3 * l2_bytes // bytes_per_copy))


def bench_mixrt(dtype, m, k, n, repeat, l2_bytes, schedules, rng):
    if dtype == "mix":
        plan = plan_mix([(m, k)], DEFAULT_BITS, DEFAULT_OUTLIER_FRAC)
        k4, per_row = plan.k4[0], plan.nnz[0] // m
    else:
        k4, per_row = 0, 0
    data = random_weight(rng, dtype, m, k, STD, k4, per_row)
    parts = [np.ascontiguousarray(data, np.float16)] if dtype == "f16" else data
    stored = sum(p.nbytes for p in parts)
    first = _internal.CudaWeight(dtype, parts, m, k)
    per_copy = first.device_bytes + 4 * n * (k + m)
    weights = [first] + [_internal.CudaWeight(dtype, parts, m, k) for _ in range(copies_for(per_copy, l2_bytes) - 1)]
    xs = [torch.randn(n, k, device="cuda") for _ in weights]
    ys = [torch.empty(n, m, device="cuda") for _ in weights]
    stream = torch.cuda.current_stream().cuda_stream
    rows = []
    for schedule in schedules:
        launches = [lambda w=w, x=x, y=y: w.matvec_ptr(x.data_ptr(), y.data_ptr(), n, stream, schedule)
                    for w, x, y in zip(weights, xs, ys)]
        t = timed(launches, repeat)
        label = f"mixrt {dtype}" + (f" ({schedule})" if dtype == "mix" else "")
        rows.append((label, 8 * stored / (m * k), t, per_copy))
    return rows


def bench_torch(m, k, n, repeat, l2_bytes):
    per_copy = 2 * (m * k + n * (k + m))
    count = copies_for(per_copy, l2_bytes)
    ws = [torch.randn(m, k, device="cuda", dtype=torch.float16) * STD for _ in range(count)]
    xs = [torch.randn(n, k, device="cuda", dtype=torch.float16) for _ in range(count)]
    launches = [lambda w=w, x=x: F.linear(x, w) for w, x in zip(ws, xs)]
    return ("torch F.linear fp16", 16.0, timed(launches, repeat), per_copy)


def main() -> None:
    parser = argparse.ArgumentParser(description="GEMV benchmark of the CUDA weight kernels on Llama-2-7B shapes.")
    parser.add_argument("--n", type=int, default=1, help="input vectors per launch (1..8)")
    parser.add_argument("--repeat", type=int, default=200, help="timed launches per row (>= 100)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated from " + ",".join(SHAPES))
    parser.add_argument("--dtypes", default="mix,q4,q8,f16,torch")
    args = parser.parse_args()
    if _core.cuda_unavailable_reason():
        sys.exit(f"bench_cuda_gemv: {_core.cuda_unavailable_reason()}")
    props = torch.cuda.get_device_properties(0)
    l2_bytes = props.L2_cache_size
    print(f"machine: {props.name}, {props.multi_processor_count} SMs, L2 {l2_bytes / 1e6:.0f} MB, "
          f"torch {torch.__version__}")
    print(f"command: {shlex.join([sys.executable] + sys.argv)}")
    copy = copy_bandwidth(args.repeat)
    print(f"device-to-device copy: {copy / 1e9:.0f} GB/s (read + written)")
    print(f"n = {args.n}, median of {args.repeat} launches, weights rotated over > 3x L2")
    rng = np.random.default_rng(0)
    dtypes = args.dtypes.split(",")
    header = f"{'shape':>11} {'kernel':<26} {'bits':>6} {'us':>8} {'GB/s':>7} {'of copy':>8}"
    print(header)
    for shape in args.shapes.split(","):
        m, k = SHAPES[shape]
        rows = []
        for dtype in dtypes:
            if dtype == "torch":
                rows.append(bench_torch(m, k, args.n, args.repeat, l2_bytes))
            else:
                schedules = ["overlapped", "synchronous"] if dtype == "mix" else ["overlapped"]
                rows += bench_mixrt(dtype, m, k, args.n, args.repeat, l2_bytes, schedules, rng)
            torch.cuda.empty_cache()
        for label, bits, t, nbytes in rows:
            print(f"{shape:>11} {label:<26} {bits:6.2f} {t * 1e6:8.2f} {nbytes / t / 1e9:7.0f} "
                  f"{nbytes / t / copy:8.1%}", flush=True)


if __name__ == "__main__":
    main()
