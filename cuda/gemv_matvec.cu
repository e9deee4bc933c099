// gemv_matvec.cu: the matrix-vector kernels y = W x for 1..8 inputs, one family per stored dtype.
//
// Quantized dtypes (q8, q4, mix). A matrix is read as segments of 16-byte units, each a whole
// number of groups: q8 units of 16 columns, q4 units of 32 (one group), the mix 2-bit part units
// of 64 (two groups, FORMAT.md's 64-column block) and the mix 4-bit part q4 units. A matvec is two
// launches: stage_input_kernel writes the inputs once into the weight's staged-input scratch, in
// the order the units consume them (for mix: through the permutation) and "chunk-major", so the
// 32 lanes reading chunk c of units u..u+31 read 512 contiguous bytes, plus the sum of the inputs
// of every group; then matvec_quant_kernel: a warp owns R = 2 rows, lane l reads units l, l+32,
// ... of both rows with 16-byte loads (each warp load is 512 contiguous bytes of a row) and the
// staged x chunks through the read-only cache, each chunk used by both rows.
//
// Decode without integer-to-float conversions: a code field is moved (shift, mask, or 0x80)
// into bits 16..23 of the float 1.0 by one byte permute, which gives f = 1 + q/4 (2-bit) or
// 1 + q/16 (4-bit) exactly; the group's partial sum P = sum f x then yields sum q x = k (P - X)
// with X the staged group sum, so a weight costs one permute and one FMA per input:
//   2-bit:  sum (q - z) s x = 4s (P - (1 + z/4) X)      4-bit: sum (q s + m) x = 16s P + (m - 16s) X
// q8 codes become floats through 2^23 + (q + 128) and one exact subtraction. Accumulation is fp32
// throughout; each row's n sums are reduced across the warp with shuffles at the end, and the mix
// outliers (CSR, original columns, x read unpermuted) are added by the same warp before that.
//
// Scales: with MixSchedule::overlapped (all dtypes use it) each lane loads the codes and scales of
// its next unit before it computes the current one (and the first unit's at kernel start), so the
// scale loads and their decode overlap the weight loads; ::synchronous loads a unit's scales only
// after its codes have been consumed (a data dependency the compiler cannot remove).
//
// f16 / f32: one row per warp (two for n >= 2), x read straight from global memory (L1-resident),
// 8 / R 16-byte loads per row in flight per lane; rows whose start is not 16-byte aligned (K not a
// multiple of 8 or 4) use the scalar path.
#include "device_weight.h"

#include <string>
#include <type_traits>

#include "cuda_check.h"

namespace mixrt::cuda {
namespace {

constexpr int kWarps = 4;                        // warps per block
constexpr int kThreads = 32 * kWarps;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    return v;
}

// 0, computed from v in a way the compiler cannot see through: makes a load wait for v.
__device__ __forceinline__ int opaque_zero(float v) {
    int z;
    asm volatile("and.b32 %0, %1, 0;" : "=r"(z) : "r"(__float_as_int(v)));
    return z;
}

__device__ __forceinline__ uint4 load16(const void *p) { return __ldg(static_cast<const uint4 *>(p)); }

__device__ __forceinline__ uint32_t word(const uint4 &w, int i) {
    return i == 0 ? w.x : i == 1 ? w.y : i == 2 ? w.z : w.w;
}

__device__ __forceinline__ float lane_of(const float4 &v, int e) {
    return e == 0 ? v.x : e == 1 ? v.y : e == 2 ? v.z : v.w;
}

// Byte e of `bytes` (each 0x80 | field) into bits 16..23 of 1.0f: 1 + field * 2^-7.
__device__ __forceinline__ float unit_float(uint32_t bytes, int e) {
    return __int_as_float(__byte_perm(bytes, 0x3F000000u, 0x7044u | (unsigned(e) << 8)));
}

// ---- segments: one kind of 16-byte unit each ----------------------------------------------------

// The mix 2-bit part: a unit is a 64-column block, chunk c = columns 4c..4c+3 = word c % 4 of the
// block, field c / 4 of each byte; groups 2u (chunks 0..7) and 2u + 1 (chunks 8..15).
struct Seg2 {
    static constexpr int kCols = 64, kGroupsPerUnit = 2, kChunksPerGroup = 8;
    static constexpr bool kSums = true;
    struct Meta {
        uint32_t codes;  // the two group bytes: scale code | zero << 6
        __half super;
    };
    const uint8_t *codes;
    const uint8_t *meta;
    const __half *super;
    int64_t row_bytes, groups, blocks;  // K2p / 4, G2, B2
    int units, x_off, sums_off;

