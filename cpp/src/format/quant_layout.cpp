// quant_layout.cpp: see quant_layout.h. Formulas follow FORMAT.md 5 literally; the fast CPU kernels
// (cpu/tile_kernels.h, on the row tiles repacked from these parts) are tested against
// dequantize_row.
#include "format/quant_layout.h"

#include <cmath>
#include <cstring>

#include "error.h"

namespace mixrt {

namespace {

uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

[[noreturn]] void layout_error(const std::string &what, const std::string &message) {
    fail(MIXRT_ERR_FORMAT, what + ": " + message);
}

void check_finite_f16(const uint16_t *p, uint64_t n, const std::string &what, const char *part) {
    for (uint64_t i = 0; i < n; ++i)
        if ((p[i] & 0x7C00) == 0x7C00)
            layout_error(what, std::string(part) + " entry " + std::to_string(i) + " is not finite");
}

void check_permutation(const uint32_t *perm, int64_t K, const std::string &what) {
    std::vector<bool> seen(K, false);
    for (int64_t j = 0; j < K; ++j) {
        const uint32_t c = perm[j];
        if (c >= uint64_t(K) || seen[c])
            layout_error(what, "perm is not a permutation of 0..K-1 (entry " + std::to_string(j) + " is " + std::to_string(c) + ")");
        seen[c] = true;
    }
}

}  // namespace

const char *dtype_name(DType dtype) {
    switch (dtype) {
        case DType::f32: return "f32";
        case DType::f16: return "f16";
        case DType::q8: return "q8";
        case DType::q4: return "q4";
        case DType::mix: return "mix";
        case DType::bfp8: return "bfp8";
        case DType::bfp6: return "bfp6";
        case DType::bfp5: return "bfp5";
        case DType::bfp4: return "bfp4";
        case DType::bfp3: return "bfp3";
        case DType::mxint8: return "mxint8";
        case DType::mxfp4: return "mxfp4";
        case DType::quik: return "quik";
    }
    return "?";
}

bool is_block_format(DType dtype) {
    return uint32_t(dtype) >= uint32_t(DType::bfp8) && uint32_t(dtype) <= uint32_t(DType::mxfp4);
}

bool is_quantized(DType dtype) { return dtype != DType::f32 && dtype != DType::f16; }

BlockSpec block_spec(DType dtype) {
    switch (dtype) {
        case DType::bfp8: return {16, 8, false};
        case DType::bfp6: return {16, 6, false};
        case DType::bfp5: return {16, 5, false};
        case DType::bfp4: return {16, 4, false};
        case DType::bfp3: return {16, 3, false};
        case DType::mxint8: return {32, 8, false};
        case DType::mxfp4: return {32, 4, true};
        default: fail(MIXRT_ERR_INTERNAL, std::string("block_spec of dtype ") + dtype_name(dtype));
    }
}

std::vector<uint64_t> part_sizes(DType dtype, uint64_t M, uint64_t K, uint64_t k4, uint64_t nnz, uint64_t out_cols) {
    const uint64_t G = ceil_div(K, kGroup), Kp = G * kGroup;
    switch (dtype) {
        case DType::f32: return {4 * M * K};
        case DType::f16: return {2 * M * K};
        case DType::q8: return {M * Kp, 2 * M * G};
        case DType::q4: return {M * Kp / 2, 2 * M * G, 2 * M * G};
        case DType::mix: {
            const MixShape s = mix_shape(int64_t(K), int64_t(k4));
            const uint64_t K2p = s.K2p, G2 = s.G2, B2 = s.B2, G4 = s.G4;
            return {4 * K, M * K2p / 4, M * G2, 2 * M * B2, M * k4 / 2, 2 * M * G4, 2 * M * G4, 4 * (M + 1), 2 * nnz, 2 * nnz};
        }
        case DType::quik: {
            const uint64_t Kinp = ceil_div(K - out_cols, kGroup) * kGroup;
            return {4 * K, M * Kinp / 2, 2 * M, 2 * M * out_cols};
        }
        default: {
            const BlockSpec s = block_spec(dtype);
            return {M * Kp * uint64_t(s.bits) / 8, M * Kp / uint64_t(s.block)};
        }
    }
}

MixCounts mix_counts(uint64_t M, const std::vector<uint64_t> &part_bytes) {
    return {M == 0 ? 0 : 2 * part_bytes[4] / M, part_bytes[8] / 2};
}

MixCounts check_part_sizes(DType dtype, uint64_t M, uint64_t K, const std::vector<uint64_t> &part_bytes,
                           const std::string &what) {
    MixCounts counts{0, 0};
    if (dtype == DType::mix) {
        if (part_bytes.size() != 10)
            fail(MIXRT_ERR_FORMAT, what + " has " + std::to_string(part_bytes.size()) + " parts, dtype mix has 10");
        counts = mix_counts(M, part_bytes);
        if (M == 0 || 2 * part_bytes[4] % M != 0 || counts.k4 % 32 != 0 || counts.k4 > K)
            fail(MIXRT_ERR_FORMAT, what + " has a 4-bit code part of " + std::to_string(part_bytes[4]) + " bytes: K4 = " +
                                       std::to_string(2.0 * part_bytes[4] / M) +
                                       ", expected a multiple of 32 no larger than K = " + std::to_string(K));
    }
    if (dtype == DType::quik) {
        if (part_bytes.size() != 4)
            fail(MIXRT_ERR_FORMAT, what + " has " + std::to_string(part_bytes.size()) + " parts, dtype quik has 4");
        counts.out_cols = M == 0 ? 0 : part_bytes[3] / (2 * M);
        if (M == 0 || part_bytes[3] % (2 * M) != 0 || counts.out_cols > K)
            fail(MIXRT_ERR_FORMAT, what + " has an fp16 column part of " + std::to_string(part_bytes[3]) +
                                       " bytes, expected 2 x M x (fp16 columns) with at most K = " + std::to_string(K) +
                                       " columns");
    }
    const std::vector<uint64_t> expected = part_sizes(dtype, M, K, counts.k4, counts.nnz, counts.out_cols);
    if (part_bytes.size() != expected.size())
        fail(MIXRT_ERR_FORMAT, what + " has " + std::to_string(part_bytes.size()) + " parts, dtype " + dtype_name(dtype) +
                                   " has " + std::to_string(expected.size()));
    for (size_t p = 0; p < part_bytes.size(); ++p)
        if (part_bytes[p] != expected[p])
            fail(MIXRT_ERR_FORMAT, what + " part " + std::to_string(p) + " is " + std::to_string(part_bytes[p]) +
                                       " bytes, its dtype and dims imply " + std::to_string(expected[p]));
    return counts;
}

Weight make_weight(DType dtype, int64_t M, int64_t K, const std::vector<PartSpan> &parts, const std::string &what) {
    Weight w;
    w.dtype = dtype;
    w.rows = M;
    w.cols = K;
    w.G = static_cast<int64_t>(ceil_div(K, kGroup));
    w.Kp = w.G * kGroup;
    if (dtype == DType::mix && K > 65536) layout_error(what, "K is " + std::to_string(K) + ", dtype mix allows at most 65536");
    std::vector<uint64_t> part_bytes;
    for (const PartSpan &part : parts) part_bytes.push_back(part.size);
    const MixCounts counts = check_part_sizes(dtype, uint64_t(M), uint64_t(K), part_bytes, what);
    const uint64_t nnz = counts.nnz;
    auto u16 = [&](size_t p) { return reinterpret_cast<const uint16_t *>(parts[p].data); };
    auto u32 = [&](size_t p) { return reinterpret_cast<const uint32_t *>(parts[p].data); };
    switch (dtype) {
        case DType::f32:
        case DType::f16: w.data = parts[0].data; break;
        case DType::q8:
            w.q8 = {reinterpret_cast<const int8_t *>(parts[0].data), u16(1)};
            check_finite_f16(w.q8.scales, parts[1].size / 2, what, "scale");
            break;
        case DType::q4:
            w.q4 = {parts[0].data, u16(1), u16(2)};
            check_finite_f16(w.q4.scales, parts[1].size / 2, what, "scale");
            check_finite_f16(w.q4.mins, parts[2].size / 2, what, "min");
            break;
        case DType::mix: {
            MixView &m = w.mix;
            const MixShape shape = mix_shape(K, int64_t(counts.k4));
            m.K4 = int64_t(counts.k4);
            m.K2 = shape.K2;
            m.K2p = shape.K2p;
            m.G2 = shape.G2;
            m.B2 = shape.B2;
            m.nnz = int64_t(nnz);
            m.perm = u32(0);
            m.q2 = parts[1].data;
            m.meta2 = parts[2].data;
            m.super2 = u16(3);
            m.w4 = {parts[4].data, u16(5), u16(6)};
            m.row_ptr = u32(7);
            m.cols = u16(8);
            m.vals = u16(9);
            check_permutation(m.perm, K, what);
            check_finite_f16(m.super2, parts[3].size / 2, what, "2-bit super-scale");
            check_finite_f16(m.w4.scales, parts[5].size / 2, what, "4-bit scale");
            check_finite_f16(m.w4.mins, parts[6].size / 2, what, "4-bit min");
            check_finite_f16(m.vals, nnz, what, "outlier value");
            if (m.row_ptr[0] != 0) layout_error(what, "outlier row_ptr[0] is " + std::to_string(m.row_ptr[0]) + ", expected 0");
            for (int64_t r = 0; r < M; ++r) {
                if (m.row_ptr[r + 1] < m.row_ptr[r] || m.row_ptr[r + 1] > nnz)
                    layout_error(what, "outlier row_ptr[" + std::to_string(r + 1) + "] = " +
                                           std::to_string(m.row_ptr[r + 1]) + " decreases or exceeds nnz = " + std::to_string(nnz));
                for (uint32_t o = m.row_ptr[r]; o < m.row_ptr[r + 1]; ++o)
                    if (m.cols[o] >= K || (o > m.row_ptr[r] && m.cols[o] <= m.cols[o - 1]))
                        layout_error(what, "outlier " + std::to_string(o) + " of row " + std::to_string(r) + " has column " +
                                               std::to_string(m.cols[o]) + ": not < K and increasing within its row");
            }
            if (m.row_ptr[M] != nnz)
                layout_error(what, "outlier row_ptr[M] is " + std::to_string(m.row_ptr[M]) + ", expected nnz = " + std::to_string(nnz));
            break;
        }
        case DType::quik: {
            QuikView &q = w.quik;
            q.n_out = int64_t(counts.out_cols);
            q.Kin = K - q.n_out;
            q.Kinp = int64_t(ceil_div(uint64_t(q.Kin), kGroup)) * kGroup;
            q.perm = u32(0);
            q.codes = parts[1].data;
            q.scales = u16(2);
            q.out_w = u16(3);
            check_permutation(q.perm, K, what);
            check_finite_f16(q.scales, uint64_t(M), what, "row scale");
            check_finite_f16(q.out_w, uint64_t(M) * counts.out_cols, what, "fp16 column weight");
            break;
        }
        default: {
            BlockView &b = w.block;
            b.spec = block_spec(dtype);
            b.codes = parts[0].data;
            b.exps = parts[1].data;
            b.row_bytes = w.Kp * b.spec.bits / 8;
            b.blocks = w.Kp / b.spec.block;
            for (uint64_t i = 0; i < parts[1].size; ++i)
                if (b.exps[i] > kBlockExpMax)
                    layout_error(what, "shared exponent " + std::to_string(i) + " is " + std::to_string(b.exps[i]) +
                                           ", expected at most " + std::to_string(kBlockExpMax) + " (255 is NaN)");
            break;
        }
    }
    return w;
}

void dequantize_row(const Weight &w, int64_t r, float *out) {
    const int64_t K = w.cols;
    switch (w.dtype) {
        case DType::f32: std::memcpy(out, static_cast<const float *>(w.data) + r * K, K * sizeof(float)); return;
        case DType::f16: {
            const uint16_t *row = static_cast<const uint16_t *>(w.data) + r * K;
            for (int64_t k = 0; k < K; ++k) out[k] = f16_value(row[k]);
            return;
        }
        case DType::q8:
            for (int64_t k = 0; k < K; ++k) out[k] = q8_element(w.q8.codes, w.q8.scales, w.Kp, w.G, r, k);
            return;
        case DType::q4:
            for (int64_t k = 0; k < K; ++k) out[k] = q4_element(w.q4.codes, w.q4.scales, w.q4.mins, w.Kp / 2, w.G, r, k);
            return;
        case DType::mix: {
            const MixView &m = w.mix;
            const MixShape shape = m.shape();
            // 2-bit columns: perm[0..K2); 4-bit columns: perm[K2..K), a q4 matrix [M, K4].
            for (int64_t j = 0; j < m.K2; ++j) out[m.perm[j]] = mix2_element(m.q2, m.meta2, m.super2, shape, r, j);
            for (int64_t k = 0; k < m.K4; ++k)
                out[m.perm[m.K2 + k]] = q4_element(m.w4.codes, m.w4.scales, m.w4.mins, m.K4 / 2, shape.G4, r, k);
            // Outliers: residuals on top of the dense value.
            for (uint32_t o = m.row_ptr[r]; o < m.row_ptr[r + 1]; ++o) out[m.cols[o]] += f16_value(m.vals[o]);
            return;
        }
        case DType::quik: {
            const QuikView &q = w.quik;
            const float s = f16_value(q.scales[r]);
            for (int64_t j = 0; j < q.Kin; ++j) out[q.perm[j]] = s * float(quik_code(q, r, j));
            for (int64_t j = 0; j < q.n_out; ++j) out[q.perm[q.Kin + j]] = f16_value(q.out_w[r * q.n_out + j]);
            return;
        }
        default: {
            const BlockView &b = w.block;
            for (int64_t k = 0; k < K; ++k) out[k] = block_element(b.spec, b.codes, b.exps, b.row_bytes, b.blocks, r, k);
            return;
        }
    }
}

}  // namespace mixrt
