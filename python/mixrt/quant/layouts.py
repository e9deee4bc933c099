# layouts.py: the one numpy reference of the tensor layouts of FORMAT.md 5 (f32, f16, q8, q4, mix;
# the block formats bfp*/mx* of 5.6 are quant/blockfp.py's and quik (5.7) quant/quik.py's,
# dispatched from here): part sizes, bit
# packing, unpacking and float32 dequantization; the C++ decoders are tested bit for bit against it.
# Tested by tests/test_quant_layouts.py.
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from .blockfp import BLOCK_FORMATS
from . import blockfp, quik

GROUP = 32  # values per group along K (FORMAT.md 5.2)
SUPER_GROUPS = 16  # 2-bit groups per super-scale (FORMAT.md 5.5)
BLOCK2 = 64  # columns per packed 2-bit block (16 bytes)
SCALE_CODES = 64  # 6-bit 2-bit-group scale codes c: scale = (c + 1) x S
MAX_MIX_K = 65536  # outlier columns are u16

# The little-endian numpy type of every part of each dtype, in part order.
PART_DTYPES = {
    "f32": (np.dtype("<f4"),),
    "f16": (np.dtype("<f2"),),
    "q8": (np.dtype("i1"), np.dtype("<f2")),
    "q4": (np.dtype("u1"), np.dtype("<f2"), np.dtype("<f2")),
    "mix": (np.dtype("<u4"), np.dtype("u1"), np.dtype("u1"), np.dtype("<f2"), np.dtype("u1"),
            np.dtype("<f2"), np.dtype("<f2"), np.dtype("<u4"), np.dtype("<u2"), np.dtype("<f2")),
    **{name: (np.dtype("u1"), np.dtype("u1")) for name in BLOCK_FORMATS},
    "quik": (np.dtype("<u4"), np.dtype("u1"), np.dtype("<f2"), np.dtype("<f2")),
}