    __device__ uint4 load_codes(int64_t r, int u) const { return load16(codes + r * row_bytes + int64_t(u) * 16); }
    __device__ Meta load_meta(int64_t r, int u) const {
        return {__ldg(reinterpret_cast<const uint16_t *>(meta + r * groups) + u), super[r * blocks + u / 8]};
    }
    __device__ static uint32_t chunk(const uint4 &w, int c) {
        const uint32_t v = word(w, c % 4), s = c / 4;  // field s: bits 2s..2s+1 -> bits 5..6
        const uint32_t moved = s == 3 ? v >> 1 : v << (5 - 2 * s);
        return (moved & 0x60606060u) | 0x80808080u;
    }
    __device__ static float code(uint32_t bytes, int e) { return unit_float(bytes, e); }  // 1 + q/4
    __device__ static float apply(const Meta &m, int g, float p, float x_sum) {
        const uint32_t b = (m.codes >> (8 * g)) & 0xFF;
        const float s4 = 4.0f * (float((b & 63) + 1) * __half2float(m.super));
        return s4 * fmaf(-(1.0f + 0.25f * float(b >> 6)), x_sum, p);
    }
};

// q4 and the mix 4-bit part: a unit is one group; chunk c < 4 = low nibbles of word c (columns
// 4c..4c+3), chunk c >= 4 = high nibbles of word c - 4 (columns 16 + 4(c-4).. = 4c..4c+3).
struct Seg4 {
    static constexpr int kCols = 32, kGroupsPerUnit = 1, kChunksPerGroup = 8;
    static constexpr bool kSums = true;
    struct Meta {
        __half scale, min;
    };
    const uint8_t *codes;
    const __half *scales, *mins;
    int64_t row_bytes, groups;  // Kp / 2 (K4 / 2), G (K4 / 32)
    int units, x_off, sums_off;

    __device__ uint4 load_codes(int64_t r, int u) const { return load16(codes + r * row_bytes + int64_t(u) * 16); }
    __device__ Meta load_meta(int64_t r, int u) const { return {scales[r * groups + u], mins[r * groups + u]}; }
    __device__ static uint32_t chunk(const uint4 &w, int c) {
        const uint32_t v = word(w, c % 4);
        return ((c < 4 ? v << 3 : v >> 1) & 0x78787878u) | 0x80808080u;
    }
    __device__ static float code(uint32_t bytes, int e) { return unit_float(bytes, e); }  // 1 + q/16
    __device__ static float apply(const Meta &m, int, float p, float x_sum) {
        const float s16 = 16.0f * __half2float(m.scale);
        return fmaf(s16, p, (__half2float(m.min) - s16) * x_sum);
    }
};

// q8: a unit is half a group (16 columns); chunk c = word c, its 4 signed codes.
struct Seg8 {
    static constexpr int kCols = 16, kGroupsPerUnit = 1, kChunksPerGroup = 4;
    static constexpr bool kSums = false;
    struct Meta {
        __half scale;
    };
    const int8_t *codes;
    const __half *scales;
    int64_t row_bytes, groups;  // Kp, G
    int units, x_off, sums_off;

