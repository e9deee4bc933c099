# gptq.py: the calibrated mix quantizer (paper v4 plus what measurably helps), one path: the 4-bit
# column strips chosen by Hessian-weighted gain, act-order permutation, exactly n_outliers fp16
# outliers in the 2-bit columns chosen first (greedily, by the weighted group loss their removal
# saves; stored as residuals), then one GPTQ sweep (error feedback through the inverse Hessian,
# lazy blocked updates) over the 2-bit groups (second-level scale of each block of 16 fixed when
# the sweep reaches it, Hessian-weighted clipping search) and then the 4-bit strips (q4 groups,
# clipping search). The alternatives measured against these steps, with their figures, are in
# tools/ablate_gptq.py. Also the per-column sensitivities with which the planner (plan.py) spreads
# 4-bit columns over the matrices (kl_gains: the KL each column's 4 bits save, from the Fisher
# diagonal of quant/fisher.py), and the whole-model sequential driver (calibrated_mix).
# Tested by tests/test_gptq.py.
#
#   H = hessians[(layer, site)]                        # quant/calibration.py
#   mix = quantize_mix_gptq(W, H, k4=128, n_outliers=500)
#   scores = kl_gains(W, H, fisher[name])              # plan_mix(..., sensitivities=[scores, ...])
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .layouts import GROUP, SCALE_CODES, SUPER_GROUPS, MixParts, padded_k2
from .rtn import SUPER_FLOOR, f16_up, group_ranges, strip_permutation

MAXQ2 = 3
MAXQ4 = 15

# The parameters of the one path (the alternatives measured against them: tools/ablate_gptq.py).
# Dampening added to the Hessian diagonal, relative to its mean (GPTQ's percdamp).
DAMP = 0.01
# Columns per lazy update block (whole groups).
BLOCK = 32
# Clipping search of the 2-bit groups: CLIP2 scales from the min-max one down to CLIP2_MIN of it,
# each with the two integer zeros around the centring one. (Measured: the search lowers the
# Hessian-weighted error by a third; 12 vs 20 candidates: 0.1%.)
CLIP2 = 12
CLIP2_MIN = 0.45
# Clipping search of the 4-bit groups: CLIP4 range factors down to CLIP4_MIN, each with the range
# anchored at the min, centred and anchored at the max.
CLIP4 = 6
CLIP4_MIN = 0.75
# Greedy outlier choice: removals tried per group, and clipping candidates of its refits.
OUTLIER_ROUNDS = 3
OUTLIER_CLIP = 4
# What mixrt-convert records of this path as mixrt.recipe.gptq.*: the dampening, and the outlier
# choice by name ("greedy0": greedy, on the original weights).
RECIPE = {"damp": DAMP, "outlier_select": "greedy0"}


def hessian_weighted_error(w: np.ndarray, w_q: np.ndarray, h: np.ndarray) -> float:
    """tr((W - W') H (W - W')^T): the summed squared output error of the layer per calibration
    token (H the mean x x^T)."""
    d = np.asarray(w, np.float64) - np.asarray(w_q, np.float64)
    return float(np.einsum("ij,ij->", d @ h, d))


def _damped(h: np.ndarray, damp: float) -> np.ndarray:
    """H plus damp x mean(diag H) on the diagonal; dead inputs (H_jj = 0) get 1 on the diagonal
    and no correlations."""
    h = np.array(h, np.float64, copy=True)
    diag = np.diagonal(h).copy()
    dead = diag <= 0
    diag[dead] = 1.0
    h[dead, :] = 0
    h[:, dead] = 0
    mean = diag.mean() if diag.size else 1.0
    np.fill_diagonal(h, diag + damp * mean)
    return h


def _triangular_inverse(lower: np.ndarray) -> np.ndarray:
    """The inverse of a lower-triangular matrix by 2x2 blocks (n^3 / 3 multiply-adds, a sixth of
    a general inverse): inv([[A, 0], [C, D]]) = [[A^-1, 0], [-D^-1 C A^-1, D^-1]]."""
    n = lower.shape[0]
    if n <= 128:
        return np.tril(np.linalg.inv(lower))
    h = n // 2
    a_inv = _triangular_inverse(lower[:h, :h])
    d_inv = _triangular_inverse(lower[h:, h:])
    out = np.zeros_like(lower)
    out[:h, :h] = a_inv
    out[h:, h:] = d_inv
    out[h:, :h] = -(d_inv @ (lower[h:, :h] @ a_inv))
    return out


def _inverse_cholesky(h: np.ndarray) -> np.ndarray:
    """The upper Cholesky factor U of H^-1 (H^-1 = U^T U), float64, retrying with more
    dampening if H is numerically not positive definite. With J the order reversal, J H J = L L^T
    gives U = J L^-1 J: one Cholesky and one triangular inverse."""
    extra = 0.0
    mean = float(np.mean(np.diagonal(h)))
    flipped = np.ascontiguousarray(h[::-1, ::-1])
    for _ in range(8):
        try:
            lower = np.linalg.cholesky(flipped + extra * mean * np.eye(h.shape[0]) if extra
                                       else flipped)
            return np.ascontiguousarray(_triangular_inverse(lower)[::-1, ::-1])
        except np.linalg.LinAlgError:
            extra = 0.01 if extra == 0 else extra * 10
    raise np.linalg.LinAlgError("the Hessian is not positive definite even with dampening 1e5")


