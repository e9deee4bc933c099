# rtn.py: round-to-nearest quantizers (q8, q4 and the paper's v1 mix: range-chosen 4-bit strips,
# clipped 2-bit groups, fp16 outliers) and the 2-bit building blocks the calibrated quantizer
# reuses (second-level scales, integer-zero asymmetric grid, clipping search).
# Tested by tests/test_quant_layouts.py.
from __future__ import annotations

import numpy as np

from .layouts import (GROUP, SCALE_CODES, SUPER_GROUPS, MixParts, decode_scales2, groups,
                      pack_q4, pack_q8, padded_k2)

# Smallest second-level scale S: the smallest normal f16, so that no 2-bit scale decodes to 0
# (pitfall 2 of ../shared/docs/METHOD.md) even for blocks of groups that are all zero.
SUPER_FLOOR = np.float16(2.0 ** -14)
# Range shrink factors the clipping search tries for each 2-bit group (1.0 = no clipping).
CLIP_FACTORS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)
MAXQ2 = 3


def _grouped(w: np.ndarray) -> np.ndarray:
    """[M, K] float32 -> [M, G, 32], the padding columns repeating each row's last value (so they
    change no group's min, max or max |w|; their codes are dropped by the pack functions)."""
    w = np.asarray(w, np.float32)
    m, k = w.shape
    return np.pad(w, ((0, 0), (0, GROUP * groups(k) - k)), mode="edge").reshape(m, -1, GROUP)


def _f16_down(x: np.ndarray) -> np.ndarray:
    """The largest float16 <= x."""
    h = x.astype(np.float16)
    return np.where(h.astype(np.float32) > x, np.nextafter(h, np.float16(-np.inf)), h)


def f16_up(x: np.ndarray) -> np.ndarray:
    """The smallest float16 >= x."""
    h = x.astype(np.float16)
    return np.where(h.astype(np.float32) < x, np.nextafter(h, np.float16(np.inf)), h)


# ---- q8 and q4 ---------------------------------------------------------------------------------

def quantize_q8(w: np.ndarray) -> list[np.ndarray]:
    """W [M, K] -> q8 parts: per group scale = f16(max|w| / 127), codes round(w / scale) clamped
    to -127..127 (an all-zero group gets scale 0). |w - w'| <= scale / 2 per element."""
    m, k = w.shape
    wg = _grouped(w)
    scales = (np.abs(wg).max(axis=2) / 127).astype(np.float16)
    s = scales.astype(np.float32)[..., None]
    codes = np.clip(np.rint(np.divide(wg, s, out=np.zeros_like(wg), where=s > 0)), -127, 127)
    return pack_q8(codes.reshape(m, -1)[:, :k].astype(np.int8), scales)


def fit_q4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W [M, K] -> (q uint8 [M, K], scales f16 [M, G], mins f16 [M, G]), Q4_1 style: min = min(w)
    rounded down to f16, scale = f16((max(w) - min) / 15), q = round((w - min) / scale) in 0..15,
    so |w - w'| <= scale / 2 (float32 rounding aside). A constant group gets scale 0 and its value,
    rounded to nearest f16, as min."""
    m, k = w.shape
    wg = _grouped(w)
    lo, hi = wg.min(axis=2), wg.max(axis=2)
    constant = hi == lo
    mins = np.where(constant, lo.astype(np.float16), _f16_down(lo))
    scales = np.where(constant, 0, (hi - mins.astype(np.float32)) / 15).astype(np.float16)
    s = scales.astype(np.float32)[..., None]
    steps = np.divide(wg - mins.astype(np.float32)[..., None], s, out=np.zeros_like(wg),
                      where=s > 0)
    q = np.clip(np.rint(steps), 0, 15).astype(np.uint8)
    return q.reshape(m, -1)[:, :k], scales, mins


def quantize_q4(w: np.ndarray) -> list[np.ndarray]:
    """W [M, K] -> the 3 q4 parts of fit_q4."""
    return pack_q4(*fit_q4(w))


# ---- 2-bit building blocks ---------------------------------------------------------------------

def group_ranges(wg: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of each group of wg [..., n] along its last axis, ignoring entries where mask is
    True (outliers, padding), and widened to include 0: the grid (q - z) s with an integer zero z
    always holds 0, so a group whose values exclude 0 still needs a range that reaches it
    (pitfall 1 of ../shared/docs/METHOD.md). A group that is all masked gets (0, 0)."""
    if mask is None:
        return np.minimum(wg.min(axis=-1), 0), np.maximum(wg.max(axis=-1), 0)
    return (np.minimum(np.where(mask, 0, wg).min(axis=-1), 0),
            np.maximum(np.where(mask, 0, wg).max(axis=-1), 0))


