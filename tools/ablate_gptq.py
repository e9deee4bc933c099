# ablate_gptq.py: the alternatives that were measured against the steps of the calibrated quantizer
# (python/mixrt/quant/gptq.py, which keeps one path), still runnable: the quantizer rebuilt from
# gptq.py's steps with this file's own copies of the alternative branches, measured the project's
# way. Tested by tests/test_gptq.py (no options: gptq.py's result bit for bit; every variant's
# result is valid).
#
#   python tools/ablate_gptq.py [--layers 4 12 20 28] [--only "outliers rtn" ...]
#       relative Hessian-weighted output error tr(dW H dW^T) / tr(W H W^T) of every linear matrix
#       of the given SmolLM2 layers (Hessians from --tokens of the wikitext calibration half), at
#       the uniform --bits plan of those matrices, for the one path and each variant
#   python tools/ablate_gptq.py --convert OUT.mixrt --variant "sweep 4first" [--text EVAL.txt]
#       the calibrated mix conversion with one variant in gptq.quantize_mix_gptq's place, and its
#       perplexity on --text (the protocol of ../shared/docs/BENCHMARKS.md: 16384 tokens, windows
#       of 512)
#
# The variants and their figures. "now": the ratio of the mean relative error to the one path's
# (0.01822), and in how many of the 28 matrices the variant is worse / exactly the same, printed
# by `python tools/ablate_gptq.py` with its defaults (SmolLM2-135M layers 4, 12, 20 and 28, 4096
# tokens of the wikitext calibration half, their uniform 2.9-bit plan; 2-core Intel Xeon,
# 2026-12-05). "before": the project's history: (a) gptq.py's option comments (commit af16eba),
# (b) the prototype table of ../shared/docs/BENCHMARKS.md (perplexity at 2.5 code bits, 2-bit
# groups of 16). The first calibrated conversions (4096 tokens, issue 3's first closing note)
# moved the perplexity ratio between 1.88 and 2.2 with strip allocation, outlier selection,
# dampening and sequential calibration, without figures per option. Perplexity of the variants: not
# re-measured (--convert/--text does it).
#
#   variant             what it changes                                 before       now
#   damp 0.1            10x the Hessian dampening                       -            1.053 (28/0)
#   damp 0.001          a tenth of it                                   -            1.001 (18/0)
#   shrink 0.1          H shrunk 10% towards its diagonal               -            1.032 (28/0)
#   select hrange       4-bit columns by H_jj x range^2                 -            1.001 (19/0)
#   select range        4-bit columns by range (paper v1-v3)            -            1.062 (26/0)
#   order natural       no act order                                    -            1.038 (28/0)
#   order norm          parts by decreasing column RMS                  -            1.011 (19/0)
#   order hnorm         parts by decreasing H_jj x mean square          -            0.993 (10/0) *
#   order range         parts by decreasing max |w|                     -            1.014 (24/0)
#   sweep 4first        the 4-bit strips swept before the 2-bit part    -            1.182 (28/0)
#   clip2 1             no clipping search in the 2-bit groups          1.5 (a)      1.489 (28/0)
#                                                                       ppl 261 vs 120 with (b)
#   clip2 20            20 clipping candidates instead of 12            0.999 (a)    0.999 (4/0) *
#   clip4 1             no clipping search in the 4-bit groups          -            1.009 (28/0)
#   clip weight hdiag   clipping searches weighted by H_jj              -            1.012 (28/0)
#   clip weight none    clipping searches unweighted                    -            1.013 (28/0)
#   super static        2-bit super-scales from the original weights    -            1.000 (0/24) *
#   super headroom 1.25 2-bit super-scales 25% larger                   -            1.000 (15/0)
#   outliers greedy     the greedy choice on the weights after a sweep  -            0.997 (2/0) *
#   outliers gptq       the largest GPTQ losses of a first sweep        -            1.016 (27/0)
#   outliers rtn        the largest H_jj x round-to-nearest errors      -            1.083 (28/0)
#   outlier rounds 1    the greedy choice with one removal per group    -            1.003 (28/0)
#
# * not worse on this measure, yet not the one path: clip2 20 searches 5/3 as long for 0.1%;
# outliers greedy runs the sweep twice for 0.3%; super static differs in 4 matrices, by less than
# 0.1% of the mean; order hnorm is 0.7% better here and needs a perplexity run before it could
# replace act order.
#
# Two more alternatives were measured outside this tool, the same way (relative Hessian-weighted
# error of the one path at 17% 4-bit columns and 0.3% outliers; the 21 matrices of SmolLM2 layers
# 2, 15 and 28, Hessians of 8192 tokens of the wikitext calibration half; 2-core Intel Xeon,
# 2026-12-05), and not kept:
# * incoherence processing: the inputs of each matrix rotated by a block Hadamard transform with
#   random signs (W R, H -> R^T H R, blocks of 32 or 64 along K) before the one path: worse in all
#   21 matrices, by 0-18% (mean +8%): the rotation spreads the few large input columns that the
#   4-bit strips and the outliers otherwise catch.
# * least-squares refinement after the sweep: each row's 2-bit group scales (codes and zeros
#   fixed) and 4-bit scales/mins solved jointly for the lowest (w - w') H (w - w')^T, then
#   re-encoded: 1.1-2.2% lower error (mean 1.2%), within the noise of the perplexity protocol.
# * rows weighted by the Fisher diagonal of the layer's outputs (quant/fisher.py) where they
#   compete inside a matrix: the 4-bit columns chosen by kl_gains instead of column_gains and the
#   outliers by Fisher-weighted group losses. Whole conversion at 2.9 bits, wikitext calibration
#   half, the 16384-token protocol: wikitext eval ratio 1.728 (KL 0.629) vs 1.747 (0.637) without;
#   tiny Shakespeare 1.965 (0.785) vs 1.947 (0.796): within the protocol's noise, not kept.
# * the planner's gains from the Fisher diagonal of the *weights*, E_window[(sum_t g_t x_t^T)_rj^2]
#   (which keeps the correlation of one matrix's errors across the positions of a window), instead
#   of the output Fisher F_r x H_jj of kl_gains: wikitext calibration half, ratio and KL, wikitext
#   eval / tiny Shakespeare: 2.9 bits 1.762, 0.642 / 2.028, 0.818 (kl_gains: 1.734, 0.639 / 1.935,
#   0.786); 2.5 bits 2.805, 1.079 / 3.578, 1.400 (kl_gains: 2.886, 1.120 / 4.030, 1.481): better
#   where ~40 strips are placed, worse at the default budget; not kept. The mean of the two gains
#   (both estimate KL): 2.9 bits 1.735, 0.637 / 1.913, 0.769; 2.5 bits 2.821, 1.082 / 3.798,
#   1.440: at least as good as kl_gains at both budgets, measured once; the next candidate.
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixrt.quant import gptq
from mixrt.quant.calibration import DEFAULT_CALIB_TOKENS
from mixrt.quant.gptq import (_damped, _fit2, _fit4, _greedy_outliers, _groups, _inverse_cholesky,
                              _lazy_blocks, _quantize_group, _range_with_zero, _Result, _round2,
                              _round4, _rtn_errors, _super_scales, column_gains, mix_parts,
                              order_parts)
