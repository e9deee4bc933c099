# ablate_outlier_inputs.py: would QUIK's fp16 outlier columns (arXiv 2310.09259) pay on the q4
# weights' inputs? The q4 kernels round every matmul input to 8 bits per group of 32 columns
# (cpu/quantized_input.h); this simulates that rounding in a float32 numpy forward pass (the
# calibration decoder, quant/calibration.py) over a file whose weights are decoded to f32
# (tools/quant_table.py's :a16), with and without the columns of largest calibration |x| kept
# exact, and prints the perplexity of each beside the runtime's own A8 and A16 figures.
#   python tools/ablate_outlier_inputs.py q4-a16.mixrt q4.mixrt --calib CALIB.txt --text EVAL.txt
# Measured (SmolLM2-135M from its Q4_1 GGUF, quant_table.py's q4 and q4:a16 files; first 16384
# tokens of the wiki eval half, windows of 512; exact columns from 8192 tokens of the calibration
# half; 2-core Xeon, --tokens 16384): runtime A16 28.1420, runtime A8 28.2744 (+0.47%); simulated
# A16 28.1421, A8 28.2546 (+0.40%), A8 with 6.25% of the input columns exact 28.2012 (+0.21%). The
# outlier columns win back about half of the 8-bit rounding's 0.4-0.5%, while quik's own 6.25% fp16
# columns cost 6% of its prefill speed (1457 against 1547 tok/s without them, mixrt bench -p 512,
# same machine): not worth building for q4 or mix on the CPU (README, QUIK section).
import argparse
import math

import numpy as np

GROUP = 32


def round_groups(x: np.ndarray, exact: np.ndarray | None) -> np.ndarray:
    """x [..., K] rounded as the q4/q8 kernels round their input: per group of 32 columns,
    d = max|x| / 127, x^ = d round(x / d); the columns in `exact` (bool [K]) keep their value and
    take no part in their group's scale."""
    rounded_part = x if exact is None else np.where(exact, 0.0, x)
    groups = rounded_part.reshape(*x.shape[:-1], -1, GROUP)
    d = np.abs(groups).max(axis=-1, keepdims=True) / 127.0
    q = np.where(d > 0, np.rint(groups / np.where(d > 0, d, 1.0)), 0.0) * d
    out = q.reshape(x.shape).astype(np.float32)
    return out if exact is None else np.where(exact, x, out)


def perplexity(meta, tensors, windows, mode, exact_cols, head_rows=128) -> float:
    from mixrt.quant.calibration import LayerStack, _rms_norm, layer_biases

    def load(name):
        return np.asarray(tensors[name].array(), np.float32)

    def inputs(x, layer, site):
        if mode == "a16":
            return x
        return round_groups(x, exact_cols.get((layer, site)) if mode == "a8-cols" else None)

    stack = LayerStack(meta, load("token_embd.weight"), windows)
    for layer in range(int(meta["llama.n_layers"])):
        p = f"blk.{layer}."
        b = layer_biases(meta, load, layer)
        xn = inputs(stack.norm(load(p + "attn_norm.weight")), layer, 0)
        a = stack.attention(xn, load(p + "attn_q.weight"), load(p + "attn_k.weight"), load(p + "attn_v.weight"),
                            b["attn_q"], b["attn_k"], b["attn_v"])
        stack.add(inputs(a, layer, 1) @ load(p + "attn_output.weight").T)
        xn = inputs(stack.norm(load(p + "ffn_norm.weight")), layer, 2)
        act = stack.swiglu(xn, load(p + "ffn_gate.weight"), load(p + "ffn_up.weight"))
        stack.add(inputs(act, layer, 3) @ load(p + "ffn_down.weight").T)
    head = load("output.weight") if "output.weight" in tensors else load("token_embd.weight")
    xn = _rms_norm(stack.x, load("output_norm.weight"), float(meta["llama.rms_norm_eps"]))
    if mode != "a16":  # the head is a quantized matmul too (q8), its input rounded the same way
        xn = round_groups(xn, None)
    nll, count = 0.0, 0
    for w, window in enumerate(windows):
        for r0 in range(0, len(window) - 1, head_rows):
            rows = xn[w, r0:min(r0 + head_rows, len(window) - 1)]
            logits = rows @ head.T
            logits -= logits.max(axis=-1, keepdims=True)
            log_z = np.log(np.exp(logits).sum(axis=-1, dtype=np.float64))
            targets = np.asarray(window[r0 + 1:r0 + 1 + len(rows)])
            nll += float((log_z - logits[np.arange(len(rows)), targets]).sum())
            count += len(rows)
    return math.exp(nll / count)


def main() -> None:
    import mixrt
    from mixrt.format import read_mixrt
    from mixrt.quant.calibration import calibration_windows, collect_hessians

    parser = argparse.ArgumentParser(description="Simulated perplexity of the q4 kernels' 8-bit input rounding, "
                                                 "with and without fp16 outlier input columns")
    parser.add_argument("decoded", help="the q4 file with its weights decoded to f32 (quant_table.py :a16)")
    parser.add_argument("runtime", help="the q4 file itself (for the runtime's A8 figure)")
    parser.add_argument("--calib", required=True, help="text whose max |x| per column picks the exact columns")
    parser.add_argument("--text", required=True, help="text to measure perplexity on")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--fraction", type=float, default=0.0625, help="share of columns kept exact (0.0625)")
    args = parser.parse_args()
    file = read_mixrt(args.decoded)
    model = mixrt.load(args.decoded, n_ctx=args.ctx)
    tokens = model.tokenize(open(args.text, encoding="utf-8").read(), add_bos=False)[:args.tokens]
    windows = [tokens[i:i + args.ctx] for i in range(0, args.tokens, args.ctx)]
    calib_tokens = model.tokenize(open(args.calib, encoding="utf-8").read(), add_bos=False)
    hessians = collect_hessians(args.decoded, windows=calibration_windows(calib_tokens, 8192, args.ctx),
                                ctx=args.ctx, progress=False)
    exact = {}
    for key, col_max in hessians.col_max.items():
        n = int(round(args.fraction * len(col_max)))
        mask = np.zeros(len(col_max), bool)
        mask[np.argsort(col_max)[::-1][:n]] = True
        exact[key] = mask
    print(f"{args.decoded}: first {args.tokens} tokens of {args.text}, windows of {args.ctx}; exact columns: "
          f"the {args.fraction} of each input with the largest calibration max|x| ({args.calib})")
    text = open(args.text, encoding="utf-8").read()
    for name, path in (("runtime A16 (decoded weights)", args.decoded), ("runtime A8 (q4 kernels)", args.runtime)):
        result = mixrt.load(path, n_ctx=args.ctx).perplexity(text, ctx=args.ctx, max_tokens=args.tokens)
        print(f"{name}: {result['ppl']:.4f}", flush=True)
    for mode in ("a16", "a8", "a8-cols"):
        print(f"simulated {mode}: {perplexity(file.metadata, file.tensors, windows, mode, exact):.4f}", flush=True)


if __name__ == "__main__":
    main()
