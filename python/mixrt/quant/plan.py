# plan.py: the mix bit-budget planner: before anything is written, decides each matrix's 4-bit
# columns (k4) and outliers (nnz) so that the bytes of all parts (FORMAT.md 5.5, from part_sizes)
# stay within the budget. Tested by tests/test_quant_layouts.py.
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from .layouts import BLOCK2, GROUP, part_sizes


def k4_step(k: int) -> int:
    """The granularity of a matrix's 4-bit columns: 64 when K is a multiple of 64, so that K2 is
    too and the 2-bit rows need no padding; otherwise 32 (FORMAT.md requires K4 % 32 == 0)."""
    return BLOCK2 if k % BLOCK2 == 0 else GROUP


def outlier_count(m: int, k: int, k4: int, outlier_frac: float) -> int:
    """Outliers of an [M, K] matrix: round(outlier_frac x M x K), at most its 2-bit weights."""
    return min(round(outlier_frac * m * k), m * (k - k4))


def mix_bytes(m: int, k: int, k4: int, outlier_frac: float) -> int:
    """Bytes of all parts of an [M, K] mix matrix with k4 4-bit columns."""
    return sum(part_sizes("mix", m, k, k4, outlier_count(m, k, k4, outlier_frac)))


@dataclass(frozen=True)
class MixPlan:
    k4: list[int]  # 4-bit columns of each matrix
    nnz: list[int]  # outliers of each matrix
    bytes: int  # of all their parts
    bits: float  # 8 x bytes / weights: the achieved average bits per weight


def plan_mix(shapes, bits: float, outlier_frac: float, sensitivities=None) -> MixPlan:
    """Spends a budget of `bits` per weight (over all the [M, K] matrices of `shapes`) on 4-bit
    strips, greedily one strip of k4_step(K) columns at a time, each only if it still fits:

    * sensitivities None (uniform, the baseline): the matrix whose 4-bit fraction would stay
      lowest goes next, so all fractions stay as equal as strip sizes allow;
    * sensitivities, one float array [K] per matrix (a column's gain from 4 bits, e.g. Hessian
      diagonal x the 2-bit minus 4-bit error): the strip with the highest gain per byte goes next,
      a matrix's strips taking its columns by decreasing score (strip_permutation with these
      scores selects the same columns).

    Every matrix keeps outlier_count(M, K, k4, outlier_frac) outliers. Raises ValueError if even
    no 4-bit column exceeds the budget."""
    shapes = [(int(m), int(k)) for m, k in shapes]
    weights = sum(m * k for m, k in shapes)
    budget = math.floor(bits * weights / 8)
    k4 = [0] * len(shapes)
    cost = sum(mix_bytes(m, k, 0, outlier_frac) for m, k in shapes)
    if cost > budget:
        raise ValueError(f"bits: expected at least {8 * cost / weights:.4f}, the size of these "
                         f"matrices without 4-bit columns (outlier fraction {outlier_frac}), "
                         f"found {bits}")
    ranked = None if sensitivities is None else \
        [np.sort(np.asarray(s, np.float64))[::-1] for s in sensitivities]

    def candidate(i: int):
        """(priority, i, step bytes) of matrix i's next strip, or None if it has none left."""
        m, k = shapes[i]
        new = k4[i] + k4_step(k)
        if new > k:
            return None
        delta = mix_bytes(m, k, new, outlier_frac) - mix_bytes(m, k, k4[i], outlier_frac)
        if ranked is None:
            return new / k, i, delta
        return -ranked[i][k4[i]:new].sum() / delta, i, delta

    heap = [c for c in map(candidate, range(len(shapes))) if c is not None]
    heapq.heapify(heap)
    while heap:
        _, i, delta = heapq.heappop(heap)
        if cost + delta > budget:
            continue  # this matrix's next strip no longer fits; smaller ones still may
        cost += delta
        k4[i] += k4_step(shapes[i][1])
        following = candidate(i)
        if following is not None:
            heapq.heappush(heap, following)
    nnz = [outlier_count(m, k, k4_i, outlier_frac) for (m, k), k4_i in zip(shapes, k4)]
    return MixPlan(k4=k4, nnz=nnz, bytes=cost, bits=8 * cost / weights)
