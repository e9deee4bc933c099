# blockfp.py: the block formats with a shared power-of-two exponent (FORMAT.md 5.6), one family:
# the paper's BFP of arXiv 2310.05079 (bfp3..bfp8: blocks of 16 along K, signed integer elements)
# and OCP Microscaling v1.0 (mxint8: blocks of 32, int8 elements; mxfp4: blocks of 32, E2M1
# elements). A member is a block size and an element decoder; every member shares one exponent
# rule and one bit packing. numpy reference of the encoder and the decoder; the C++ decoder
# (format/quant_element.h) is tested bit for bit against it (tests/test_blockfp.py).
#
#   fmt = BLOCK_FORMATS["bfp6"]
#   codes, exps = encode(w, fmt)            # w float32 [M, K] -> element codes, biased exponents
#   parts = pack(codes, exps, fmt)          # the file's two parts
#   w_hat = decode(*unpack(parts, fmt, M, K), fmt, K)
#
# Value of element code q in a block with stored exponent E (0..254; 255 is NaN in OCP's E8M0 and
# refused): element(q) x 2^(E - 127). Integer elements of w bits are two's complement m with
# element = m / 2^(w-2) (so |element| < 2; mxint8's "implicit 2^-6"); E2M1 elements are
# +-{0, 0.5, 1, 1.5, 2, 3, 4, 6}. Encoding: E = floor(log2 max|x|) - emax + 127 over the block,
# emax the exponent of the largest element (0 for integers, 2 for E2M1), clamped to 0..254; each
# element rounds to the nearest value (ties to even) and saturates at the largest. For integers
# this is the paper's rule: its exponent ceil(log2 max|x|) with a (w-1)-bit fraction gives the same
# values, except that a block whose maximum is a power of two keeps it exactly here instead of
# saturating it by one step.
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = 32  # every member pads K to whole groups of 32 (FORMAT.md 5.2), so blocks of 16 and 32 fit
EXP_BIAS = 127
EXP_MAX = 254  # 255 is OCP's NaN scale: never written, refused by readers
E2M1_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], np.float32)  # codes 0..7; bit 3 = sign


@dataclass(frozen=True)
class BlockFormat:
    name: str
    block: int  # values sharing one exponent, along K
    bits: int  # bits per element code
    element: str  # "int" (two's complement, value m / 2^(bits-2)) or "e2m1"

    @property
    def emax(self) -> int:
        """The exponent of the largest element value (the encoder's offset)."""
        return 2 if self.element == "e2m1" else 0

    @property
    def max_element(self) -> float:
        if self.element == "e2m1":
            return 6.0
        return (2 ** (self.bits - 1) - 1) / 2 ** (self.bits - 2)

    @property
    def bits_per_weight(self) -> float:
        return self.bits + 8 / self.block

    def element_values(self, codes: np.ndarray) -> np.ndarray:
        """The element value of each code (float64)."""
        codes = np.asarray(codes, np.int64)
        if self.element == "e2m1":
            magnitude = E2M1_VALUES[codes & 7].astype(np.float64)
            return np.where(codes & 8, -magnitude, magnitude)
        signed = np.where(codes >= 2 ** (self.bits - 1), codes - 2 ** self.bits, codes)
        return signed / 2.0 ** (self.bits - 2)


BLOCK_FORMATS = {fmt.name: fmt for fmt in (
    *(BlockFormat(f"bfp{w}", 16, w, "int") for w in (8, 6, 5, 4, 3)),
    BlockFormat("mxint8", 32, 8, "int"),
    BlockFormat("mxfp4", 32, 4, "e2m1"),
)}