def groups(k: int) -> int:
    """G = ceil(K / 32): the groups of 32 along K of a row of K values."""
    return -(-k // GROUP)


def padded_k2(k2: int) -> int:
    """K2p = 64 ceil(K2 / 64): the 2-bit columns of a mix row with its padding."""
    return -(-k2 // BLOCK2) * BLOCK2


def part_shapes(dtype: str, m: int, k: int, k4: int = 0, nnz: int = 0,
                out_cols: int = 0) -> list[tuple[int, ...]]:
    """The shape of each part (in units of its PART_DTYPES type) of an [M, K] tensor."""
    if dtype in ("f32", "f16"):
        return [(m, k)]
    g = groups(k)
    if dtype == "q8":
        return [(m, GROUP * g), (m, g)]
    if dtype == "q4":
        return [(m, GROUP * g // 2), (m, g), (m, g)]
    if dtype in BLOCK_FORMATS:
        return blockfp.part_shapes(BLOCK_FORMATS[dtype], m, k)
    if dtype == "quik":
        return quik.part_shapes(m, k, out_cols)
    if dtype != "mix":
        raise ValueError(f"dtype: expected one of {', '.join(PART_DTYPES)}, found {dtype!r}")
    if k4 % GROUP or not 0 <= k4 <= k:
        raise ValueError(f"mix k4: expected a multiple of {GROUP} in 0..{k}, found {k4}")
    k2p = padded_k2(k - k4)
    g2 = k2p // GROUP
    return [(k,), (m, k2p // 4), (m, g2), (m, -(-g2 // SUPER_GROUPS)),
            (m, k4 // 2), (m, k4 // GROUP), (m, k4 // GROUP), (m + 1,), (nnz,), (nnz,)]


def part_sizes(dtype: str, m: int, k: int, k4: int = 0, nnz: int = 0, out_cols: int = 0) -> list[int]:
    """The exact byte size of each part of an [M, K] tensor of `dtype` (FORMAT.md 5); k4 and nnz
    (4-bit columns and outliers) only matter for mix, out_cols (fp16 columns) for quik. f32/f16 of
    other ranks: pass M=1, K=size."""
    return [math.prod(shape) * part_dtype.itemsize
            for shape, part_dtype in zip(part_shapes(dtype, m, k, k4, nnz, out_cols), PART_DTYPES[dtype])]


def derived_counts(dtype: str, sizes: list[int], m: int) -> dict:
    """What a reader derives from the part byte sizes: mix k4 and nnz, quik out_cols."""
    if dtype == "mix":
        return {"k4": 2 * sizes[4] // m, "nnz": sizes[8] // 2}
    if dtype == "quik":
        return {"out_cols": sizes[3] // (2 * m)}
    return {}


def bits_per_weight(dtype: str, parts, m: int, k: int) -> float:
    """8 x (bytes of all parts) / (M x K) (FORMAT.md 5.2), from the parts themselves; checks that
    they have the sizes the dtype defines (k4 and nnz derived as a reader does)."""
    sizes = [np.asarray(part).nbytes for part in parts]
    expected = part_sizes(dtype, m, k, **derived_counts(dtype, sizes, m))
    if sizes != expected:
        raise ValueError(f"{dtype} [{m}, {k}] parts: sizes expected {expected}, found {sizes}")
    return 8 * sum(sizes) / (m * k)


def _typed(parts, dtype: str, m: int, k: int, k4: int = 0, nnz: int = 0, out_cols: int = 0) -> list[np.ndarray]:
    """The parts as arrays of their FORMAT.md types and shapes, whether given so (as the pack_*
    functions return them) or as raw bytes (as read_mixrt exposes them)."""
    shapes = part_shapes(dtype, m, k, k4, nnz, out_cols)
    if len(parts) != len(shapes):
        raise ValueError(f"{dtype}: expected {len(shapes)} parts, found {len(parts)}")
    typed = []
    for i, (part, shape, part_dtype) in enumerate(zip(parts, shapes, PART_DTYPES[dtype])):
        raw = np.ascontiguousarray(part).reshape(-1).view(np.uint8)
        if raw.size != math.prod(shape) * part_dtype.itemsize:
            raise ValueError(f"{dtype} part {i}: expected {math.prod(shape) * part_dtype.itemsize} "
                             f"bytes, found {raw.size}")
        typed.append(raw.view(part_dtype).reshape(shape))
    return typed


def _pad_columns(codes: np.ndarray, width: int, dtype=np.uint8) -> np.ndarray:
    """Codes [M, K] as [M, width] of `dtype` with zero codes in the padding columns."""
    padded = np.zeros((codes.shape[0], width), dtype)
    padded[:, :codes.shape[1]] = codes
    return padded


def _check_codes(name: str, codes: np.ndarray, top: int, bottom: int = 0) -> None:
    if codes.size and (codes.min() < bottom or codes.max() > top):
        raise ValueError(f"{name}: expected codes in {bottom}..{top}, "
                         f"found {codes.min()}..{codes.max()}")


# ---- q8 (FORMAT.md 5.3) ------------------------------------------------------------------------

def pack_q8(codes: np.ndarray, scales: np.ndarray) -> list[np.ndarray]:
    """codes int8 [M, K] (zero padding to Kp added here; codes already [M, Kp] with zero padding
    give the same parts), scales f16 [M, G] -> the 2 parts."""
    m, k = codes.shape
    _check_codes("q8 codes", codes, 127, -128)
    return [_pad_columns(codes, GROUP * groups(k), np.int8),
            np.asarray(scales, "<f2").reshape(m, groups(k))]


def unpack_q8(parts, m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The parts of an [M, K] q8 tensor -> (codes int8 [M, K], scales f16 [M, G])."""
    codes, scales = _typed(parts, "q8", m, k)
    return codes[:, :k], scales


# ---- q4 (FORMAT.md 5.4) ------------------------------------------------------------------------

def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """Codes 0..15 [M, 32 G] -> bytes [M, 16 G]: byte i of a group holds q(i) in its low nibble
    and q(i + 16) in its high nibble."""
    m, kp = q.shape
    q = q.reshape(m, kp // GROUP, 2, GROUP // 2)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(m, kp // 2)


def _unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    m, half = packed.shape
    packed = packed.reshape(m, half // (GROUP // 2), 1, GROUP // 2)
    return np.concatenate([packed & 0x0F, packed >> 4], axis=2).reshape(m, 2 * half)


def pack_q4(q: np.ndarray, scales: np.ndarray, mins: np.ndarray) -> list[np.ndarray]:
    """q uint8 0..15 [M, K] (zero padding to Kp added here, or already there), scales and mins
    f16 [M, G] -> the 3 parts."""
    m, k = q.shape
    _check_codes("q4 codes", q, 15)
    return [_pack_nibbles(_pad_columns(q, GROUP * groups(k))),
            np.asarray(scales, "<f2").reshape(m, groups(k)),
            np.asarray(mins, "<f2").reshape(m, groups(k))]


def unpack_q4(parts, m: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parts of an [M, K] q4 tensor -> (q uint8 [M, K], scales f16 [M, G], mins f16 [M, G])."""
    codes, scales, mins = _typed(parts, "q4", m, k)
    return _unpack_nibbles(codes)[:, :k], scales, mins


def _dequantize_q4(q: np.ndarray, scales: np.ndarray, mins: np.ndarray) -> np.ndarray:
    """w = q x scale + min in float32 (a product rounded to float32, then a rounded sum; no fused
    multiply-add), for q [M, K] with K <= 32 G."""
    m, k = q.shape
    column_group = np.arange(k) // GROUP
    return (q.astype(np.float32) * scales.astype(np.float32)[:, column_group]
            + mins.astype(np.float32)[:, column_group])


# ---- mix (FORMAT.md 5.5) -----------------------------------------------------------------------

@dataclass
class MixParts:
    """A mix tensor [M, K] before bit packing. Columns of q2 and q4 are in `perm` order."""

    perm: np.ndarray  # int64 [K]: first K2 = the 2-bit columns, last K4 = the 4-bit columns
    q2: np.ndarray  # uint8 [M, K2], codes 0..3
    scale_code2: np.ndarray  # uint8 [M, G2], 0..63, G2 = K2p / 32
    zero2: np.ndarray  # uint8 [M, G2], 0..3
    super2: np.ndarray  # float16 [M, B2], B2 = ceil(G2 / 16)
    q4: np.ndarray  # uint8 [M, K4], codes 0..15
    scale4: np.ndarray  # float16 [M, K4 / 32]
    min4: np.ndarray  # float16 [M, K4 / 32]
    row_ptr: np.ndarray  # uint32 [M + 1]
    cols: np.ndarray  # uint16 [nnz]: original column, increasing within a row
    vals: np.ndarray  # float16 [nnz]: residual w - dequantized(w)

    @property
    def shape(self) -> tuple[int, int]:
        return self.q2.shape[0], self.perm.size

    @property
    def k4(self) -> int:
        return self.q4.shape[1]

    @property
    def nnz(self) -> int:
        return self.cols.size

    def validate(self) -> None:
        """Raises ValueError unless every rule of FORMAT.md 5.5 and 6.12 holds."""
        m, k = self.shape
        if k > MAX_MIX_K:
            raise ValueError(f"mix: K expected <= {MAX_MIX_K}, found {k}")
        k2 = k - self.k4
        g2 = padded_k2(k2) // GROUP
        expected = {"perm": (k,), "q2": (m, k2), "scale_code2": (m, g2), "zero2": (m, g2),
                    "super2": (m, -(-g2 // SUPER_GROUPS)), "q4": (m, self.k4),
                    "scale4": (m, self.k4 // GROUP), "min4": (m, self.k4 // GROUP),
                    "row_ptr": (m + 1,), "cols": (self.nnz,), "vals": (self.nnz,)}
        for field in fields(self):
            found = getattr(self, field.name).shape
            if found != expected[field.name]:
                raise ValueError(f"mix {field.name}: shape expected {expected[field.name]}, "
                                 f"found {found}")
        if self.k4 % GROUP:
            raise ValueError(f"mix: K4 expected a multiple of {GROUP}, found {self.k4}")
        if not np.array_equal(np.sort(self.perm), np.arange(k)):
            raise ValueError("mix perm: expected a permutation of 0..K-1")
        for name, top in (("q2", 3), ("scale_code2", SCALE_CODES - 1), ("zero2", 3), ("q4", 15)):
            _check_codes(f"mix {name}", getattr(self, name), top)
        row_ptr = self.row_ptr.astype(np.int64)
        if row_ptr[0] != 0 or row_ptr[-1] != self.nnz or np.any(np.diff(row_ptr) < 0):
            raise ValueError(f"mix row_ptr: expected non-decreasing from 0 to nnz {self.nnz}")
        cols = self.cols.astype(np.int64)
        if self.nnz and cols.max() >= k:
            raise ValueError(f"mix cols: expected < K {k}, found {cols.max()}")
        row_start = np.zeros(self.nnz, bool)
        row_start[row_ptr[:-1][row_ptr[:-1] < self.nnz]] = True
        if np.any((np.diff(cols) <= 0) & ~row_start[1:]):
            raise ValueError("mix cols: expected strictly increasing within each row")
        for name in ("super2", "scale4", "min4", "vals"):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"mix {name}: values expected finite")
        if np.any(self.super2 <= 0):
            raise ValueError("mix super2: expected > 0, so that no 2-bit scale decodes to 0")


def _pack_crumbs(q: np.ndarray) -> np.ndarray:
    """Codes 0..3 [M, 64 B] -> bytes [M, 16 B]: byte i of block b holds q(64b + i + 16j) at bits
    2j+1..2j (j = 0..3)."""
    m, k2p = q.shape
    q = q.reshape(m, k2p // BLOCK2, 4, BLOCK2 // 4)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(
        m, k2p // 4)


def _unpack_crumbs(packed: np.ndarray) -> np.ndarray:
    m, quarter = packed.shape
    packed = packed.reshape(m, quarter // (BLOCK2 // 4), 1, BLOCK2 // 4)
    return ((packed >> np.array([0, 2, 4, 6], np.uint8)[:, None]) & 3).reshape(m, 4 * quarter)


def pack_mix(mix: MixParts) -> list[np.ndarray]:
    """MixParts (validated) -> the 10 parts of FORMAT.md 5.5, in their types and shapes."""
    mix.validate()
    m, k = mix.shape
    group_bytes = (mix.scale_code2 | (mix.zero2 << 6)).astype(np.uint8)
    return [mix.perm.astype("<u4"),
            _pack_crumbs(_pad_columns(mix.q2, padded_k2(k - mix.k4))),
            group_bytes,
            mix.super2.astype("<f2"),
            *pack_q4(mix.q4, mix.scale4, mix.min4),
            mix.row_ptr.astype("<u4"), mix.cols.astype("<u2"), mix.vals.astype("<f2")]


def unpack_mix(parts, m: int, k: int) -> MixParts:
    """The 10 parts of an [M, K] mix tensor (typed arrays or raw bytes) -> MixParts; K4 and nnz
    are derived from the part sizes as a reader does."""
    sizes = [np.asarray(part).nbytes for part in parts]
    if len(sizes) != len(PART_DTYPES["mix"]):
        raise ValueError(f"mix: expected {len(PART_DTYPES['mix'])} parts, found {len(sizes)}")
    k4 = 2 * sizes[4] // m
    (perm, codes2, group_bytes, super2, codes4, scale4, min4, row_ptr, cols,
     vals) = _typed(parts, "mix", m, k, k4, sizes[8] // 2)
    return MixParts(perm=perm.astype(np.int64),
                    q2=_unpack_crumbs(codes2)[:, :k - k4],
                    scale_code2=group_bytes & (SCALE_CODES - 1), zero2=group_bytes >> 6,
                    super2=super2.astype(np.float16), q4=_unpack_nibbles(codes4),
                    scale4=scale4.astype(np.float16), min4=min4.astype(np.float16),
                    row_ptr=row_ptr.astype(np.uint32), cols=cols.astype(np.uint16),
                    vals=vals.astype(np.float16))


def decode_scales2(scale_code2: np.ndarray, super2: np.ndarray) -> np.ndarray:
    """The float32 scales [M, G2] of the 2-bit groups: s = (c + 1) x float32(S[r, g / 16])."""
    g2 = scale_code2.shape[1]
    return ((scale_code2.astype(np.float32) + 1)
            * super2.astype(np.float32)[:, np.arange(g2) // SUPER_GROUPS])


def dequantize_w2(mix: MixParts) -> np.ndarray:
    """The dense 2-bit part W2 [M, K2] (columns in perm order): (q - z) x s in float32."""
    k2 = mix.q2.shape[1]
    column_group = np.arange(k2) // GROUP
    return ((mix.q2.astype(np.float32) - mix.zero2.astype(np.float32)[:, column_group])
            * decode_scales2(mix.scale_code2, mix.super2)[:, column_group])


def outlier_rows(row_ptr: np.ndarray) -> np.ndarray:
    """The row of each outlier entry of a CSR row-pointer array."""
    return np.repeat(np.arange(row_ptr.size - 1), np.diff(row_ptr.astype(np.int64)))


def dequantize_mix(mix: MixParts) -> np.ndarray:
    """W [M, K] float32: W2 and W4 put back in the original column order, plus the outliers."""
    m, k = mix.shape
    k2 = k - mix.k4
    w = np.empty((m, k), np.float32)
    w[:, mix.perm[:k2]] = dequantize_w2(mix)
    w[:, mix.perm[k2:]] = _dequantize_q4(mix.q4, mix.scale4, mix.min4)
    w[outlier_rows(mix.row_ptr), mix.cols] += mix.vals.astype(np.float32)
    return w


def unpack_quik(parts, m: int, k: int) -> quik.QuikParts:
    sizes = [np.asarray(part).nbytes for part in parts]
    if len(sizes) != 4:
        raise ValueError(f"quik: expected 4 parts, found {len(sizes)}")
    return quik.unpack(_typed(parts, "quik", m, k, **derived_counts("quik", sizes, m)), m, k)


def dequantize(dtype: str, parts, m: int, k: int) -> np.ndarray:
    """The float32 [M, K] values of a tensor stored as `parts` (typed arrays or raw bytes)."""
    if dtype == "mix":
        return dequantize_mix(unpack_mix(parts, m, k))
    if dtype == "q8":
        codes, scales = unpack_q8(parts, m, k)
        return codes.astype(np.float32) * scales.astype(np.float32)[:, np.arange(k) // GROUP]
    if dtype == "q4":
        return _dequantize_q4(*unpack_q4(parts, m, k))
    if dtype in BLOCK_FORMATS:
        fmt = BLOCK_FORMATS[dtype]
        return blockfp.decode(*blockfp.unpack(parts, fmt, m, k), fmt, k)
    if dtype == "quik":
        return quik.decode(unpack_quik(parts, m, k), k)
    (values,) = _typed(parts, dtype, m, k)
    return values.astype(np.float32)