# ---- group fits ---------------------------------------------------------------------------------

def _range_with_zero(wg: np.ndarray, keep: Optional[np.ndarray]):
    """group_ranges over the kept entries (keep None: all)."""
    return group_ranges(wg, None if keep is None else ~keep)


def _fit2(wg: np.ndarray, keep: Optional[np.ndarray], hw: np.ndarray, super_s: np.ndarray,
          n_clip: int, clip_min: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale code c and zero z (uint8 [M] each) of one 2-bit group wg [M, n] with super-scales
    super_s [M] (float32), minimising sum_j hw_j (w - (q - z) s)^2 over the kept entries: scales
    from the min-max one down to clip_min of it (encoded, so each candidate is exactly a (c+1) S),
    two zeros for each (the first candidate wins ties: n_clip=1 is plain min-max)."""
    m, n = wg.shape
    lo, hi = _range_with_zero(wg, keep)
    base = (hi - lo) / MAXQ2  # [M]
    factors = np.linspace(1.0, clip_min, n_clip, dtype=np.float32) if n_clip > 1 else \
        np.ones(1, np.float32)
    codes = np.clip(np.rint(base[:, None] * factors[None, :] / super_s[:, None]) - 1, 0,
                    SCALE_CODES - 1).astype(np.float32)  # [M, F]
    scales = (codes + 1) * super_s[:, None]  # [M, F], exactly the decoded scales
    t = wg[:, None, :] / scales[:, :, None]  # [M, F, n]: w in units of the scale
    r = np.rint(t)
    weight = hw.astype(np.float32) if keep is None else hw.astype(np.float32) * keep
    d = np.empty_like(t)
    # zeros: the two integers around the one centring the grid on the range (the best of all
    # four in 99.99% of real groups, measured)
    centre = np.clip(1.5 - (lo + hi)[:, None] / (2 * scales), 0, MAXQ2)
    zeros = (np.floor(centre), np.ceil(centre))
    losses = []
    for z in zeros:
        # q - z = clamp(round(t), -z, 3 - z); error (t - (q - z)) s
        np.maximum(r, -z[:, :, None], out=d)
        np.minimum(d, (MAXQ2 - z)[:, :, None], out=d)
        np.subtract(t, d, out=d)
        d *= d
        if keep is None:
            losses.append((d.reshape(m * len(factors), n) @ weight).reshape(m, -1))
        else:
            losses.append(np.einsum("mfn,mn->mf", d, weight))
    loss = np.stack(losses, axis=2) * (scales ** 2)[:, :, None]  # [M, F, 2]
    flat = loss.reshape(m, -1).argmin(axis=1)
    f_best, z_pick = np.divmod(flat, 2)
    rows = np.arange(m)
    z_best = np.where(z_pick == 0, zeros[0][rows, f_best], zeros[1][rows, f_best])
    return codes[rows, f_best].astype(np.uint8), z_best.astype(np.uint8)


def _fit4(wg: np.ndarray, hw: np.ndarray, n_clip: int, clip_min: float):
    """f16 scale and min [M] of one 4-bit group wg [M, n] (w' = q scale + min, q 0..15),
    minimising the hw-weighted squared error over candidate ranges (range factors down to clip_min,
    each anchored at the min, centred, anchored at the max)."""
    lo, hi = wg.min(axis=1), wg.max(axis=1)
    width = hi - lo
    factors = np.linspace(1.0, clip_min, n_clip) if n_clip > 1 else np.ones(1)
    cand_scale, cand_min = [], []
    for f in factors:
        for anchor in ((0.0,) if f == 1.0 else (0.0, 0.5, 1.0)):
            cand_scale.append(f * width / MAXQ4)
            cand_min.append(lo + anchor * (1 - f) * width)
    scale = np.stack(cand_scale, 1).astype(np.float16).astype(np.float32)  # [M, C]
    mn = np.stack(cand_min, 1).astype(np.float16).astype(np.float32)
    x = wg[:, None, :]
    safe = np.where(scale > 0, scale, 1.0)[:, :, None]
    q = np.where(scale[:, :, None] > 0, np.clip(np.rint((x - mn[:, :, None]) / safe), 0, MAXQ4), 0)
    err = q * scale[:, :, None] + mn[:, :, None] - x
    loss = (err * err * hw[None, None, :]).sum(axis=-1)
    best = loss.argmin(axis=1)
    rows = np.arange(wg.shape[0])
    return scale[rows, best].astype(np.float16), mn[rows, best].astype(np.float16)


def _rtn_errors(w: np.ndarray, bits: int) -> np.ndarray:
    """Squared round-to-nearest errors [M, K] of asymmetric min-max groups of 32 along K (2-bit:
    integer zero with 0 in range; 4-bit: float min) — the cheap error estimates of the column
    choice and of column_gains."""
    m, k = w.shape
    g = -(-k // GROUP)
    wp = np.pad(w.astype(np.float32), ((0, 0), (0, g * GROUP - k)), mode="edge")
    wp = wp.reshape(m, g, GROUP)
    if bits == 2:
        lo = np.minimum(wp.min(axis=2, keepdims=True), 0)
        hi = np.maximum(wp.max(axis=2, keepdims=True), 0)
        s = np.maximum((hi - lo) / MAXQ2, 1e-12)
        z = np.clip(np.rint(-lo / s), 0, MAXQ2)
        deq = (np.clip(np.rint(wp / s) + z, 0, MAXQ2) - z) * s
    else:
        lo = wp.min(axis=2, keepdims=True)
        s = np.maximum((wp.max(axis=2, keepdims=True) - lo) / MAXQ4, 1e-12)
        deq = np.clip(np.rint((wp - lo) / s), 0, MAXQ4) * s + lo
    return ((deq - wp) ** 2).reshape(m, -1)[:, :k]


def _saved_errors(w: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H_jj [K] clipped at 0, e2_rj^2 - e4_rj^2 [M, K]): what column_gains and kl_gains weigh,
    the squared round-to-nearest error each weight loses at 4 instead of 2 bits."""
    w = np.asarray(w, np.float32)
    diag = np.clip(np.diagonal(np.asarray(h, np.float64)), 0, None)
    return diag, _rtn_errors(w, 2) - _rtn_errors(w, 4)


def column_gains(w: np.ndarray, h: np.ndarray) -> np.ndarray:
    """float64 [K]: H_jj x sum_r (e2_rj^2 - e4_rj^2), the Hessian-weighted squared output error
    that storing column j at 4 instead of 2 bits saves (round-to-nearest estimates): how
    mix_permutation ranks a matrix's columns for its 4-bit strips."""
    diag, saved = _saved_errors(w, h)
    return diag * np.maximum(saved.sum(axis=0, dtype=np.float64), 0)


def kl_gains(w: np.ndarray, h: np.ndarray, fisher: np.ndarray) -> np.ndarray:
    """float64 [K], the `sensitivities` of plan_mix for one matrix: 1/2 H_jj x sum_r F_r
    (e2_rj^2 - e4_rj^2), the KL divergence from the unquantized model's predictions (per token,
    second order, round-to-nearest error estimates) that storing column j at 4 instead of 2 bits
    saves, with F [M] the Fisher diagonal of the layer's outputs (quant/fisher.py). In the same
    unit for every matrix, so the planner compares strips of different layers directly.
    Measured on SmolLM2 (wikitext calibration half; ratio to f16 and KL on the wikitext eval half
    / tiny Shakespeare, 16384 tokens), against the previous allocation by relative output error
    (column_gains / tr(W H W^T)): at 2.9 bits 1.734, 0.639 / 1.935, 0.786 against 1.929, 0.729 /
    2.273, 0.956 (on the model's own text: 2.237 / 1.862 against 2.470 / 1.984); at 2.5 bits,
    where ~40 strips fit in all, 2.886, 1.120 / 4.030, 1.481 against 2.845, 1.088 / 3.690, 1.415.
    Before that (4096 tokens, perplexity 2.9 bits): relative gains 56.6, gains divided by the
    square root of the output energy 58.6, absolute Hessian gains 68.0, a uniform 4-bit share 60.7."""
    diag, saved = _saved_errors(w, h)
    weighted = np.asarray(fisher, np.float64)[:, None] * saved
    return 0.5 * diag * np.maximum(weighted.sum(axis=0), 0)


def predicted_kl(delta: np.ndarray, h: np.ndarray, fisher: np.ndarray) -> float:
    """1/2 sum_r F_r (dW_r H dW_r^T): the KL divergence from the unquantized model's predictions
    (per token, second order) that a weight error dW [M, K] of one matrix costs, with H its input
    Hessian and F [M] the Fisher diagonal of its outputs (quant/fisher.py); kl_gains is this
    estimate column by column with H's diagonal."""
    delta = np.asarray(delta, np.float64)
    return 0.5 * float(np.einsum("r,rk,rk->", np.asarray(fisher, np.float64), delta @ h, delta))


def mix_permutation(w: np.ndarray, h: np.ndarray, k4: int) -> np.ndarray:
    """perm [K]: the K - k4 2-bit columns, then the k4 4-bit columns (those of highest
    column_gains, ties: the lower index), each part in act order (decreasing H_jj; free here, the
    permutation is stored anyway)."""
    perm = strip_permutation(column_gains(w, h), k4)
    return order_parts(perm, w.shape[1] - k4, np.diagonal(np.asarray(h, np.float64)))


def order_parts(perm: np.ndarray, k2: int, key: np.ndarray) -> np.ndarray:
    """perm with each of its parts (the first k2 columns, the rest) sorted by decreasing key [K]
    (stable: ties keep their order)."""
    part2, part4 = perm[:k2], perm[k2:]
    return np.concatenate([part2[np.argsort(-key[part2], kind="stable")],
                           part4[np.argsort(-key[part4], kind="stable")]]).astype(np.int64)


# ---- outliers -----------------------------------------------------------------------------------

def _greedy_outliers(t: np.ndarray, hw: np.ndarray, n_outliers: int, rounds: int, n_clip: int,
                     clip_min: float) -> np.ndarray:
    """bool [M, K2]: n_outliers weights of the 2-bit part t [M, K2] (hw [K2] the column weights of
    the loss), chosen greedily by the loss each removal saves: every group of 32 is refitted
    without one more entry up to `rounds` times (the entry, among its largest, smallest and
    worst-fitting, whose removal saves most; refits with n_clip clipping candidates down to
    clip_min), and the removals with the largest savings per outlier win (upper concave envelope
    of each group's cumulative savings, so that two range-setting weights count together), taken
    in order within a group."""
    m, k2 = t.shape
    wg, keep, hw_rows = _outlier_groups(t, hw)
    loss, err = _group_losses_rows(wg, keep, hw_rows, n_clip, clip_min)
    loss1, idx1, err1, keep1 = _removal_round(wg, keep, hw_rows, err, n_clip, clip_min)
    gain1 = loss - loss1
    # groups of the envelope: the promising ones with all rounds, the others with one removal
    active = _promising_groups(loss, loss1, n_outliers)
    passive = np.setdiff1d(np.arange(wg.shape[0]), active)
    cum, removed = _later_removals(wg[active], keep1[active], hw_rows[active], err1[active],
                                   loss[active], loss1[active], idx1[active], rounds, n_clip,
                                   clip_min)
    slope, start, end, local = _envelope_segments(cum)
    slope = np.concatenate([slope, gain1[passive]])
    start = np.concatenate([start, np.zeros(passive.size, np.int64)])
    end = np.concatenate([end, np.ones(passive.size, np.int64)])
    group = np.concatenate([active[local], passive])
    local = np.concatenate([local, -1 - passive])  # negative: index into idx1 by group
    valid = np.isfinite(slope) & (end > start) & (slope > 0)
    chosen, taken = _take_removals(slope[valid], start[valid], end[valid], group[valid],
                                   local[valid], idx1, removed, n_outliers, wg.size)
    if taken < n_outliers:  # more outliers than the rounds give: the largest remaining errors
        left = np.where(chosen.reshape(wg.shape) | ~keep, -1, err).ravel()
        need = n_outliers - taken
        chosen[np.argpartition(left, left.size - need)[left.size - need:]] = True
    return chosen.reshape(m, -1)[:, :k2]


def _outlier_groups(t: np.ndarray, hw: np.ndarray):
    """The 2-bit part t [M, K2] as groups [M x G, 32] (zero padding to whole groups), which of
    their entries are real (bool, same shape) and each group's column weights (hw [K2], float32,
    0 on the padding)."""
    m, k2 = t.shape
    g = -(-k2 // GROUP)
    pad = g * GROUP - k2
    wg = np.pad(t, ((0, 0), (0, pad))).reshape(m * g, GROUP)
    keep = np.pad(np.ones((m, k2), bool), ((0, 0), (0, pad))).reshape(m * g, GROUP)
    hwp = np.pad(hw.astype(np.float32), (0, pad)).reshape(g, GROUP)
    hw_rows = np.broadcast_to(hwp[None], (m, g, GROUP)).reshape(m * g, GROUP)
    return wg, keep, hw_rows


def _removal_round(wg, keep, hw_rows, err, n_clip, clip_min):
    """One more removal per group of wg [N, 32] (keep: the entries still in, err: their weighted
    errors in the current fit): among its largest and smallest kept entries (they set the range)
    and its worst-fitting one, the entry whose removal leaves the lowest loss. Returns the groups'
    new (loss, removed entry, errors, keep)."""
    rows = np.arange(wg.shape[0])
    best_loss = best_idx = best_err = None
    for idx in (np.where(keep, wg, -np.inf).argmax(axis=1),
                np.where(keep, wg, np.inf).argmin(axis=1),
                np.where(keep, err, -1).argmax(axis=1)):
        trial = keep.copy()
        trial[rows, idx] = False
        cand, cand_err = _group_losses_rows(wg, trial, hw_rows, n_clip, clip_min)
        if best_loss is None:
            best_loss, best_idx, best_err = cand, idx, cand_err
        else:
            better = cand < best_loss
            best_loss = np.where(better, cand, best_loss)
            best_idx = np.where(better, idx, best_idx)
            best_err = np.where(better[:, None], cand_err, best_err)
    keep = keep.copy()
    keep[rows, best_idx] = False
    return best_loss, best_idx, best_err, keep


def _promising_groups(loss: np.ndarray, loss1: np.ndarray, n_outliers: int) -> np.ndarray:
    """Indices of the groups whose later removals can still matter: those that can beat tau, the
    n-th best first removal (loss - loss1). A segment of the envelope after the first removal
    saves at most loss1 per outlier, one starting at 0 and longer than 1 at most loss / 2."""
    gain1 = loss - loss1
    tau = np.partition(gain1, gain1.size - n_outliers)[gain1.size - n_outliers] \
        if n_outliers <= gain1.size else 0.0
    return np.flatnonzero(np.maximum(loss / 2, loss1) > tau)


def _later_removals(wg, keep1, hw_rows, err1, loss, loss1, idx1, rounds, n_clip, clip_min):
    """The removal rounds 2..rounds of the groups wg [N, 32] after their first (keep1, err1,
    loss1, idx1; loss: before any): cum [N, rounds + 1], the cumulative savings C_r of removing a
    group's first r entries (C_0 = 0), and removed [N, rounds], the entries in removal order."""
    losses = [loss, loss1]
    removed = [idx1]
    ka, ea = keep1, err1
    for _ in range(1, rounds):
        la, ia, ea, ka = _removal_round(wg, ka, hw_rows, ea, n_clip, clip_min)
        losses.append(la)
        removed.append(ia)
    savings = [losses[0] - losses[r] for r in range(1, len(losses))]
    cum = np.stack([np.zeros_like(losses[0])] + savings, axis=1)
    removed = np.stack(removed, axis=1) if wg.shape[0] else np.zeros((0, rounds), np.int64)
    return cum, removed


def _envelope_segments(cum: np.ndarray):
    """The upper concave envelope of each row of cum [N, R + 1] (cumulative savings, C_0 = 0) as
    segments p -> q with their savings per outlier (C_q - C_p) / (q - p), so that removals whose
    savings only come together (two large weights that both set the range) count together.
    Returns arrays over the envelope steps (step-major, then rows): slope (-inf where a row's
    envelope has ended), start p, end q and the row."""
    n, rounds = cum.shape[0], cum.shape[1] - 1
    rows = np.arange(n)
    segments = [(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))]  # slope, start, end
    at = np.zeros(n, np.int64)
    while True:
        going = at < rounds
        if not going.any():
            break
        best_slope = np.full(n, -np.inf)
        best_end = at.copy()
        for q in range(1, rounds + 1):
            ok = going & (q > at)
            slope = np.where(ok, (cum[:, q] - cum[rows, at]) / np.maximum(q - at, 1), -np.inf)
            better = slope >= best_slope  # ties: the longer segment
            best_slope = np.where(better & ok, slope, best_slope)
            best_end = np.where(better & ok, q, best_end)
        segments.append((np.where(going, best_slope, -np.inf), at.copy(), best_end))
        at = np.where(going, best_end, at)
    return (np.concatenate([s for s, _, _ in segments]),
            np.concatenate([a for _, a, _ in segments]),
            np.concatenate([e for _, _, e in segments]),
            np.tile(rows, len(segments) - 1))


def _take_removals(slope, start, end, group, local, idx1, removed, n_outliers: int,
                   size: int):
    """(chosen bool [size] over the group entries, count): the removals start..end of the
    candidate segments by decreasing slope (ties: the earlier candidate) until n_outliers are
    taken; local >= 0 is the segment's row in removed [N, R], local < 0 a group's first removal
    idx1[group]."""
    chosen = np.zeros(size, bool)
    taken = 0
    for i in np.argsort(-slope, kind="stable"):
        if taken >= n_outliers:
            break
        for r in range(start[i], min(end[i], start[i] + n_outliers - taken)):
            entry = idx1[group[i]] if local[i] < 0 else removed[local[i], r]
            chosen[group[i] * GROUP + entry] = True
            taken += 1
    return chosen, taken


def _group_losses_rows(wg, keep, hw_rows, n_clip, clip_min):
    """(loss [N], err [N, n]) of 2-bit groups wg [N, n] refitted over their kept entries (float
    scales from the min-max one down to clip_min of it, n_clip candidates, each with the two
    integer zeros around the centring one, as _fit2 but without super-scale): the lowest loss
    sum_j hw_rows_j (w - w')^2 and the weighted squared errors of its fit (all entries)."""
    n_groups, n = wg.shape
    lo, hi = _range_with_zero(wg, keep)
    factors = np.linspace(1.0, clip_min, n_clip, dtype=np.float32) if n_clip > 1 else \
        np.ones(1, np.float32)
    scales = np.maximum((hi - lo) / MAXQ2, 1e-30)[:, None] * factors[None, :]  # [N, F]
    t = wg[:, None, :] / scales[:, :, None]
    r = np.rint(t)
    weight = hw_rows * keep
    best = np.full(n_groups, np.inf, np.float32)
    best_err = np.zeros((n_groups, n), np.float32)
    d = np.empty_like(t)
    rows = np.arange(n_groups)
    centre = np.clip(1.5 - (lo + hi)[:, None] / (2 * scales), 0, MAXQ2)
    for z in (np.floor(centre), np.ceil(centre)):
        np.maximum(r, -z[:, :, None], out=d)
        np.minimum(d, (MAXQ2 - z)[:, :, None], out=d)
        np.subtract(t, d, out=d)
        d *= d
        d *= (scales ** 2)[:, :, None]
        loss = np.einsum("gfn,gn->gf", d, weight)
        f = loss.argmin(axis=1)
        value = loss[rows, f]
        better = value < best
        best = np.where(better, value, best)
        best_err[better] = d[rows[better], f[better]] * hw_rows[better]
    return best, best_err


# ---- the sweep ----------------------------------------------------------------------------------

@dataclass
class _Result:
    """What the sweep decides, in the layouts of MixParts."""

    q2: np.ndarray
    code2: np.ndarray
    zero2: np.ndarray
    super2: np.ndarray
    q4: np.ndarray
    scale4: np.ndarray
    min4: np.ndarray
    residual: np.ndarray  # float16 [M, K2]: outlier residuals (0 elsewhere)

    @classmethod
    def empty(cls, m: int, k2: int, k4: int) -> _Result:
        g2 = padded_k2(k2) // GROUP
        return cls(q2=np.zeros((m, k2), np.uint8), code2=np.zeros((m, g2), np.uint8),
                   zero2=np.zeros((m, g2), np.uint8),
                   super2=np.full((m, -(-g2 // SUPER_GROUPS)), SUPER_FLOOR, np.float16),
                   q4=np.zeros((m, k4), np.uint8), scale4=np.zeros((m, k4 // GROUP), np.float16),
                   min4=np.zeros((m, k4 // GROUP), np.float16),
                   residual=np.zeros((m, k2), np.float16))


def _super_scales(w2: np.ndarray, keep: Optional[np.ndarray]) -> np.ndarray:
    """f16 [M] super-scale of one block of 2-bit groups w2 [M, n <= 512]: the largest min-max
    group scale (over the kept entries) / 64, rounded up to f16, at least SUPER_FLOOR."""
    m, n = w2.shape
    g = -(-n // GROUP)
    pad = g * GROUP - n
    wp = np.pad(w2, ((0, 0), (0, pad))).reshape(m, g, GROUP)
    kp = None if keep is None else np.pad(keep, ((0, 0), (0, pad))).reshape(m, g, GROUP)
    lo, hi = _range_with_zero(wp, kp)
    top = (hi - lo).max(axis=1) / MAXQ2 / SCALE_CODES
    return np.maximum(f16_up(top), SUPER_FLOOR)


def _groups(k2: int, k4: int) -> list:
    """(start, end, bits, index in its part) of every group in storage order: the 2-bit groups
    (the last one partial when k2 is not a multiple of 32), then those of the 4-bit strips."""
    return ([(g * GROUP, min((g + 1) * GROUP, k2), 2, g) for g in range(-(-k2 // GROUP))]
            + [(k2 + g * GROUP, k2 + (g + 1) * GROUP, 4, g) for g in range(k4 // GROUP)])


def _lazy_blocks(groups: list, block: int) -> list:
    """The groups (in sweep order) cut into lazy update blocks: whole groups, at most `block`
    columns, a new block at each 2-bit super-block start (so that its scale sees every update made
    so far) and where the part changes."""
    blocks, current = [], []
    for group in groups:
        size = sum(e - s for s, e, _, _ in current)
        new_super = group[2] == 2 and group[3] % SUPER_GROUPS == 0
        if current and (size + group[1] - group[0] > block or new_super
                        or current[-1][2] != group[2]):
            blocks.append(current)
            current = []
        current.append(group)
    if current:
        blocks.append(current)
    return blocks


def _round2(res: _Result, outlier: Optional[np.ndarray], j0: int, scale: np.ndarray,
            zero: np.ndarray):
    """round_column of a 2-bit group whose first column is j0 of the 2-bit part, with float32
    scales and zeros [M]: codes clamp(round(w / s) + z, 0, 3) into res.q2; the outliers among
    them keep the fp16 residual w - w' (res.residual) and so dequantize to w up to its rounding."""
    def round_column(i: int, col: np.ndarray) -> np.ndarray:
        j = j0 + i
        q = np.clip(np.rint(col / scale) + zero, 0, MAXQ2)
        deq = (q - zero) * scale
        res.q2[:, j] = q
        if outlier is not None:
            rows = np.flatnonzero(outlier[:, j])
            if rows.size:
                r16 = (col[rows] - deq[rows]).astype(np.float16)
                res.residual[rows, j] = r16
                deq[rows] += r16.astype(np.float32)
        return deq
    return round_column


def _round4(res: _Result, j0: int, scale: np.ndarray, mn: np.ndarray):
    """round_column of a 4-bit group whose first column is j0 of the 4-bit part, with f16 scales
    and mins [M]: codes clamp(round((w - min) / scale), 0, 15) into res.q4 (0 where scale = 0)."""
    scf, mnf = scale.astype(np.float32), mn.astype(np.float32)
    safe = np.where(scf > 0, scf, 1.0)

    def round_column(i: int, col: np.ndarray) -> np.ndarray:
        q = np.where(scf > 0, np.clip(np.rint((col - mnf) / safe), 0, MAXQ4), 0)
        res.q4[:, j0 + i] = q
        return q * scf + mnf
    return round_column


def _quantize_group(w1: np.ndarray, e1: np.ndarray, u1: np.ndarray, diag_u: np.ndarray, c0: int,
                    c1: int, round_column) -> None:
    """GPTQ's column step over the columns c0..c1 (one group) of a lazy block w1 [M, B]: each
    column, as the feedback so far has left it, is rounded by round_column(i, col) (i counting
    from 0 in the group; it stores the codes and returns the dequantized column); its error
    divided by U_cc goes to e1[:, c] and, through row c of the block's U u1 [B, B], onto the
    block's later columns. diag_u [B]: the diagonal of u1."""
    for c in range(c0, c1):
        col = w1[:, c]
        err = (col - round_column(c - c0, col)) / diag_u[c]
        if c + 1 < w1.shape[1]:
            w1[:, c + 1:] -= err[:, None] * u1[c, c + 1:]
        e1[:, c] = err


def _sweep(wp: np.ndarray, u: np.ndarray, col_weight: np.ndarray, k2: int,
           outlier: Optional[np.ndarray]) -> _Result:
    """One GPTQ pass over wp [M, K] (float32, columns in storage order: the 2-bit part, then the
    4-bit strips), u the upper Cholesky factor of H^-1 and col_weight [K] the clipping-search
    weights, both in that order. outlier: bool [M, K2] of 2-bit weights kept as fp16 residuals
    (excluded from group statistics), or None. Each block of 16 2-bit groups fixes its
    super-scale when the sweep reaches it, from the weights as updated so far."""
    m, k = wp.shape
    res = _Result.empty(m, k2, k - k2)
    w = np.array(wp, np.float32, order="C")
    keep = None if outlier is None else ~outlier
    u32 = u.astype(np.float32)
    diag_u = np.diagonal(u).astype(np.float32)
    col_weight = np.asarray(col_weight, np.float32)
    for block in _lazy_blocks(_groups(k2, k - k2), BLOCK):
        b0, b1 = block[0][0], block[-1][1]
        if block[0][2] == 2 and block[0][3] % SUPER_GROUPS == 0:
            end = min(b0 + SUPER_GROUPS * GROUP, k2)
            res.super2[:, block[0][3] // SUPER_GROUPS] = _super_scales(
                w[:, b0:end], None if keep is None else keep[:, b0:end])
        w1 = w[:, b0:b1].copy()
        e1 = np.zeros_like(w1)
        for s0, s1, bits, g in block:
            wg, hw = w1[:, s0 - b0:s1 - b0], col_weight[s0:s1]
            if bits == 2:
                sup = res.super2[:, g // SUPER_GROUPS].astype(np.float32)
                kg = None if keep is None or keep[:, s0:s1].all() else keep[:, s0:s1]
                code, zero = _fit2(wg, kg, hw, sup, CLIP2, CLIP2_MIN)
                res.code2[:, g], res.zero2[:, g] = code, zero
                round_column = _round2(res, outlier, s0, ((code.astype(np.float32) + 1) * sup
                                                          ).astype(np.float32),
                                       zero.astype(np.float32))
            else:
                res.scale4[:, g], res.min4[:, g] = _fit4(wg, hw, CLIP4, CLIP4_MIN)
                round_column = _round4(res, s0 - k2, res.scale4[:, g], res.min4[:, g])
            _quantize_group(w1, e1, u32[b0:b1, b0:b1], diag_u[b0:b1], s0 - b0, s1 - b0,
                            round_column)
        if b1 < k:
            w[:, b1:] -= e1 @ u32[b0:b1, b1:]
    return res


# ---- the quantizer ------------------------------------------------------------------------------

def quantize_mix_gptq(w: np.ndarray, h: np.ndarray, k4: int, n_outliers: int,
                      info: Optional[dict] = None) -> MixParts:
    """W [M, K] float32 and H [K, K] (the mean x x^T of the layer's inputs) -> MixParts with k4
    4-bit columns (a multiple of 32) and exactly n_outliers fp16 outliers, all in 2-bit columns,
    stored as residuals w - dequantized(w). info, if given, receives the Hessian-weighted error
    ('error', and 'error_rel' relative to tr(W H W^T)) and the seconds taken."""
    start = time.perf_counter()
    w = np.asarray(w, np.float32)
    m, k = w.shape
    h = np.asarray(h, np.float64)
    if h.shape != (k, k):
        raise ValueError(f"H: expected shape {(k, k)}, found {h.shape}")
    if k4 % GROUP or not 0 <= k4 <= k:
        raise ValueError(f"k4: expected a multiple of {GROUP} in 0..{k}, found {k4}")
    k2 = k - k4
    if not 0 <= n_outliers <= m * k2:
        raise ValueError(f"n_outliers: expected 0..{m * k2} (the 2-bit weights), found "
                         f"{n_outliers}")

    perm = mix_permutation(w, h, k4)
    u = _inverse_cholesky(_damped(h, DAMP)[np.ix_(perm, perm)])
    # the exact GPTQ loss weight of quantizing column j next
    col_weight = 1.0 / np.diagonal(u) ** 2
    wp = w[:, perm]
    outlier = _greedy_outliers(wp[:, :k2], col_weight[:k2], n_outliers, OUTLIER_ROUNDS,
                               OUTLIER_CLIP, CLIP2_MIN) if n_outliers else None
    mix = mix_parts(perm, _sweep(wp, u, col_weight, k2, outlier), outlier)
    if info is not None:
        from .layouts import dequantize_mix

        err = hessian_weighted_error(w, dequantize_mix(mix), h)
        info.update(error=err, error_rel=err / max(hessian_weighted_error(w, 0 * w, h), 1e-300),
                    seconds=time.perf_counter() - start)
    return mix


def mix_parts(perm: np.ndarray, res: _Result, outlier: Optional[np.ndarray]) -> MixParts:
    """MixParts of a sweep's result: the outliers (bool [M, K2], or None) as CSR rows with their
    columns in original indices, sorted."""
    m = res.q2.shape[0]
    rows, pos = (np.nonzero(outlier) if outlier is not None
                 else (np.zeros(0, np.int64), np.zeros(0, np.int64)))
    cols = perm[pos]
    vals = res.residual[rows, pos]
    sort = np.lexsort((cols, rows))
    return MixParts(perm=perm, q2=res.q2, scale_code2=res.code2, zero2=res.zero2,
                    super2=res.super2, q4=res.q4, scale4=res.scale4, min4=res.min4,
                    row_ptr=np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=m))]
                                           ).astype(np.uint32),
                    cols=cols[sort].astype(np.uint16), vals=vals[sort].astype(np.float16))


# ---- whole models -------------------------------------------------------------------------------

def calibrated_mix(hparams: dict, load, windows: list, storage: dict, sequential: bool = True,
                   progress: bool = False, report: Optional[dict] = None,
                   pack: bool = False) -> dict:
    """Quantizes every decoder linear weight named in `storage` (name -> (k4, n_outliers), e.g.
    from plan_mix) with quantize_mix_gptq, the Hessians coming from the numpy layer stack
    (calibration.run_layer_stack) run over `windows` (lists of token ids, e.g. from
    calibration.calibration_windows). hparams: the llama.* metadata; load(name): float32 weights
    of the original model (embedding, norms and linear layers). sequential=True: each layer is
    calibrated on the outputs of the already quantized layers before it (measured slightly better
    than collect_hessians' Hessians of the unquantized model, and needs no model file). Returns
    name -> MixParts (pack=True: their packed parts, pack_mix, so that a large model's results
    take no more memory than its file); report, if given, receives per-tensor 'errors' (relative
    Hessian-weighted error), 'seconds' and 'n_tokens'."""
    from .calibration import run_layer_stack
    from .layouts import dequantize_mix, pack_mix

    start = time.perf_counter()
    out = {}
    errors = {}

    def quantize(name, w, h):
        if name not in storage:
            return w
        k4, n_outliers = storage[name]
        info = {} if report is not None else None
        mix = quantize_mix_gptq(w, h, int(k4), int(n_outliers), info=info)
        out[name] = pack_mix(mix) if pack else mix
        if info is not None:
            errors[name] = info["error_rel"]
        return dequantize_mix(mix)

    run_layer_stack(hparams, load, windows, quantize, sequential=sequential, progress=progress)
    missing = sorted(set(storage) - set(out))
    if missing:
        raise KeyError(f"storage names no decoder linear weight: {', '.join(missing[:4])}")
    if report is not None:
        report.update(errors=errors, seconds=time.perf_counter() - start,
                      n_tokens=sum(len(w) for w in windows))
    return out


def model_sensitivities(hparams: dict, load, windows: list, fisher: dict,
                        progress: bool = False) -> dict:
    """name -> kl_gains(W, H, fisher[name]) of every decoder linear weight named in `fisher`,
    with H from the numpy layer stack over `windows` (unquantized, so no plan is needed yet)."""
    from .calibration import run_layer_stack

    out = {}

    def score(name, w, h):
        if name in fisher:
            out[name] = kl_gains(w, h, fisher[name])
        return w

    run_layer_stack(hparams, load, windows, score, sequential=False, progress=progress)
    return out
