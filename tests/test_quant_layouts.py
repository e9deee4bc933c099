# test_quant_layouts.py: the numpy reference of the q8, q4 and mix dtypes (mixrt.quant): packing
# against a literal byte-by-byte reading of FORMAT.md 5.3-5.5, hand-made examples, the quantizers
# (every pitfall of ../shared/docs/METHOD.md section 4), the bit-budget planner and the writer's
# multi-part tensors.
# Run: python -m pytest tests/test_quant_layouts.py -q -s  (needs no C++)
import math
import struct

import numpy as np
import pytest

from mixrt.format import ALIGNMENT, FormatError, MixrtWriter, read_mixrt
from mixrt.quant import (MixParts, asym_zero, bits_per_weight, decode_scales2, dequantize,
                         fit_groups2, fit_q4, k4_step, pack_mix, pack_q4, pack_q8, part_sizes,
                         plan_mix, quantize_mix_rtn, quantize_q4, quantize_q8,
                         quantize_super_scales, unpack_mix, unpack_q4, unpack_q8)
from mixrt.quant import layouts, rtn

SHAPES = [(3, 576), (2, 1536), (3, 577), (4, 32), (2, 64), (5, 100), (2, 1)]
SMOLLM2_LINEAR = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576),
                  (576, 1536)] * 30


def raw(parts) -> list[bytes]:
    return [np.ascontiguousarray(part).tobytes() for part in parts]


