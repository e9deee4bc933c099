# quik.py: the quik dtype of FORMAT.md 5.7 (QUIK, arXiv 2310.09259): the numpy reference of its
# layout (packing, unpacking, float32 decode; the C++ decoder is tested bit for bit against it) and
# its quantizers: the input columns with the largest calibration activations stay fp16 (permuted
# last), the others take 4-bit codes -8..7 with one symmetric scale per row, by round to nearest or
# by GPTQ, whose error feedback then lands on the fp16 columns too.
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

GROUP = 32  # the 4-bit part's nibble order works in groups of 32 columns (FORMAT.md 5.4)
QMIN, QMAX = -8, 7
DEFAULT_OUT_FRACTION = 0.0625  # the paper's 256 fp16 columns of 4096
# Row scales tried, as fractions of max|w| / 7 over the row's 4-bit columns: the one with the
# smallest (Hessian-weighted) rounding error is kept. GPTQ's dampening: this fraction of the mean
# Hessian diagonal is added to it. Measured on SmolLM2 W4A8 (wiki calibration half; perplexity over
# the first 4096 tokens of the wiki eval half): these 32.10; no clipping 33.94; ratios 1.0 .. 0.6 in
# steps of 0.025 32.34; dampening 0.001 32.21, 0.1 32.14.
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
DAMP = 0.01


@dataclass
class QuikParts:
    perm: np.ndarray    # u32 [K]: the 4-bit columns, then the fp16 columns
    q: np.ndarray       # i8 [M, Kin]: codes -8..7
    scales: np.ndarray  # f16 [M]
    out_w: np.ndarray   # f16 [M, n_out]