    __device__ uint4 load_codes(int64_t r, int u) const { return load16(codes + r * row_bytes + int64_t(u) * 16); }
    __device__ Meta load_meta(int64_t r, int u) const { return {scales[r * groups + u / 2]}; }
    __device__ static uint32_t chunk(const uint4 &w, int c) { return word(w, c) ^ 0x80808080u; }  // q + 128
    __device__ static float code(uint32_t bytes, int e) {  // (2^23 + q + 128) - (2^23 + 128), exact
        return __int_as_float(__byte_perm(bytes, 0x4B000000u, 0x7440u | unsigned(e))) - 8388736.0f;
    }
    __device__ static float apply(const Meta &m, int, float p, float) { return __half2float(m.scale) * p; }
};

// ---- the staged input --------------------------------------------------------------------------

// One warp per 32 consecutive columns j of a segment (a group for q4 / mix):
// staged[t*stride + x_off + (c*units + u)*4 + e] = x[t][perm[j]] (x[t][j] without perm; 0 for the
// padding j >= valid) where unit u = j / kCols holds j as column 4c + e, and the group's input sum
// at staged[t*stride + sums_off + j / 32].
template <class Seg>
__device__ void stage_group(const Seg &sg, float *staged, int64_t stride, const float *x, int64_t K, int t,
                            int group, int valid, const uint16_t *perm) {
    const int lane = threadIdx.x % 32, j = group * 32 + lane;
    const float v = j < valid ? __ldg(x + t * K + (perm ? int(perm[j]) : j)) : 0.0f;
    const int u = j / Seg::kCols, rem = j % Seg::kCols;
    staged[t * stride + sg.x_off + ((rem / 4) * sg.units + u) * 4 + rem % 4] = v;
    if (Seg::kSums) {
        const float sum = warp_sum(v);
        if (lane == 0) staged[t * stride + sg.sums_off + group] = sum;
    }
}

// ---- the unit loop -----------------------------------------------------------------------------

template <class Seg, int R>
struct UnitRegs {
    uint4 codes[R];
    typename Seg::Meta meta[R];
};

template <class Seg, int R>
__device__ void load_unit(const Seg &sg, const int64_t (&row)[R], int u, UnitRegs<Seg, R> &regs, bool with_meta) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
        regs.codes[r] = sg.load_codes(row[r], u);
        if (with_meta) regs.meta[r] = sg.load_meta(row[r], u);
    }
}

// The unit's contribution to acc. The staged input has room for kMaxMatvecInputs inputs, so the
// loads of inputs t >= nt stay in bounds; their (meaningless) sums are never stored. Up to
// kAhead chunks of x are loaded before they are used.
template <class Seg, int R, int NT, bool kOverlap>
__device__ void compute_unit(const Seg &sg, const int64_t (&row)[R], int u, UnitRegs<Seg, R> &regs, const float *xs,
                             int stride, float (&acc)[R][NT]) {
    constexpr int kAhead = NT <= 2 ? Seg::kChunksPerGroup : 2;
    const float4 *xu = reinterpret_cast<const float4 *>(xs + sg.x_off) + u;  // chunk 0 of unit u, input 0
    const int chunk_step = sg.units, input_step = stride / 4;
#pragma unroll
    for (int g = 0; g < Seg::kGroupsPerUnit; ++g) {
        float part[R][NT];
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int t = 0; t < NT; ++t) part[r][t] = 0.0f;
#pragma unroll
        for (int c0 = g * Seg::kChunksPerGroup; c0 < (g + 1) * Seg::kChunksPerGroup; c0 += kAhead) {
            float4 xv[kAhead][NT];
#pragma unroll
            for (int a = 0; a < kAhead; ++a)
#pragma unroll
                for (int t = 0; t < NT; ++t) xv[a][t] = __ldg(xu + (c0 + a) * chunk_step + t * input_step);
#pragma unroll
            for (int a = 0; a < kAhead; ++a)
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const uint32_t bytes = Seg::chunk(regs.codes[r], c0 + a);
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const float f = Seg::code(bytes, e);
#pragma unroll
                        for (int t = 0; t < NT; ++t) part[r][t] = fmaf(f, lane_of(xv[a][t], e), part[r][t]);
                    }
                }
        }
        if (!kOverlap && g == 0) {  // synchronous: the scales are asked for only now
            const int dep = opaque_zero(part[0][0]);
#pragma unroll
            for (int r = 0; r < R; ++r) regs.meta[r] = sg.load_meta(row[r], u + dep);
        }
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            const float x_sum = Seg::kSums ? __ldg(xs + t * stride + sg.sums_off + u * Seg::kGroupsPerUnit + g) : 0.0f;
#pragma unroll
            for (int r = 0; r < R; ++r) acc[r][t] += Seg::apply(regs.meta[r], g, part[r][t], x_sum);
        }
    }
}