from mixrt.quant.layouts import GROUP, SUPER_GROUPS, MixParts, dequantize_mix, pack_mix
from mixrt.quant.rtn import SUPER_FLOOR, f16_up, strip_permutation

SHARED = Path(os.environ.get("MIXRT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SMOLLM2 = SHARED / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
WIKI = SHARED / "data" / "wikitext-2-raw"
KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class Variant:
    """Every choice the quantizer once had; the defaults are gptq.py's one path."""

    # Hessian: dampening relative to the mean of its diagonal, and shrinkage towards the diagonal,
    # (1 - shrink) H + shrink diag(H), against the noise of a small calibration set.
    damp: float = gptq.DAMP
    shrink: float = 0.0
    # The 4-bit columns: "gain" H_jj x sum_r (e2_rj^2 - e4_rj^2) (paper v4), "hrange"
    # H_jj x (max_r w_rj - min_r w_rj)^2, "range" max_r w_rj - min_r w_rj (paper v1-v3).
    select: str = "gain"
    # Column order inside each part: "act" decreasing H_jj, "natural" the original one, "norm"
    # decreasing RMS of the column, "hnorm" decreasing H_jj x mean square, "range" max |w|.
    order: str = "act"
    # "2first": the 2-bit part is swept first, so the 4-bit strips absorb its errors last;
    # "4first": the 4-bit strips first.
    sweep: str = "2first"
    # The lazy update block and the clipping searches (gptq.py's constants).
    block: int = gptq.BLOCK
    clip2: int = gptq.CLIP2
    clip2_min: float = gptq.CLIP2_MIN
    clip4: int = gptq.CLIP4
    clip4_min: float = gptq.CLIP4_MIN
    # Weights of the clipping searches: "hinv" 1 / [H^-1 Cholesky]_jj^2 (the exact GPTQ loss of
    # quantizing column j next), "hdiag" H_jj, "none".
    clip_weight: str = "hinv"
    # Super-scale of each block of 16 2-bit groups: "lazy" when the sweep reaches the block, from
    # the weights updated so far; "static" from the original weights. headroom scales it (room for
    # the growth of the later groups of the block under error feedback).
    super_mode: str = "lazy"
    super_headroom: float = 1.0
    # Outliers: "greedy0" the greedy choice on the original weights; "greedy" the same on the
    # weights as a first sweep (without outliers) reached them; "gptq" the n largest GPTQ losses
    # e_rj^2 of a first sweep; "rtn" the n largest H_jj x round-to-nearest 2-bit errors.
    outlier_select: str = "greedy0"
    outlier_rounds: int = gptq.OUTLIER_ROUNDS
    outlier_clip: int = gptq.OUTLIER_CLIP

    def __post_init__(self):
        for name, allowed in (("select", ("gain", "hrange", "range")),
                              ("order", ("act", "natural", "norm", "hnorm", "range")),
                              ("sweep", ("2first", "4first")),
                              ("clip_weight", ("hinv", "hdiag", "none")),
                              ("super_mode", ("lazy", "static")),
                              ("outlier_select", ("greedy0", "greedy", "gptq", "rtn"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {', '.join(allowed)}, found "
                                 f"{getattr(self, name)!r}")


# The measured alternatives, by name (options of Variant).
VARIANTS = {
    "damp 0.1": dict(damp=0.1),
    "damp 0.001": dict(damp=0.001),
    "shrink 0.1": dict(shrink=0.1),
    "select hrange": dict(select="hrange"),
    "select range": dict(select="range"),
    "order natural": dict(order="natural"),
    "order norm": dict(order="norm"),
    "order hnorm": dict(order="hnorm"),
    "order range": dict(order="range"),
    "sweep 4first": dict(sweep="4first"),
    "clip2 1": dict(clip2=1),
    "clip2 20": dict(clip2=20),
    "clip4 1": dict(clip4=1),
    "clip weight hdiag": dict(clip_weight="hdiag"),
    "clip weight none": dict(clip_weight="none"),
    "super static": dict(super_mode="static"),
    "super headroom 1.25": dict(super_headroom=1.25),
    "outliers greedy": dict(outlier_select="greedy"),
    "outliers gptq": dict(outlier_select="gptq"),
    "outliers rtn": dict(outlier_select="rtn"),
    "outlier rounds 1": dict(outlier_rounds=1),
}


# ---- the quantizer with its alternatives --------------------------------------------------------

def quantize_variant(w: np.ndarray, h: np.ndarray, k4: int, n_outliers: int,
                     **options) -> MixParts:
    """gptq.quantize_mix_gptq with the choices of Variant(**options) (no options: the same
    result, bit for bit)."""
    v = Variant(**options)
    w = np.asarray(w, np.float32)
    h = np.asarray(h, np.float64)
    k = w.shape[1]
    k2 = k - k4
    perm = permutation(w, h, k4, v.select, v.order)
    hd = _damped(shrunk(h, v.shrink), v.damp)
    order = perm if v.sweep == "2first" else np.concatenate([perm[k2:], perm[:k2]])
    u = _inverse_cholesky(hd[np.ix_(order, order)])
    col_weight = {"hinv": lambda: 1.0 / np.diagonal(u) ** 2,
                  "hdiag": lambda: np.diagonal(hd)[order],
                  "none": lambda: np.ones(k)}[v.clip_weight]()
    wp = w[:, perm]
    outlier = None
    if n_outliers:
        outlier = choose_outliers(wp, u, col_weight, k2, n_outliers,
                                  np.diagonal(hd)[perm[:k2]], v)
    return mix_parts(perm, sweep(wp, u, col_weight, k2, outlier, v)[0], outlier)


def permutation(w: np.ndarray, h: np.ndarray, k4: int, select: str, order: str) -> np.ndarray:
    """The mix permutation with the 4-bit columns chosen by `select` and each part in `order`."""
    col_range = (w.max(axis=0) - w.min(axis=0)).astype(np.float64)
    diag = np.diagonal(h)
    scores = {"gain": lambda: column_gains(w, h),
              "hrange": lambda: np.clip(diag, 0, None) * col_range ** 2,
              "range": lambda: col_range}[select]()
    perm = strip_permutation(scores, k4)
    if order == "natural":
        return perm
    square = (w.astype(np.float64) ** 2).mean(axis=0)
    key = {"act": diag, "norm": np.sqrt(square), "hnorm": diag * square,
           "range": np.abs(w).max(axis=0).astype(np.float64)}[order]
    return order_parts(perm, w.shape[1] - k4, key)


def shrunk(h: np.ndarray, shrink: float) -> np.ndarray:
    """(1 - shrink) H + shrink diag(H)."""
    if not shrink:
        return h
    out = h * (1.0 - shrink)
    np.fill_diagonal(out, np.diagonal(h))
    return out


def choose_outliers(wp, u, col_weight, k2, n_outliers, h_diag2, v: Variant) -> np.ndarray:
    """bool [M, K2]: the outliers of the 2-bit part of wp by v.outlier_select (h_diag2: the
    damped H_jj of the 2-bit columns, for "rtn")."""
    k4 = wp.shape[1] - k2
    if v.outlier_select in ("greedy0", "greedy"):
        weight2 = col_weight[:k2] if v.sweep == "2first" else col_weight[k4:]
        start = wp[:, :k2] if v.outlier_select == "greedy0" else \
            sweep(wp, u, col_weight, k2, None, v)[2][:, :k2]
        return _greedy_outliers(start, weight2, n_outliers, v.outlier_rounds, v.outlier_clip,
                                v.clip2_min)
    if v.outlier_select == "gptq":
        loss = sweep(wp, u, col_weight, k2, None, v)[1][:, :k2]
    else:
        loss = _rtn_errors(wp[:, :k2], 2) * h_diag2[None, :]
    flat = np.argpartition(loss.ravel(), loss.size - n_outliers)[loss.size - n_outliers:]
    outlier = np.zeros(loss.shape, bool)
    outlier.ravel()[flat] = True
    return outlier


def super_scales(w2: np.ndarray, keep, headroom: float) -> np.ndarray:
    """gptq._super_scales with `headroom` x the largest min-max group scale."""
    if headroom == 1.0:
        return _super_scales(w2, keep)
    m, n = w2.shape
    g = -(-n // GROUP)
    pad = g * GROUP - n
    wp = np.pad(w2, ((0, 0), (0, pad))).reshape(m, g, GROUP)
    kp = None if keep is None else np.pad(keep, ((0, 0), (0, pad))).reshape(m, g, GROUP)
    lo, hi = _range_with_zero(wp, kp)
    top = headroom * (hi - lo).max(axis=1) / gptq.MAXQ2 / gptq.SCALE_CODES
    return np.maximum(f16_up(top), SUPER_FLOOR)


def sweep(wp, u, col_weight, k2, outlier, v: Variant):
    """gptq._sweep with v's order of the parts, super-scales, block and clipping searches; u and
    col_weight in the *sweep* order. Returns (result, loss, target): the GPTQ loss e_rj^2 of every
    weight and its value as the sweep reached it (error fed in), both in storage order."""
    m, k = wp.shape
    k4 = k - k2
    res = _Result.empty(m, k2, k4)
    # sweep position -> storage position
    order = np.arange(k) if v.sweep == "2first" else np.concatenate([np.arange(k2, k),
                                                                     np.arange(k2)])
    start2, start4 = (0, k2) if v.sweep == "2first" else (k4, 0)
    w = np.ascontiguousarray(wp[:, order])
    keep = None if outlier is None else ~outlier
    if v.super_mode == "static":
        for b in range(0, k2, SUPER_GROUPS * GROUP):
            end = min(b + SUPER_GROUPS * GROUP, k2)
            res.super2[:, b // (SUPER_GROUPS * GROUP)] = super_scales(
                wp[:, b:end], None if keep is None else keep[:, b:end], v.super_headroom)
    # gptq._groups in sweep positions
    groups = sorted((start2 + s0, start2 + s1, 2, g) if bits == 2 else
                    (start4 + s0 - k2, start4 + s1 - k2, 4, g)
                    for s0, s1, bits, g in _groups(k2, k4))
    u32 = u.astype(np.float32)
    diag_u = np.diagonal(u).astype(np.float32)
    col_weight = np.asarray(col_weight, np.float32)
    loss, target = np.zeros((m, k), np.float32), np.zeros((m, k), np.float32)
    for block in _lazy_blocks(groups, v.block):
        b0, b1 = block[0][0], block[-1][1]
        if block[0][2] == 2 and block[0][3] % SUPER_GROUPS == 0 and v.super_mode == "lazy":
            j0 = b0 - start2
            end = min(j0 + SUPER_GROUPS * GROUP, k2)
            res.super2[:, block[0][3] // SUPER_GROUPS] = super_scales(
                w[:, b0:b0 + end - j0], None if keep is None else keep[:, j0:end],
                v.super_headroom)
        w1 = w[:, b0:b1].copy()
        e1 = np.zeros_like(w1)
        for s0, s1, bits, g in block:
            wg, hw = w1[:, s0 - b0:s1 - b0], col_weight[s0:s1]
            if bits == 2:
                j0 = s0 - start2
                sup = res.super2[:, g // SUPER_GROUPS].astype(np.float32)
                kg = None if keep is None or keep[:, j0:j0 + s1 - s0].all() else \
                    keep[:, j0:j0 + s1 - s0]
                code, zero = _fit2(wg, kg, hw, sup, v.clip2, v.clip2_min)
                res.code2[:, g], res.zero2[:, g] = code, zero
                round_column = _round2(res, outlier, j0, ((code.astype(np.float32) + 1) * sup
                                                          ).astype(np.float32),
                                       zero.astype(np.float32))
            else:
                res.scale4[:, g], res.min4[:, g] = _fit4(wg, hw, v.clip4, v.clip4_min)
                round_column = _round4(res, s0 - start4, res.scale4[:, g], res.min4[:, g])
            _quantize_group(w1, e1, u32[b0:b1, b0:b1], diag_u[b0:b1], s0 - b0, s1 - b0,
                            round_column)
        loss[:, b0:b1], target[:, b0:b1] = e1 * e1, w1
        if b1 < k:
            w[:, b1:] -= e1 @ u32[b0:b1, b1:]
    back = np.argsort(order)
    return res, loss[:, back], target[:, back]


# ---- measurement --------------------------------------------------------------------------------

def relative_error(w: np.ndarray, mix: MixParts, h: np.ndarray) -> float:
    """tr(dW H dW^T) / tr(W H W^T): the share of the layer's output energy the quantization
    error adds (gptq.quantize_mix_gptq's info['error_rel'])."""
    return gptq.hessian_weighted_error(w, dequantize_mix(mix), h) / \
        gptq.hessian_weighted_error(w, np.zeros_like(w), h)


def smollm2_cases(model: Path, calib: Path, n_tokens: int, layers: list, bits: float,
                  outlier_frac: float) -> list:
    """(name, W, H, k4, n_outliers) of every linear matrix of the given layers: W from the model
    (a GGUF or Hugging Face source is converted to a temporary f16 file first), H from the
    runtime over n_tokens of the calib text, k4 and n_outliers from the uniform plan_mix of these
    matrices at `bits`."""
    from mixrt.convert import convert
    from mixrt.format import read_mixrt
    from mixrt.quant.calibration import collect_hessians, tensor_site
    from mixrt.quant.plan import plan_mix

    with tempfile.TemporaryDirectory() as tmp:
        f16 = model
        if model.suffix != ".mixrt":
            f16 = Path(tmp) / "f16.mixrt"
            convert(model, f16, recipe="f16", progress=False)
        hessians = collect_hessians(f16, calib.read_text(encoding="utf-8"), n_tokens=n_tokens,
                                    layers=layers, progress=False)
        tensors = read_mixrt(f16).tensors
        names = [f"blk.{layer}.{kind}.weight" for layer in layers for kind in KINDS]
        weights = [np.asarray(tensors[name].array(), np.float32) for name in names]
    plan = plan_mix([w.shape for w in weights], bits, outlier_frac)
    return [(name, w, hessians[tensor_site(name)], k4, nnz)
            for name, w, k4, nnz in zip(names, weights, plan.k4, plan.nnz)]


def measure(cases: list, names: list) -> None:
    """Prints the mean relative error of the one path and of each named variant over the cases,
    after checking that Variant() reproduces gptq.quantize_mix_gptq bit for bit."""
    base, seconds = [], 0.0
    for name, w, h, k4, nnz in cases:
        start = time.perf_counter()
        mix = gptq.quantize_mix_gptq(w, h, k4, nnz)
        seconds += time.perf_counter() - start
        same = quantize_variant(w, h, k4, nnz)
        if any(a.tobytes() != b.tobytes() for a, b in zip(pack_mix(mix), pack_mix(same))):
            raise SystemExit(f"ablate_gptq: Variant() differs from gptq.py on {name}")
        base.append(relative_error(w, mix, h))
    base = np.array(base)
    print(f"{len(cases)} matrices ({sum(w.size for _, w, _, _, _ in cases)} weights); Variant() "
          "= gptq.quantize_mix_gptq bit for bit")
    print(f"{'variant':22} {'mean rel. error':>15} {'vs one path':>11} {'worse/same':>10} "
          f"{'seconds':>7}")
    print(f"{'one path (gptq.py)':22} {base.mean():15.5f} {1:11.3f} {'':>10} {seconds:7.1f}",
          flush=True)
    for variant in names:
        errors, start = [], time.perf_counter()
        for _, w, h, k4, nnz in cases:
            errors.append(relative_error(w, quantize_variant(w, h, k4, nnz, **VARIANTS[variant]),
                                         h))
        errors = np.array(errors)
        print(f"{variant:22} {errors.mean():15.5f} {errors.mean() / base.mean():11.3f} "
              f"{int((errors > base).sum()):>5}/{int((errors == base).sum()):<4} "
              f"{time.perf_counter() - start:7.1f}", flush=True)


def convert_variant(variant: str, src: Path, out: Path, bits: float, calib, calib_tokens: int):
    """mixrt-convert's calibrated mix recipe with the variant in gptq.quantize_mix_gptq's place
    (both calibration methods look it up there when they quantize)."""
    from mixrt.convert import convert

    options = VARIANTS[variant]
    original = gptq.quantize_mix_gptq

    def quantize(w, h, k4, n_outliers, info=None):
        mix = quantize_variant(w, h, k4, n_outliers, **options)
        if info is not None:
            info.update(error_rel=relative_error(w, mix, h))
        return mix

    gptq.quantize_mix_gptq = quantize
    try:
        return convert(src, out, recipe="mix", bits=bits, calib=calib, calib_tokens=calib_tokens)
    finally:
        gptq.quantize_mix_gptq = original


def main() -> int:
    p = argparse.ArgumentParser(description="Runs and measures the calibrated quantizer's "
                                "alternatives (see the header of this file).")
    p.add_argument("--model", type=Path, default=SMOLLM2,
                   help="GGUF or Hugging Face directory, or (not with --convert) an f16 .mixrt "
                   "(default: SmolLM2 in ../shared)")
    p.add_argument("--calib", type=Path, default=WIKI / "wiki.test.calib-half.txt",
                   help="calibration text (default: the wikitext calibration half)")
    p.add_argument("--tokens", type=int, help="calibration tokens (4096; --convert: "
                   f"{DEFAULT_CALIB_TOKENS} as mixrt-convert)")
    p.add_argument("--layers", type=int, nargs="+", default=[4, 12, 20, 28],
                   help="layers (4 12 20 28)")
    p.add_argument("--bits", type=float, default=2.9, help="bits per weight of the plan (2.9)")
    p.add_argument("--outlier-frac", type=float, default=0.003, help="outlier share (0.003)")
    p.add_argument("--only", nargs="+", choices=list(VARIANTS), metavar="VARIANT",
                   help="only these variants (default: all)")
    p.add_argument("--convert", type=Path, metavar="OUT",
                   help="write the calibrated conversion of --model with --variant instead")
    p.add_argument("--variant", choices=list(VARIANTS), help="the variant of --convert")
    p.add_argument("--text", type=Path, help="--convert: the perplexity text (16384 tokens, "
                   "windows of 512 or the model's context)")
    args = p.parse_args()
    if args.convert:
        if not args.variant:
            p.error("--convert needs --variant")
        convert_variant(args.variant, args.model, args.convert, args.bits, args.calib,
                        args.tokens or DEFAULT_CALIB_TOKENS)
        if args.text:
            import mixrt

            with mixrt.load(args.convert) as model:
                r = model.perplexity(args.text.read_text(encoding="utf-8"),
                                     ctx=min(512, model.n_ctx), max_tokens=16384)
            print(f"{args.variant}: perplexity {r['ppl']:.3f} over {r['tokens_scored']} tokens "
                  f"(windows of {r['ctx']})")
        return 0
    cases = smollm2_cases(args.model, args.calib, args.tokens or 4096, args.layers, args.bits,
                          args.outlier_frac)
    measure(cases, args.only or list(VARIANTS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