def super_scales(group_scales: np.ndarray) -> np.ndarray:
    """Float group scales [M, G2] -> the f16 super-scales S [M, ceil(G2 / 16)]: per block of 16
    groups S = max(scale) / 64 rounded up to f16 (so 64 S covers the block's largest scale, which
    then decodes within f16 rounding), at least SUPER_FLOOR."""
    m, g2 = group_scales.shape
    blocks = -(-g2 // SUPER_GROUPS)
    padded = np.zeros((m, blocks * SUPER_GROUPS), np.float32)
    padded[:, :g2] = group_scales
    top = padded.reshape(m, blocks, SUPER_GROUPS).max(axis=2) / SCALE_CODES
    return np.maximum(f16_up(top), SUPER_FLOOR)


def encode_scales(group_scales: np.ndarray, super2: np.ndarray) -> np.ndarray:
    """The 6-bit codes c [M, G2] nearest to float scales s given S: c = clamp(round(s / S) - 1,
    0, 63), decoding to (c + 1) S. For s in [S/2, 64 S] the decoded scale is within S / 2 of s
    (relative error <= 0.5 / (s / S): 50% at s = S / 2, 0.8% for the block's largest scale); a
    smaller s decodes to S (never to 0)."""
    g2 = group_scales.shape[1]
    steps = group_scales / super2.astype(np.float32)[:, np.arange(g2) // SUPER_GROUPS]
    return np.clip(np.rint(steps) - 1, 0, SCALE_CODES - 1).astype(np.uint8)


def quantize_super_scales(group_scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The second-level quantization of the 2-bit group scales [M, G2]: (scale_code2 uint8 [M, G2],
    super2 f16 [M, B2]) from super_scales and encode_scales."""
    super2 = super_scales(group_scales)
    return encode_scales(group_scales, super2), super2


def asym_zero(lo: np.ndarray, scale: np.ndarray, bits: int = 2) -> np.ndarray:
    """The integer zero point z = clamp(round(-lo / scale), 0, 2^bits - 1) of groups with
    (0-including) minimum lo; clamping matters once clipping moved the range."""
    return np.clip(np.rint(-lo / scale), 0, 2 ** bits - 1).astype(np.uint8)


def quantize_asym(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int = 2) -> np.ndarray:
    """Codes q = clamp(round(w / scale) + z, 0, 2^bits - 1) (broadcasting), decoding to
    (q - z) scale."""
    return np.clip(np.rint(w / scale) + zero, 0, 2 ** bits - 1).astype(np.uint8)


def _squared_errors(wg: np.ndarray, scale: np.ndarray, zero: np.ndarray,
                    mask: np.ndarray | None) -> np.ndarray:
    """(w - w')^2 of each weight of 2-bit groups wg [M, G2, 32] quantized with float scales and
    zeros [M, G2] (as quantize_asym, computed in place: q - z = clamp(round(w / s), -z, 3 - z));
    0 where mask is True."""
    scale = scale[..., None]
    zero = zero[..., None].astype(np.float32)
    error = np.rint(wg / scale)
    np.clip(error, -zero, MAXQ2 - zero, out=error)
    error *= scale
    error -= wg
    error *= error
    if mask is not None:
        error[mask] = 0
    return error


def fit_groups2(wg: np.ndarray, super2: np.ndarray, mask: np.ndarray | None = None,
                clip_factors=CLIP_FACTORS) -> tuple[np.ndarray, np.ndarray]:
    """Scale codes and zeros (uint8 [M, G2] each) of 2-bit groups wg [M, G2, 32] under the given
    super-scales: for each factor f, the range shrunk to f (lo, hi) gives a scale, encoded to its
    code and decoded back, and a zero; each group keeps the candidate with the lowest squared error
    over its unmasked entries, the first one on ties (so clip_factors=(1.0,) is plain min/max)."""
    lo, hi = group_ranges(wg, mask)
    best = None
    for factor in clip_factors:
        code = encode_scales(factor * (hi - lo) / MAXQ2, super2)
        scale = decode_scales2(code, super2)
        zero = asym_zero(factor * lo, scale)
        error = _squared_errors(wg, scale, zero, mask).sum(axis=2)
        if best is None:
            best, best_code, best_zero = error, code, zero
        else:
            better = error < best
            best = np.where(better, error, best)
            best_code = np.where(better, code, best_code)
            best_zero = np.where(better, zero, best_zero)
    return best_code, best_zero


def outlier_gains(wg: np.ndarray, mask: np.ndarray, clip_factors=CLIP_FACTORS) -> np.ndarray:
    """For each weight of 2-bit groups wg [M, G2, 32], how much its group's squared error drops if
    it becomes an outlier (stored exactly and left out of the group statistics): its own squared
    error, except for the largest and the smallest weight of each group, which set the range: for
    them, the group's error minus that of the other weights refitted without it (so one large
    weight among small ones, which sits on the grid's end with little error of its own, counts
    what it costs the whole group). Masked entries get -1."""
    lo, hi = group_ranges(wg, mask)
    super2 = super_scales((hi - lo) / MAXQ2)

    def errors(mask):
        code, zero = fit_groups2(wg, super2, mask, clip_factors)
        return _squared_errors(wg, decode_scales2(code, super2), zero, mask)

    gains = errors(mask)
    total = gains.sum(axis=2, keepdims=True)
    for extreme in (np.where(mask, -np.inf, wg).argmax(axis=2)[..., None],
                    np.where(mask, np.inf, wg).argmin(axis=2)[..., None]):
        without = mask.copy()
        np.put_along_axis(without, extreme, True, axis=2)
        drop = total - errors(without).sum(axis=2, keepdims=True)
        np.put_along_axis(gains, extreme,
                          np.maximum(np.take_along_axis(gains, extreme, axis=2), drop), axis=2)
    return np.where(mask, -1, gains)


def strip_permutation(scores: np.ndarray, k4: int) -> np.ndarray:
    """The mix column permutation [K] that puts the k4 columns of highest score (ties: the lower
    index) last: the 2-bit columns, then the 4-bit columns, each in original order."""
    is4 = np.zeros(scores.size, bool)
    is4[np.argsort(-scores, kind="stable")[:k4]] = True
    return np.concatenate([np.flatnonzero(~is4), np.flatnonzero(is4)]).astype(np.int64)


# ---- mix ---------------------------------------------------------------------------------------

def _fit_w2(wg: np.ndarray, mask: np.ndarray, clip_factors) -> tuple:
    """(scale_code2, zero2, super2, decoded scales) of the 2-bit groups, statistics over the
    unmasked entries only."""
    lo, hi = group_ranges(wg, mask)
    super2 = super_scales((hi - lo) / MAXQ2)
    code, zero = fit_groups2(wg, super2, mask, clip_factors)
    return code, zero, super2, decode_scales2(code, super2)


def quantize_mix_rtn(w: np.ndarray, k4: int, n_outliers: int,
                     clip_search: bool = True) -> MixParts:
    """W [M, K] -> MixParts, the paper's v1: the k4 columns with the largest range (max - min over
    the rows) become 4-bit strips (q4 groups); the rest are 2-bit groups with second-level scales
    (clipping search if clip_search); the n_outliers 2-bit weights of the largest outlier_gains
    after a first pass are masked out of the group statistics, the groups refitted, and their
    residuals w - w' kept as fp16 outliers (pitfall 3 of ../shared/docs/METHOD.md)."""
    w = np.asarray(w, np.float32)
    m, k = w.shape
    perm = strip_permutation(w.max(axis=0) - w.min(axis=0), k4)
    k2 = k - k4
    if not 0 <= n_outliers <= m * k2:
        raise ValueError(f"mix outliers: expected 0..{m * k2} (the 2-bit weights), "
                         f"found {n_outliers}")
    k2p = padded_k2(k2)
    w2 = np.zeros((m, k2p), np.float32)
    w2[:, :k2] = w[:, perm[:k2]]
    wg = w2.reshape(m, k2p // GROUP, GROUP)
    mask = np.zeros((m, k2p), bool)
    mask[:, k2:] = True  # padding columns
    factors = CLIP_FACTORS if clip_search else (1.0,)
    rows = positions = np.zeros(0, np.int64)
    if n_outliers:
        gains = outlier_gains(wg, mask.reshape(wg.shape), factors).reshape(m, k2p)
        rows, positions = np.unravel_index(
            np.argpartition(gains.ravel(), gains.size - n_outliers)[gains.size - n_outliers:],
            gains.shape)
        mask[rows, positions] = True
    code, zero, super2, scale = _fit_w2(wg, mask.reshape(wg.shape), factors)
    q2 = quantize_asym(wg, scale[..., None], zero[..., None])
    dense = ((q2.astype(np.float32) - zero[..., None]) * scale[..., None]).reshape(m, k2p)
    residuals = (w2 - dense)[rows, positions]
    cols = perm[positions]
    order = np.lexsort((cols, rows))
    q4, scale4, min4 = fit_q4(w[:, perm[k2:]])
    return MixParts(
        perm=perm,
        q2=q2.reshape(m, k2p)[:, :k2],
        scale_code2=code, zero2=zero, super2=super2, q4=q4, scale4=scale4, min4=min4,
        row_ptr=np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=m))]).astype(np.uint32),
        cols=cols[order].astype(np.uint16), vals=residuals[order].astype(np.float16))