// All units of a segment for the warp's R rows; `first` holds unit `lane` when kOverlap.
template <class Seg, int R, int NT, bool kOverlap>
__device__ void run_segment(const Seg &sg, const int64_t (&row)[R], UnitRegs<Seg, R> &first, const float *xs,
                            int stride, float (&acc)[R][NT], int lane) {
    UnitRegs<Seg, R> cur = first;
    for (int u = lane; u < sg.units; u += 32) {
        UnitRegs<Seg, R> next{};
        if (kOverlap) {
            if (u + 32 < sg.units) load_unit(sg, row, u + 32, next, true);
        } else {
            load_unit(sg, row, u, cur, false);
        }
        compute_unit<Seg, R, NT, kOverlap>(sg, row, u, cur, xs, stride, acc);
        if (kOverlap) cur = next;
    }
}

// ---- the quantized kernel ----------------------------------------------------------------------

struct QuantArgs {
    DeviceParts p;
    int64_t M, K;
    const float *x;
    float *y;
    int nt;  // inputs
    Seg2 s2;
    Seg4 s4;
    Seg8 s8;
};

// grid (ceil(groups / kWarps), n): the staged input of every segment, one warp per 32 columns.
template <DType kDType>
__global__ void __launch_bounds__(kThreads) stage_input_kernel(const QuantArgs a) {
    const int group = blockIdx.x * kWarps + threadIdx.x / 32, t = blockIdx.y;
    float *staged = a.p.staged;
    const int64_t stride = a.p.staged_stride;
    if (kDType == DType::mix) {
        const int g2 = a.s2.units * Seg2::kGroupsPerUnit;
        if (group < g2) stage_group(a.s2, staged, stride, a.x, a.K, t, group, int(a.p.K2), a.p.perm);
        else if (group < g2 + a.s4.units)
            stage_group(a.s4, staged, stride, a.x, a.K, t, group - g2, int(a.p.K4), a.p.perm + a.p.K2);
    } else if (kDType == DType::q4) {
        if (group < a.s4.units) stage_group(a.s4, staged, stride, a.x, a.K, t, group, int(a.K), nullptr);
    } else {
        if (group < a.s8.units / 2) stage_group(a.s8, staged, stride, a.x, a.K, t, group, int(a.K), nullptr);
    }
}

// acc[t] += val x[t][col].
template <int NT>
__device__ __forceinline__ void acc_outlier(const QuantArgs &a, int64_t col, float val, float (&acc)[NT]) {
#pragma unroll
    for (int t = 0; t < NT; ++t)
        if (t < a.nt) acc[t] = fmaf(val, __ldg(a.x + t * a.K + col), acc[t]);
}