def mix_cases():
    for m, k in SHAPES:
        for k4 in sorted({0, 32 * (k // 4 // 32), 32 * (k // 32)}):
            yield m, k, k4


def random_mix(rng, m, k, k4, nnz) -> MixParts:
    k2 = k - k4
    g2 = layouts.padded_k2(k2) // 32
    rows = np.sort(rng.choice(m * k, size=nnz, replace=False)) if nnz else np.zeros(0, int)
    return MixParts(
        perm=rng.permutation(k), q2=rng.integers(0, 4, (m, k2)).astype(np.uint8),
        scale_code2=rng.integers(0, 64, (m, g2)).astype(np.uint8),
        zero2=rng.integers(0, 4, (m, g2)).astype(np.uint8),
        super2=rng.uniform(1e-4, 1e-2, (m, -(-g2 // 16))).astype(np.float16),
        q4=rng.integers(0, 16, (m, k4)).astype(np.uint8),
        scale4=rng.uniform(1e-3, 0.05, (m, k4 // 32)).astype(np.float16),
        min4=rng.uniform(-0.4, 0, (m, k4 // 32)).astype(np.float16),
        row_ptr=np.searchsorted(rows // k, np.arange(m + 1)).astype(np.uint32),
        cols=(rows % k).astype(np.uint16), vals=rng.normal(0, 0.5, nnz).astype(np.float16))


# ---- FORMAT.md 5.3-5.5 read literally, one value at a time -------------------------------------

def f16_at(data: bytes, index: int) -> np.float32:
    return np.float32(np.frombuffer(data, "<f2", 1, 2 * index)[0])


def u32_at(data: bytes, index: int) -> int:
    return struct.unpack_from("<I", data, 4 * index)[0]


def q4_code(data: bytes, r: int, j: int, kp: int) -> int:
    """Code of column j of row r: byte i of group g holds q(i) low and q(i + 16) high."""
    byte = data[r * kp // 2 + 16 * (j // 32) + j % 16]
    return byte & 15 if j % 32 < 16 else byte >> 4


def q2_code(data: bytes, r: int, j: int, k2p: int) -> int:
    """Code of 2-bit column j of row r: byte i of block b holds q(64b + i + 16t), bits 2t+1..2t."""
    byte = data[r * k2p // 4 + 16 * (j // 64) + j % 16]
    return (byte >> (2 * (j % 64 // 16))) & 3


def decode_literally(dtype: str, parts, m: int, k: int) -> np.ndarray:
    data = raw(parts)
    g = -(-k // 32)
    w = np.zeros((m, k), np.float32)
    if dtype == "q8":
        for r in range(m):
            for j in range(k):
                code = np.frombuffer(data[0], np.int8, 1, r * 32 * g + j)[0]
                w[r, j] = np.float32(code) * f16_at(data[1], r * g + j // 32)
        return w
    if dtype == "q4":
        for r in range(m):
            for j in range(k):
                q = q4_code(data[0], r, j, 32 * g)
                w[r, j] = (np.float32(q) * f16_at(data[1], r * g + j // 32)
                           + f16_at(data[2], r * g + j // 32))
        return w
    k4 = 2 * len(data[4]) // m
    k2 = k - k4
    k2p = 64 * -(-k2 // 64)
    g2, g4 = k2p // 32, k4 // 32
    b2 = -(-g2 // 16)
    perm = [u32_at(data[0], j) for j in range(k)]
    for r in range(m):
        for j in range(k2):
            code_byte = data[2][r * g2 + j // 32]
            scale = np.float32((code_byte & 63) + 1) * f16_at(data[3], r * b2 + j // 32 // 16)
            w[r, perm[j]] = (np.float32(q2_code(data[1], r, j, k2p))
                             - np.float32(code_byte >> 6)) * scale
        for j in range(k4):
            w[r, perm[k2 + j]] = (np.float32(q4_code(data[4], r, j, k4))
                                  * f16_at(data[5], r * g4 + j // 32)
                                  + f16_at(data[6], r * g4 + j // 32))
        for o in range(u32_at(data[7], r), u32_at(data[7], r + 1)):
            col = struct.unpack_from("<H", data[8], 2 * o)[0]
            w[r, col] += f16_at(data[9], o)
    return w


# ---- pack / unpack round trips -----------------------------------------------------------------

@pytest.mark.parametrize("m, k", SHAPES)
def test_q8_and_q4_round_trip_bit_for_bit(m, k):
    rng = np.random.default_rng(k)
    g = -(-k // 32)
    codes = rng.integers(-128, 128, (m, k)).astype(np.int8)
    scales = rng.uniform(1e-3, 0.05, (m, g)).astype(np.float16)
    parts = pack_q8(codes, scales)
    assert [p.nbytes for p in parts] == part_sizes("q8", m, k)
    for given in (parts, [np.frombuffer(b, np.uint8) for b in raw(parts)]):
        back_codes, back_scales = unpack_q8(given, m, k)
        assert np.array_equal(back_codes, codes) and np.array_equal(back_scales, scales)
    assert raw(pack_q8(*unpack_q8(parts, m, k))) == raw(parts)
    assert not parts[0][:, k:].any()  # padding codes are 0
    assert np.array_equal(dequantize("q8", parts, m, k), decode_literally("q8", parts, m, k))

    q = rng.integers(0, 16, (m, k)).astype(np.uint8)
    mins = rng.uniform(-0.4, 0, (m, g)).astype(np.float16)
    parts = pack_q4(q, scales, mins)
    assert [p.nbytes for p in parts] == part_sizes("q4", m, k)
    back = unpack_q4([np.frombuffer(b, np.uint8) for b in raw(parts)], m, k)
    assert all(np.array_equal(a, b) for a, b in zip(back, (q, scales, mins)))
    assert raw(pack_q4(*back)) == raw(parts)
    assert all(q4_code(raw(parts)[0], r, j, 32 * g) == 0  # padding codes are 0
               for r in range(m) for j in range(k, 32 * g))
    assert np.array_equal(dequantize("q4", parts, m, k), decode_literally("q4", parts, m, k))


@pytest.mark.parametrize("m, k, k4", list(mix_cases()))
def test_mix_round_trip_bit_for_bit(m, k, k4):
    rng = np.random.default_rng(m * k + k4)
    mix = random_mix(rng, m, k, k4, nnz=min(m * k, 7))
    parts = pack_mix(mix)
    assert [p.nbytes for p in parts] == part_sizes("mix", m, k, k4, mix.nnz)
    back = unpack_mix([np.frombuffer(b, np.uint8) for b in raw(parts)], m, k)
    for name in MixParts.__dataclass_fields__:
        assert np.array_equal(getattr(back, name), getattr(mix, name)), name
        assert getattr(back, name).dtype == getattr(mix, name).dtype or name == "perm", name
    assert raw(pack_mix(back)) == raw(parts)
    k2p = layouts.padded_k2(k - k4)
    assert all(q2_code(raw(parts)[1], r, j, k2p) == 0 for r in range(m)
               for j in range(k - k4, k2p))  # padding codes are 0
    assert np.array_equal(dequantize("mix", parts, m, k), decode_literally("mix", parts, m, k))


# ---- hand-made examples ------------------------------------------------------------------------

def test_q8_by_hand():
    codes = np.zeros((1, 33), np.int8)
    codes[0, :3] = [1, -2, 127]
    codes[0, 32] = -128
    parts = pack_q8(codes, np.array([[0.5, 0.25]], np.float16))
    assert raw(parts)[0][:3] == bytes([1, 0xFE, 127])
    assert raw(parts)[0][32:] == bytes([0x80]) + bytes(31)
    w = dequantize("q8", parts, 1, 33)
    assert w[0, :3].tolist() == [0.5, -1.0, 63.5] and w[0, 32] == -32.0 and not w[0, 3:32].any()


def test_q4_by_hand():
    q = (np.arange(32) // 2).astype(np.uint8)[None]  # 0 0 1 1 ... 15 15
    parts = pack_q4(q, np.array([[0.5]], np.float16), np.array([[-4]], np.float16))
    assert raw(parts)[0][0] == 0x80 and raw(parts)[0][15] == 0xF7  # q0 | q16 << 4, q15 | q31 << 4
    assert dequantize("q4", parts, 1, 32)[0].tolist() == (np.arange(32) // 2 * 0.5 - 4).tolist()


def test_mix_by_hand():
    """K = 40: 2-bit columns 32..39 (8 codes, one block of 64 with padding), 4-bit columns 0..31,
    one outlier at column 35."""
    mix = MixParts(perm=np.r_[32:40, 0:32], q2=np.array([[0, 1, 2, 3, 3, 2, 1, 0]], np.uint8),
                   scale_code2=np.array([[3, 0]], np.uint8), zero2=np.array([[1, 0]], np.uint8),
                   super2=np.array([[0.25]], np.float16), q4=np.full((1, 32), 2, np.uint8),
                   scale4=np.array([[0.5]], np.float16), min4=np.array([[-1]], np.float16),
                   row_ptr=np.array([0, 1], np.uint32), cols=np.array([35], np.uint16),
                   vals=np.array([0.5], np.float16))
    parts = pack_mix(mix)
    assert raw(parts)[1] == bytes([0, 1, 2, 3, 3, 2, 1, 0]) + bytes(8)
    assert raw(parts)[2] == bytes([3 | 1 << 6, 0])
    assert raw(parts)[4] == bytes([0x22] * 16)
    w = dequantize("mix", parts, 1, 40)  # scale (3 + 1) x 0.25 = 1, zero 1: W2 = q - 1
    assert w[0, :32].tolist() == [0.0] * 32  # 2 x 0.5 - 1
    assert w[0, 32:].tolist() == [-1, 0, 1, 2.5, 2, 1, 0, -1]


# ---- the quantizers ----------------------------------------------------------------------------

def gaussian(rng, m, k, shift_groups=True) -> np.ndarray:
    """Gaussian weights; some groups shifted so that their range excludes 0."""
    w = rng.normal(0, 0.02, (m, k)).astype(np.float32)
    if shift_groups:
        w[::2, :min(k, 32)] += 0.1
        w[1::3, -min(k, 32):] -= 0.1
    return w


@pytest.mark.parametrize("k", [576, 577, 100, 32, 1])
def test_q8_and_q4_error_within_half_a_step(k):
    """|w - w'| <= scale / 2 per element (K = 577, 1: the last group has one column, constant)."""
    w = gaussian(np.random.default_rng(k), 6, k)
    w[0, :min(k, 32)] = 0.75  # a constant group
    for dtype, quantize in (("q8", quantize_q8), ("q4", quantize_q4)):
        parts = quantize(w)
        scales = np.asarray(parts[1], np.float32)[:, np.arange(k) // 32]
        error = np.abs(dequantize(dtype, parts, *w.shape) - w)
        # a constant group (scale 0) holds its value rounded to f16: half an f16 ulp
        assert np.all(error <= np.where(scales > 0, scales / 2 + 1e-6 * np.abs(w),
                                        2 ** -11 * np.abs(w))), dtype
        steps = error[scales > 0] / scales[scales > 0]
        print(f"\n{dtype} K={k}: max |w - w'| / scale {np.max(steps, initial=0):.3f}")
    q, scales, mins = fit_q4(w)
    assert scales[0, 0] == 0 and mins[0, 0] == 0.75 and not q[0, :32].any()  # constant: exact


def test_super_scale_error_bound():
    """Second-level codes: a scale s in [S/2, 64 S] decodes within S/2 ((c + 1) S, c = round(s/S)
    - 1), a smaller one to S; none to 0. Worst relative errors are printed per range of s/max."""
    rng = np.random.default_rng(0)
    scales = np.exp(rng.uniform(np.log(1e-5), np.log(1e-1), (64, 80))).astype(np.float32)
    scales[0] = 0  # an all-constant block
    codes, super2 = quantize_super_scales(scales)
    decoded = decode_scales2(codes, super2)
    big_s = super2.astype(np.float32)[:, np.arange(80) // 16]
    assert np.all(decoded > 0) and np.all(super2 >= rtn.SUPER_FLOOR)
    inside = scales >= big_s / 2
    assert np.all(np.abs(decoded - scales)[inside] <= big_s[inside] / 2 * (1 + 1e-6))
    assert np.all(decoded[~inside] == big_s[~inside])
    block_max = np.repeat(scales.reshape(64, 5, 16).max(axis=2), 16, axis=1)
    relative = np.abs(decoded - scales) / np.maximum(scales, 1e-30)
    top = scales == block_max
    assert np.all(relative[top & (scales > 0)] <= 1 / 128 + 2 ** -10)
    for low in (1 / 2, 1 / 8, 1 / 32):
        sel = (scales >= low * block_max) & (scales > 0)
        print(f"\nsecond-level scales >= {low:.3f} x block max: worst relative error "
              f"{relative[sel].max():.4f} (bound {0.5 / (64 * low - 0.5):.4f})")
        assert relative[sel].max() <= 0.5 / (64 * low - 0.5) + 2 ** -10


def test_zero_point_is_rounded_and_clamped():
    """Pitfall 1: groups whose range excludes 0 get zero 0 (all positive) or 3 (all negative) and
    a scale covering the range, so no weight is off by more than half a step."""
    assert asym_zero(np.array([-0.26, 0.0, -10.0]), np.array([0.1, 0.1, 0.1])).tolist() == [3, 0, 3]
    w = np.stack([np.linspace(0.5, 1.0, 32), np.linspace(-1.0, -0.5, 32),
                  np.linspace(-0.2, 1.0, 32)]).astype(np.float32)
    mix = quantize_mix_rtn(w, k4=0, n_outliers=0, clip_search=False)
    assert mix.zero2[:, 0].tolist()[:2] == [0, 3]
    scale = decode_scales2(mix.scale_code2, mix.super2)[:, :1]
    assert np.all(np.abs(layouts.dequantize_mix(mix) - w) <= scale / 2 + 1e-6)


def test_constant_groups_and_zero_rows():
    """Pitfall 2: constant groups are exact up to the f16 super-scale, all-zero rows exactly 0,
    and no scale decodes to 0."""
    w = np.zeros((4, 100), np.float32)
    w[0] = 0.7
    w[1, :32] = -0.3
    w[2, 40:] = 0.125
    for clip_search in (False, True):
        mix = quantize_mix_rtn(w, k4=0, n_outliers=0, clip_search=clip_search)
        assert np.all(decode_scales2(mix.scale_code2, mix.super2) > 0)
        w_hat = layouts.dequantize_mix(mix)
        assert np.allclose(w_hat, w, rtol=2 ** -9, atol=0) and not w_hat[3].any()
    zeros = quantize_mix_rtn(np.zeros((2, 64), np.float32), k4=0, n_outliers=0)
    assert np.all(zeros.super2 >= rtn.SUPER_FLOOR) and not layouts.dequantize_mix(zeros).any()
    zeros.super2[0, 0] = 0
    with pytest.raises(ValueError, match="super2: expected > 0"):
        pack_mix(zeros)


def test_outliers_are_removed_before_group_statistics():
    """Pitfall 3: one large weight in a group of small ones becomes the outlier (original column
    index, behind the permutation), and the group's scale is refitted without it."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.01, (8, 128)).astype(np.float32)
    w[:, :64] = rng.normal(0, 1, (8, 64))  # wide columns: the 4-bit strips
    w[3, 100] = 0.6
    for clip_search in (False, True):
        mix = quantize_mix_rtn(w, k4=64, n_outliers=1, clip_search=clip_search)
        assert mix.perm[:64].tolist() == list(range(64, 128))
        assert mix.cols.tolist() == [100] and mix.row_ptr.tolist() == [0] * 4 + [1] * 5
        scale = decode_scales2(mix.scale_code2, mix.super2)[3, (100 - 64) // 32]
        assert scale < 0.05 / 3  # the range of the small weights, not 0.6
        w_hat = layouts.dequantize_mix(mix)
        assert abs(w_hat[3, 100] - 0.6) <= 0.6 * 2 ** -11
        without = layouts.dequantize_mix(quantize_mix_rtn(w, 64, 0, clip_search=clip_search))
        group = np.s_[3, 96:128]
        assert np.sum((w_hat - w)[group] ** 2) < np.sum((without - w)[group] ** 2) / 5


def test_outlier_gain_of_a_range_setting_weight():
    """The weight that sets a group's range has little error of its own (it sits on the grid's
    end) but the largest gain; elsewhere the gain is the weight's own squared error."""
    wg = np.full((1, 1, 32), 0.01, np.float32)
    wg[0, 0, ::2] = -0.01
    wg[0, 0, 7] = 0.6
    mask = np.zeros(wg.shape, bool)
    mask[0, 0, 30:] = True
    gains = rtn.outlier_gains(wg, mask, (1.0,))
    assert gains[0, 0].argmax() == 7 and np.all(gains[0, 0, 30:] == -1)
    assert gains[0, 0, 7] > 20 * np.sort(gains[0, 0])[-2]


def test_permuted_product_equals_dense_product():
    """Pitfall 6: y = W2 x[perm[:K2]] + W4 x[perm[K2:]] + outliers (FORMAT.md 5.5) equals the
    dequantized matrix times x."""
    rng = np.random.default_rng(2)
    w = gaussian(rng, 24, 577)
    mix = quantize_mix_rtn(w, k4=96, n_outliers=40)
    x = rng.normal(0, 1, 577)
    k2 = 577 - 96
    w2 = layouts.dequantize_w2(mix).astype(np.float64)
    w4 = dequantize("q4", pack_q4(mix.q4, mix.scale4, mix.min4), 24, 96).astype(np.float64)
    y = w2 @ x[mix.perm[:k2]] + w4 @ x[mix.perm[k2:]]
    np.add.at(y, layouts.outlier_rows(mix.row_ptr), mix.vals.astype(np.float64) * x[mix.cols])
    dense = dequantize("mix", pack_mix(mix), 24, 577).astype(np.float64)
    assert np.allclose(y, dense @ x, rtol=1e-6, atol=1e-9)
    assert np.allclose(w[:, mix.perm] @ x[mix.perm], w @ x, rtol=1e-6, atol=1e-9)


def test_clip_search_is_never_worse():
    rng = np.random.default_rng(3)
    wg = rng.standard_t(4, (64, 32, 32)).astype(np.float32) * 0.02
    lo, hi = rtn.group_ranges(wg)
    super2 = rtn.super_scales((hi - lo) / 3)

    def group_errors(factors):
        code, zero = fit_groups2(wg, super2, clip_factors=factors)
        scale = decode_scales2(code, super2)[..., None]
        q = rtn.quantize_asym(wg, scale, zero[..., None])
        return (((q.astype(np.float32) - zero[..., None]) * scale - wg) ** 2).sum(axis=2)

    plain, searched = group_errors((1.0,)), group_errors(rtn.CLIP_FACTORS)
    print(f"\nclipping search: squared error {searched.sum() / plain.sum():.3f} x that of min/max")
    assert np.all(searched <= plain) and searched.sum() < 0.9 * plain.sum()


@pytest.mark.parametrize("k, k4, n_outliers", [(576, 64, 300), (1536, 320, 0), (577, 96, 17),
                                               (100, 32, 5), (64, 0, 3), (32, 32, 0), (1, 0, 0)])
def test_mix_rtn_shapes(k, k4, n_outliers):
    w = gaussian(np.random.default_rng(k), 16, k)
    mix = quantize_mix_rtn(w, k4, n_outliers)
    mix.validate()
    assert (mix.k4, mix.nnz) == (k4, n_outliers)
    assert np.array_equal(np.sort(mix.perm[k - k4:]),
                          np.sort(np.argsort(-(w.max(0) - w.min(0)), kind="stable")[:k4]))
    error = np.linalg.norm(layouts.dequantize_mix(mix) - w) / np.linalg.norm(w)
    print(f"\nmix RTN K={k} K4={k4} outliers={n_outliers}: relative Frobenius error {error:.3f}")
    assert error < (0.05 if k == k4 else 0.4)
    with pytest.raises(ValueError, match="mix outliers"):
        quantize_mix_rtn(w, k4, 16 * (k - k4) + 1)


# ---- the planner -------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [2.5, 2.9, 3.3])
def test_planner_meets_the_budget_on_smollm2_shapes(bits):
    plan = plan_mix(SMOLLM2_LINEAR, bits, 0.003)
    weights = sum(m * k for m, k in SMOLLM2_LINEAR)
    stored = sum(sum(part_sizes("mix", m, k, k4, nnz))
                 for (m, k), k4, nnz in zip(SMOLLM2_LINEAR, plan.k4, plan.nnz))
    assert stored == plan.bytes and plan.bits == 8 * stored / weights <= bits
    smallest_step = min(sum(part_sizes("mix", m, k, 64, 0)) - sum(part_sizes("mix", m, k, 0, 0))
                        for m, k in SMOLLM2_LINEAR)
    assert plan.bits > bits - 8 * smallest_step / weights  # no strip that fits was left out
    assert all(k4 % 64 == 0 for k4 in plan.k4)
    assert plan.nnz == [round(0.003 * m * k) for m, k in SMOLLM2_LINEAR]
    fractions = [k4 / k for (m, k), k4 in zip(SMOLLM2_LINEAR, plan.k4)]
    print(f"\nbudget {bits}: achieved {plan.bits:.4f} bits per weight, 4-bit column fraction "
          f"{min(fractions):.3f}..{max(fractions):.3f}")
    assert max(fractions) - min(fractions) <= 2 * 64 / 576


def test_planner_sensitivity_hook_and_refusals():
    shapes = [(64, 256)] * 4
    scores = [np.full(256, 1.0), np.full(256, 10.0), np.full(256, 1.0), np.full(256, 0.1)]
    plan = plan_mix(shapes, 3.0, 0.0, sensitivities=scores)
    assert plan.k4[1] == max(plan.k4) and plan.k4[3] == min(plan.k4) and plan.bits <= 3.0
    assert plan_mix([(64, 172)], 3.5, 0.0).k4[0] % 32 == 0 and k4_step(172) == 32
    with pytest.raises(ValueError, match="bits: expected at least 2.4875, .* found 2.0"):
        plan_mix(SMOLLM2_LINEAR, 2.0, 0.003)


# ---- the writer's multi-part tensors -----------------------------------------------------------

def test_quantized_tensors_in_a_file(tmp_path):
    """Part sizes in the table are the layouts' part sizes, every part aligned; the bits per weight
    from the bytes read back equal those of the parts written; the values decode bit for bit."""
    rng = np.random.default_rng(4)
    w = gaussian(rng, 40, 577)
    written = {"a": ("q8", quantize_q8(w)), "b": ("q4", quantize_q4(w)),
               "c": ("mix", pack_mix(quantize_mix_rtn(w, 96, 50)))}
    with MixrtWriter(tmp_path / "q.mixrt") as writer:
        writer.declare_tensor("n", "f32", (7,))
        for name, (dtype, parts) in written.items():
            writer.declare_tensor(name, dtype, w.shape, **({"k4": 96, "nnz": 50}
                                                           if dtype == "mix" else {}))
        writer.write_tensor("n", np.ones(7, np.float32))
        for name, (_, parts) in written.items():
            writer.write_tensor(name, parts)
    file = read_mixrt(tmp_path / "q.mixrt")
    assert file.header["version_minor"] == 1
    for name, (dtype, parts) in written.items():
        tensor = file.tensors[name]
        assert tensor.dtype_name == dtype
        assert [size for _, size in tensor.parts] == part_sizes(dtype, 40, 577, *(
            (96, 50) if dtype == "mix" else ()))
        assert all(offset % ALIGNMENT == 0 for offset, _ in tensor.parts)
        bits = bits_per_weight(dtype, tensor.part_views(), 40, 577)
        assert bits == bits_per_weight(dtype, parts, 40, 577) == \
            8 * sum(size for _, size in tensor.parts) / (40 * 577)
        assert raw(tensor.part_views()) == raw(parts)
        assert np.array_equal(tensor.dequantize(), dequantize(dtype, parts, 40, 577))
        print(f"\n{dtype} [40, 577]: {bits:.3f} bits per weight")
    assert np.array_equal(file.tensors["n"].dequantize(), np.ones(7, np.float32))


@pytest.mark.parametrize("declare, data, message", [
    (("q8", (4, 64)), lambda p: p[:1], "expected a list of 2 parts"),
    (("q8", (4, 64)), lambda p: [p[0], p[1][:2]], "part 1 expected 16 bytes, found 8"),
    (("q8", (4, 64)), lambda p: [p[0], p[1].astype(np.float32)[:, :1]],
     "part 1 expected float16 values or raw bytes, found float32"),
    (("q8", (4, 64)), lambda p: [p[0], np.full((4, 2), np.inf, np.float16)],
     "part 1 values expected finite"),
    (("q4", (64,)), None, r"a q4 tensor expected 2 dims, found \[64\]"),
    (("mix", (4, 64), 16), None, "k4 expected a multiple of 32 in 0..64, found 16"),
    (("mix", (4, 70000)), None, "mix K expected <= 65536"),
    (("q8", (4, 64), 32), None, "k4 and nnz expected only for mix"),
])
def test_writer_refuses_bad_parts(tmp_path, declare, data, message):
    with pytest.raises(FormatError, match=message), MixrtWriter(tmp_path / "m.mixrt") as writer:
        writer.declare_tensor("w", *declare)
        writer.write_tensor("w", data(quantize_q8(np.ones((4, 64), np.float32))))
    assert list(tmp_path.iterdir()) == []


def test_float_files_stay_version_1_0(tmp_path):
    with MixrtWriter(tmp_path / "f.mixrt") as writer:
        writer.declare_tensor("w", "f16", (2, 2))
        writer.write_tensor("w", np.ones((2, 2), np.float32))
    assert read_mixrt(tmp_path / "f.mixrt").header["version_minor"] == 0
    assert math.isclose(bits_per_weight("f16", [np.ones((2, 2), np.float16)], 2, 2), 16)
