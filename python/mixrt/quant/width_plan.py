# width_plan.py: the bit-budget planner of the searched block-format recipe (`--recipe bfp-search`):
# each decoder linear matrix gets one of several block formats (bfp6, bfp5, bfp4, bfp3) so that the
# bytes of all of them stay within the budget and the predicted KL divergence (the sum over
# matrices of quant.gptq.predicted_kl, measured on calibration text) is smallest, by greedy
# upgrades: from the narrowest format everywhere, repeatedly the upgrade that saves the most KL per
# added byte and still fits. Tested by tests/test_blockfp.py.
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WidthPlan:
    choice: list[str]  # the format of each matrix
    bytes: int  # of all of them
    bits: float  # 8 x bytes / weights
    predicted_kl: float  # sum of the chosen formats' costs


def plan_widths(costs: list[dict], sizes: list[dict], weights: int, bits: float) -> WidthPlan:
    """costs[i][fmt]: the predicted KL of matrix i stored in fmt; sizes[i][fmt]: its bytes then
    (every format of costs[i]); weights: the matrices' total element count; bits: the budget per
    weight. ValueError when even the smallest formats exceed the budget."""
    budget = bits * weights / 8
    choice = [min(size, key=size.get) for size in sizes]
    used = sum(size[fmt] for size, fmt in zip(sizes, choice))
    if used > budget:
        raise ValueError(f"bits: expected at least {8 * used / weights:.3f} (every matrix in its "
                         f"smallest format), found {bits}")
    while True:
        best = None  # (KL saved per byte, matrix, format)
        for i, (cost, size) in enumerate(zip(costs, sizes)):
            for fmt, extra in ((f, size[f] - size[choice[i]]) for f in size):
                saved = cost[choice[i]] - cost[fmt]
                if extra > 0 and saved > 0 and used + extra <= budget:
                    if best is None or saved / extra > best[0]:
                        best = (saved / extra, i, fmt)
        if best is None:
            break
        _, i, fmt = best
        used += sizes[i][fmt] - sizes[i][choice[i]]
        choice[i] = fmt
    return WidthPlan(choice, used, 8 * used / weights, sum(c[f] for c, f in zip(costs, choice)))