template <DType kDType, int R, int NT, bool kOverlap>
__global__ void __launch_bounds__(kThreads, NT == 1 ? 8 : NT == 8 ? 3 : 4) matvec_quant_kernel(const QuantArgs a) {
    const float *xs = a.p.staged;
    const int stride = int(a.p.staged_stride);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t row0 = (int64_t(blockIdx.x) * kWarps + warp) * R;
    int64_t row[R];
#pragma unroll
    for (int r = 0; r < R; ++r) row[r] = min(row0 + r, a.M - 1);  // extra rows recompute the last

    UnitRegs<Seg2, R> first2{};
    UnitRegs<Seg4, R> first4{};
    UnitRegs<Seg8, R> first8{};
    if (kOverlap) {
        if (kDType == DType::mix && lane < a.s2.units) load_unit(a.s2, row, lane, first2, true);
        if ((kDType == DType::mix || kDType == DType::q4) && lane < a.s4.units) load_unit(a.s4, row, lane, first4, true);
        if (kDType == DType::q8 && lane < a.s8.units) load_unit(a.s8, row, lane, first8, true);
    }

    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = 0.0f;

    if (kDType == DType::mix) run_segment<Seg2, R, NT, kOverlap>(a.s2, row, first2, xs, stride, acc, lane);
    if (kDType != DType::q8) run_segment<Seg4, R, NT, kOverlap>(a.s4, row, first4, xs, stride, acc, lane);
    if (kDType == DType::q8) run_segment<Seg8, R, NT, kOverlap>(a.s8, row, first8, xs, stride, acc, lane);

    if (kDType == DType::mix) {  // outliers: residuals at original columns, x read unpermuted
#pragma unroll
        for (int r = 0; r < R; ++r)
            for (uint32_t o = a.p.row_ptr[row[r]] + lane; o < a.p.row_ptr[row[r] + 1]; o += 32)
                acc_outlier(a, a.p.out_cols[o], __half2float(a.p.out_vals[o]), acc[r]);
    }

#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            const float v = warp_sum(acc[r][t]);
            if (lane == 0 && t < a.nt && row0 + r < a.M) a.y[t * a.M + row0 + r] = v;
        }
}

// ---- the f16 / f32 kernel ----------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ void fma_vec(const uint4 &w, const float *x, float &acc);

template <>
__device__ __forceinline__ void fma_vec<__half>(const uint4 &w, const float *x, float &acc) {
    const float4 a = __ldg(reinterpret_cast<const float4 *>(x)), b = __ldg(reinterpret_cast<const float4 *>(x) + 1);
    const float2 w0 = __half22float2(*reinterpret_cast<const __half2 *>(&w.x));
    const float2 w1 = __half22float2(*reinterpret_cast<const __half2 *>(&w.y));
    const float2 w2 = __half22float2(*reinterpret_cast<const __half2 *>(&w.z));
    const float2 w3 = __half22float2(*reinterpret_cast<const __half2 *>(&w.w));
    acc = fmaf(w0.x, a.x, fmaf(w0.y, a.y, fmaf(w1.x, a.z, fmaf(w1.y, a.w, acc))));
    acc = fmaf(w2.x, b.x, fmaf(w2.y, b.y, fmaf(w3.x, b.z, fmaf(w3.y, b.w, acc))));
}

template <>
__device__ __forceinline__ void fma_vec<float>(const uint4 &w, const float *x, float &acc) {
    const float4 a = __ldg(reinterpret_cast<const float4 *>(x));
    acc = fmaf(__uint_as_float(w.x), a.x, fmaf(__uint_as_float(w.y), a.y,
               fmaf(__uint_as_float(w.z), a.z, fmaf(__uint_as_float(w.w), a.w, acc))));
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T, int R, int NT, bool kVec>
__global__ void __launch_bounds__(kThreads) matvec_float_kernel(const T *W, int64_t M, int64_t K, const float *x,
                                                                float *y, int nt) {
    constexpr int V = 16 / sizeof(T), kDepth = 8 / R;  // elements per 16 bytes, loads in flight per row
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t row0 = (int64_t(blockIdx.x) * kWarps + warp) * R;
    int64_t row[R];
#pragma unroll
    for (int r = 0; r < R; ++r) row[r] = min(row0 + r, M - 1);
    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = 0.0f;

    if (kVec) {
        const int64_t units = K / V;
        for (int64_t u0 = lane; u0 < units; u0 += 32 * kDepth) {
            uint4 w[kDepth][R];
#pragma unroll
            for (int d = 0; d < kDepth; ++d)
#pragma unroll
                for (int r = 0; r < R; ++r)
                    w[d][r] = u0 + 32 * d < units ? load16(W + row[r] * K + (u0 + 32 * d) * V) : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int d = 0; d < kDepth; ++d) {
                const int64_t u = u0 + 32 * d;
                if (u >= units) break;
#pragma unroll
                for (int t = 0; t < NT; ++t)
                    if (t < nt)
#pragma unroll
                        for (int r = 0; r < R; ++r) fma_vec<T>(w[d][r], x + t * K + u * V, acc[r][t]);
            }
        }
    } else {
        for (int64_t k = lane; k < K; k += 32)
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const float wv = to_float(W[row[r] * K + k]);
#pragma unroll
                for (int t = 0; t < NT; ++t)
                    if (t < nt) acc[r][t] = fmaf(wv, __ldg(x + t * K + k), acc[r][t]);
            }
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            const float v = warp_sum(acc[r][t]);
            if (lane == 0 && t < nt && row0 + r < M) y[t * M + row0 + r] = v;
        }
}