def padded_k(k: int) -> int:
    return -(-k // PAD) * PAD


def part_shapes(fmt: BlockFormat, m: int, k: int) -> list[tuple[int, int]]:
    """Shapes (u8) of the two parts of an [M, K] tensor: the element codes as one bit stream per
    row (Kp x bits / 8 bytes), the biased exponents (Kp / block per row)."""
    kp = padded_k(k)
    return [(m, kp * fmt.bits // 8), (m, kp // fmt.block)]


def _check_finite(x: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{name}: not finite at row {r}, column {c} ({x[r, c]}): block formats "
                         f"store finite values only")


def _round_e2m1(y: np.ndarray) -> np.ndarray:
    """Codes of the nearest E2M1 values of y (already scaled; saturates at 6; ties to the even
    mantissa, as IEEE rounding does)."""
    a = np.minimum(np.abs(y), 6.0)
    # nearest of the 8 magnitudes; on a tie the code with mantissa bit 0 (even code) wins
    dist = np.abs(a[..., None] - E2M1_VALUES.astype(np.float64))
    best = dist.min(axis=-1, keepdims=True)
    tied = dist <= best
    even = tied & (np.arange(8) % 2 == 0)
    code = np.where(even.any(axis=-1), np.argmax(even, axis=-1), np.argmax(tied, axis=-1))
    return (code | np.where((y < 0) & (code > 0), 8, 0)).astype(np.uint8)


def encode(x, fmt: BlockFormat, name: str = "tensor") -> tuple[np.ndarray, np.ndarray]:
    """x float [M, K] -> (codes uint8 [M, Kp], biased exponents uint8 [M, Kp / block]) by the rule
    in this file's header; padding columns code 0. Refuses NaN or infinity, naming `name`."""
    x = np.asarray(x, np.float32)
    _check_finite(x, name)
    m, k = x.shape
    kp = padded_k(k)
    xp = np.zeros((m, kp), np.float64)
    xp[:, :k] = x
    blocks = xp.reshape(m, kp // fmt.block, fmt.block)
    peak = np.abs(blocks).max(axis=-1)
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.where(peak > 0, peak, 1.0))).astype(np.int64)
    # log2 in float64 of a float32 is exact enough: peak < 2^(e+1) and >= 2^e hold; checked anyway
    e += (peak >= np.ldexp(1.0, e + 1)).astype(np.int64) - (peak < np.ldexp(1.0, e)).astype(np.int64)
    exps = np.clip(np.where(peak > 0, e - fmt.emax + EXP_BIAS, 0), 0, EXP_MAX)
    scaled = blocks / np.ldexp(1.0, exps - EXP_BIAS)[..., None]
    if fmt.element == "e2m1":
        codes = _round_e2m1(scaled)
    else:
        top = 2 ** (fmt.bits - 1) - 1
        m_int = np.clip(np.rint(scaled * 2.0 ** (fmt.bits - 2)), -top, top).astype(np.int64)
        codes = (m_int & (2 ** fmt.bits - 1)).astype(np.uint8)
    return codes.reshape(m, kp), exps.astype(np.uint8)


def pack(codes: np.ndarray, exps: np.ndarray, fmt: BlockFormat) -> list[np.ndarray]:
    """The two parts: codes [M, Kp] (each < 2^bits) as one LSB-first bit stream per row (bit b of
    code j is bit j x bits + b of the row), and the exponents."""
    codes = np.asarray(codes, np.uint8)
    m, kp = codes.shape
    if kp % PAD:
        raise ValueError(f"{fmt.name} codes: expected a multiple of {PAD} columns, found {kp}")
    if codes.size and int(codes.max()) >= 2 ** fmt.bits:
        raise ValueError(f"{fmt.name} codes: expected values below {2 ** fmt.bits}, found {int(codes.max())}")
    bits = ((codes[..., None] >> np.arange(fmt.bits, dtype=np.uint8)) & 1).reshape(m, kp * fmt.bits)
    stream = np.packbits(bits, axis=-1, bitorder="little")
    exps = np.asarray(exps, np.uint8)
    if exps.shape != (m, kp // fmt.block):
        raise ValueError(f"{fmt.name} exponents: expected shape {(m, kp // fmt.block)}, found {exps.shape}")
    return [np.ascontiguousarray(stream), np.ascontiguousarray(exps)]


def unpack(parts, fmt: BlockFormat, m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes [M, Kp], exponents [M, Kp / block]) from the two parts (arrays or raw bytes)."""
    shapes = part_shapes(fmt, m, k)
    if len(parts) != 2:
        raise ValueError(f"{fmt.name}: expected 2 parts, found {len(parts)}")
    stream, exps = (np.frombuffer(memoryview(np.ascontiguousarray(p)).cast("B"), np.uint8).reshape(s)
                    for p, s in zip(parts, shapes))
    kp = padded_k(k)
    bits = np.unpackbits(stream, axis=-1, bitorder="little").reshape(m, kp, fmt.bits)
    codes = (bits.astype(np.uint8) << np.arange(fmt.bits, dtype=np.uint8)).sum(axis=-1, dtype=np.uint8)
    return codes, exps


def decode(codes: np.ndarray, exps: np.ndarray, fmt: BlockFormat, k: int) -> np.ndarray:
    """float32 [M, K]: element(code) x 2^(E - 127), the padding dropped."""
    if (np.asarray(exps) > EXP_MAX).any():
        raise ValueError(f"{fmt.name} exponents: expected at most {EXP_MAX} (255 is NaN)")
    m, kp = codes.shape
    values = fmt.element_values(codes).reshape(m, kp // fmt.block, fmt.block)
    scale = np.ldexp(1.0, np.asarray(exps, np.int64) - EXP_BIAS)[..., None]
    return (values * scale).reshape(m, kp)[:, :k].astype(np.float32)


def quantize(x, fmt: BlockFormat, name: str = "tensor") -> list[np.ndarray]:
    """encode then pack: the two parts of x [M, K] in format fmt."""
    return pack(*encode(x, fmt, name), fmt)