def padded_kin(kin: int) -> int:
    return -(-kin // GROUP) * GROUP


def part_shapes(m: int, k: int, out_cols: int) -> list[tuple[int, ...]]:
    if not 0 <= out_cols <= k:
        raise ValueError(f"quik out_cols: expected 0..{k}, found {out_cols}")
    return [(k,), (m, padded_kin(k - out_cols) // 2), (m,), (m, out_cols)]


def out_column_count(k: int, fraction: float) -> int:
    """The fp16 columns of a layer with K inputs: round(fraction x K) (the paper's 256 of 4096 is
    0.0625), at most K."""
    return min(k, int(round(fraction * k)))


def pack(p: QuikParts) -> list[np.ndarray]:
    m, kin = p.q.shape
    if p.q.min(initial=0) < QMIN or p.q.max(initial=0) > QMAX:
        raise ValueError(f"quik codes: expected {QMIN}..{QMAX}, found {p.q.min()}..{p.q.max()}")
    u = np.full((m, padded_kin(kin)), -QMIN, np.uint8)  # padding: code 0
    u[:, :kin] = (p.q.astype(np.int16) - QMIN).astype(np.uint8)
    u = u.reshape(m, -1, 2, 16)  # per group: low nibbles the first 16 columns, high the last 16
    codes = (u[:, :, 0, :] | (u[:, :, 1, :] << 4)).reshape(m, -1)
    return [np.asarray(p.perm, np.uint32), codes, np.asarray(p.scales, np.float16),
            np.ascontiguousarray(p.out_w, np.float16)]


def unpack(typed: list[np.ndarray], m: int, k: int) -> QuikParts:
    """typed: the 4 parts as arrays of their FORMAT.md types and shapes."""
    perm, codes, scales, out_w = typed
    n_out = out_w.shape[1]
    kin = k - n_out
    pairs = codes.reshape(m, -1, 1, 16)
    u = np.concatenate([pairs & 15, pairs >> 4], axis=2).reshape(m, -1)
    return QuikParts(perm=perm, q=(u[:, :kin].astype(np.int8) + QMIN).astype(np.int8), scales=scales,
                     out_w=out_w)


def decode(p: QuikParts, k: int) -> np.ndarray:
    """float32 [M, K] in the original column order: q x scale (fp32), and the fp16 columns."""
    m, kin = p.q.shape
    w = np.empty((m, k), np.float32)
    w[:, p.perm[:kin]] = p.q.astype(np.float32) * p.scales.astype(np.float32)[:, None]
    w[:, p.perm[kin:]] = p.out_w.astype(np.float32)
    return w


def column_order(col_max: Optional[np.ndarray], k: int, n_out: int) -> np.ndarray:
    """perm: the K - n_out columns of the smallest calibration max|x| in index order, then the n_out
    largest, in decreasing max|x| (without calibration statistics, n_out must be 0)."""
    if n_out == 0:
        return np.arange(k, dtype=np.uint32)
    if col_max is None or len(col_max) != k:
        raise ValueError(f"col_max: expected {k} calibration maxima to choose {n_out} fp16 columns")
    largest = np.argsort(-np.asarray(col_max, np.float64), kind="stable")[:n_out]
    rest = np.setdiff1d(np.arange(k), largest)
    return np.concatenate([rest, largest]).astype(np.uint32)


def _row_scales(w_in: np.ndarray, col_weight: np.ndarray) -> np.ndarray:
    """Per row, the f16 scale among CLIP_RATIOS x max|w| / 7 with the smallest sum over columns of
    col_weight x (rounding error)^2 (round to nearest)."""
    top = np.abs(w_in).max(axis=1) if w_in.shape[1] else np.zeros(w_in.shape[0], np.float32)
    best = np.full(w_in.shape[0], np.inf)
    scales = np.zeros(w_in.shape[0], np.float16)
    for ratio in CLIP_RATIOS:
        s = (top * ratio / QMAX).astype(np.float16)
        s32 = np.where(s > 0, s.astype(np.float32), 1.0)[:, None]
        err = ((np.clip(np.round(w_in / s32), QMIN, QMAX) * s32 - w_in) ** 2) @ col_weight
        better = err < best
        best[better], scales[better] = err[better], s[better]
    return scales


def _round(col: np.ndarray, s32: np.ndarray) -> np.ndarray:
    return np.clip(np.round(col / s32), QMIN, QMAX)


def quantize_rtn(w: np.ndarray, perm: np.ndarray, n_out: int) -> QuikParts:
    """Round to nearest with per-row scales chosen on the plain squared error."""
    w = np.asarray(w, np.float32)
    kin = w.shape[1] - n_out
    wp = w[:, perm]
    scales = _row_scales(wp[:, :kin], np.ones(kin))
    s32 = np.where(scales > 0, scales.astype(np.float32), 1.0)[:, None]
    q = _round(wp[:, :kin], s32).astype(np.int8)
    return QuikParts(perm=perm, q=q, scales=scales, out_w=wp[:, kin:].astype(np.float16))


def quantize_gptq(w: np.ndarray, h: np.ndarray, perm: np.ndarray, n_out: int,
                  block: int = 128) -> QuikParts:
    """GPTQ (H [K, K]: the mean x x^T of the layer's inputs) over the 4-bit columns of perm in
    decreasing order of H's diagonal (GPTQ's act order, which they are stored in; measured on
    SmolLM2 W4A8, wiki eval half: perplexity ratio 1.063 against 1.092 in index order), then the
    fp16 columns of perm: each 4-bit column is rounded with its row's scale (chosen up front on the
    Hessian-weighted error) and its error, through the inverse Hessian's Cholesky factor, updates
    every later column, the fp16 columns last, which then store the updated weights."""
    w = np.asarray(w, np.float32)
    m, k = w.shape
    kin = k - n_out
    activity = np.diagonal(np.asarray(h))[perm[:kin]]
    perm = np.concatenate([perm[:kin][np.argsort(-activity, kind="stable")], perm[kin:]]).astype(np.uint32)
    hp = np.asarray(h, np.float64)[np.ix_(perm, perm)]
    diag = np.diagonal(hp).copy()
    dead = diag <= 0
    hp[dead, dead] = 1.0  # a column never active: any value works, keep H invertible
    hp = hp + DAMP * np.mean(np.diagonal(hp)) * np.eye(k)
    u = np.linalg.cholesky(np.linalg.inv(hp)).T  # upper: H^-1 = U^T U
    wp = w[:, perm].copy()
    wp[:, dead] = 0.0
    scales = _row_scales(wp[:, :kin], 1.0 / np.diagonal(u)[:kin] ** 2)
    s32 = np.where(scales > 0, scales.astype(np.float32), 1.0)[:, None]
    q = np.zeros((m, kin), np.int8)
    u32 = u.astype(np.float32)
    for b0 in range(0, kin, block):
        b1 = min(b0 + block, kin)
        err = np.zeros((m, b1 - b0), np.float32)
        for c in range(b0, b1):
            code = _round(wp[:, c], s32[:, 0])
            q[:, c] = code
            e = (wp[:, c] - code * s32[:, 0]) / u32[c, c]
            wp[:, c + 1:b1] -= e[:, None] * u32[c, c + 1:b1]
            err[:, c - b0] = e
        wp[:, b1:] -= err @ u32[b0:b1, b1:]
    return QuikParts(perm=perm, q=q, scales=scales, out_w=wp[:, kin:].astype(np.float16))