// ---- host side ---------------------------------------------------------------------------------

int round4(int64_t v) { return int((v + 3) / 4 * 4); }

// The segments of a quantized weight's parts and where each stages its input (floats per input in
// `stride`); M, K, x, y, nt are left for the caller.
QuantArgs quant_layout(DType dtype, const DeviceParts &p, int64_t &stride) {
    QuantArgs a{};
    a.p = p;
    int off = 0;
    auto place = [&](auto &seg, int units) {
        using Seg = std::decay_t<decltype(seg)>;
        seg.units = units;
        seg.x_off = off;
        off += round4(int64_t(units) * Seg::kCols);
        seg.sums_off = off;
        if (Seg::kSums) off += round4(int64_t(units) * Seg::kGroupsPerUnit);
    };
    switch (dtype) {
        case DType::q8:
            a.s8 = {p.q8_codes, p.q8_scales, p.Kp, p.G, 0, 0, 0};
            place(a.s8, int(p.Kp / Seg8::kCols));
            break;
        case DType::q4:
            a.s4 = {p.q4_codes, p.q4_scales, p.q4_mins, p.Kp / 2, p.G, 0, 0, 0};
            place(a.s4, int(p.G));
            break;
        case DType::mix:
            a.s2 = {p.q2, p.meta2, p.super2, p.K2p / 4, p.G2, p.B2, 0, 0, 0};
            place(a.s2, int(p.K2p / Seg2::kCols));
            a.s4 = {p.q4_codes, p.q4_scales, p.q4_mins, p.K4 / 2, p.K4 / kGroup, 0, 0, 0};
            place(a.s4, int(p.K4 / Seg4::kCols));
            break;
        default: break;
    }
    stride = off;
    return a;
}

template <DType kDType, int R, int NT, bool kOverlap>
void launch_quant(const QuantArgs &a, cudaStream_t stream) {
    const unsigned blocks = unsigned((a.M + kWarps * R - 1) / (kWarps * R));
    matvec_quant_kernel<kDType, R, NT, kOverlap><<<blocks, kThreads, 0, stream>>>(a);
    MIXRT_CUDA_CHECK_LAUNCH("matvec_quant_kernel");
}

// Stages the input, then the product with R = 2 rows per warp (x chunks reused by both rows).
template <DType kDType, bool kOverlap>
void launch_quant_n(const QuantArgs &a, cudaStream_t stream) {
    const int groups = kDType == DType::mix ? a.s2.units * Seg2::kGroupsPerUnit + a.s4.units
                       : kDType == DType::q4 ? a.s4.units
                                             : a.s8.units / 2;
    stage_input_kernel<kDType><<<dim3(unsigned((groups + kWarps - 1) / kWarps), unsigned(a.nt)), kThreads, 0, stream>>>(a);
    MIXRT_CUDA_CHECK_LAUNCH("stage_input_kernel");
    if (a.nt == 1) launch_quant<kDType, 2, 1, kOverlap>(a, stream);
    else if (a.nt == 2) launch_quant<kDType, 2, 2, kOverlap>(a, stream);
    else if (a.nt <= 4) launch_quant<kDType, 2, 4, kOverlap>(a, stream);
    else launch_quant<kDType, 2, 8, kOverlap>(a, stream);
}

void matvec_quant(const DeviceWeight &w, const float *x, float *y, int n, bool overlap, cudaStream_t stream) {
    int64_t stride;
    QuantArgs a = quant_layout(w.dtype(), w.parts(), stride);
    a.M = w.rows();
    a.K = w.cols();
    a.x = x;
    a.y = y;
    a.nt = n;
    switch (w.dtype()) {
        case DType::q8: launch_quant_n<DType::q8, true>(a, stream); break;
        case DType::q4: launch_quant_n<DType::q4, true>(a, stream); break;
        default:
            if (overlap) launch_quant_n<DType::mix, true>(a, stream);
            else launch_quant_n<DType::mix, false>(a, stream);
    }
}

template <typename T, bool kVec>
void launch_float(const DeviceWeight &w, const T *W, const float *x, float *y, int n, cudaStream_t stream) {
    const int R = n == 1 ? 1 : 2;  // one row per warp: enough warps to keep 8 loads each in flight
    const unsigned blocks = unsigned((w.rows() + kWarps * R - 1) / (kWarps * R));
    const int64_t M = w.rows(), K = w.cols();
    if (n == 1) matvec_float_kernel<T, 1, 1, kVec><<<blocks, kThreads, 0, stream>>>(W, M, K, x, y, n);
    else if (n == 2) matvec_float_kernel<T, 2, 2, kVec><<<blocks, kThreads, 0, stream>>>(W, M, K, x, y, n);
    else if (n <= 4) matvec_float_kernel<T, 2, 4, kVec><<<blocks, kThreads, 0, stream>>>(W, M, K, x, y, n);
    else matvec_float_kernel<T, 2, 8, kVec><<<blocks, kThreads, 0, stream>>>(W, M, K, x, y, n);
    MIXRT_CUDA_CHECK_LAUNCH("matvec_float_kernel");
}

template <typename T>
void matvec_float(const DeviceWeight &w, const T *W, const float *x, float *y, int n, cudaStream_t stream) {
    constexpr int V = 16 / sizeof(T);
    if (w.cols() % V == 0) launch_float<T, true>(w, W, x, y, n, stream);
    else launch_float<T, false>(w, W, x, y, n, stream);
}

void check_n(int n) {
    if (n < 1 || n > kMaxMatvecInputs)
        fail(MIXRT_ERR_INVALID_ARGUMENT, "matvec: n must be in 1.." + std::to_string(kMaxMatvecInputs) + ", found " +
                                             std::to_string(n));
}

}  // namespace

int64_t staged_input_floats(DType dtype, const DeviceParts &p) {
    int64_t stride = 0;
    quant_layout(dtype, p, stride);
    return stride;
}

void matvec(const DeviceWeight &w, const float *x, float *y, int n, cudaStream_t stream) {
    check_n(n);
    switch (w.dtype()) {
        case DType::f32: matvec_float(w, w.parts().f32, x, y, n, stream); break;
        case DType::f16: matvec_float(w, w.parts().f16, x, y, n, stream); break;
        default: matvec_quant(w, x, y, n, true, stream);
    }
}

void matvec_mix(const DeviceWeight &w, const float *x, float *y, int n, MixSchedule schedule, cudaStream_t stream) {
    check_n(n);
    if (w.dtype() != DType::mix)
        fail(MIXRT_ERR_INVALID_ARGUMENT, std::string("matvec_mix: expected a mix weight, found ") + dtype_name(w.dtype()));
    matvec_quant(w, x, y, n, schedule == MixSchedule::overlapped, stream);
}

}  // namespace mixrt::cuda
