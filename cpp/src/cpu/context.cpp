// context.cpp: the Llama forward pass in fp32 activations over weights of any dtype (matmuls in
// cpu/matmul.h), read top to bottom:
// embed -> per layer [RMSNorm -> Q/K/V (+ biases) -> RoPE -> KV cache (f16 or f32) -> causal GQA
// attention (within the sliding window, if any) -> output projection + residual -> RMSNorm -> SwiGLU
// MLP (+ biases) + residual] -> final RMSNorm -> lm_head. With the activations option every matmul
// input is first rounded to block floating point (cpu/activation_rounding.h), or quik inputs take 4
// bits per token instead of 8.
// Tested against the float64 numpy reference in tests/test_forward_reference.py (the real model) and
// tests/test_model_variants.py (every variant of FORMAT.md 3.3).
#include "cpu/context.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "cpu/activation_rounding.h"
#include "cpu/matmul.h"
#include "error.h"
#include "memory_info.h"

namespace mixrt {

void FreeDeleter::operator()(void *p) const { std::free(p); }

namespace {

int32_t default_threads() {
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int32_t>(n);
}

CacheBuffer calloc_cache(size_t count, size_t size, const char *what) {
    void *p = std::calloc(count, size);
    if (!p)
        fail(MIXRT_ERR_OUT_OF_MEMORY,
             std::string("cannot allocate the ") + what + " (" + std::to_string(count * size >> 20) + " MiB)");
    return CacheBuffer(p);
}

// rows[t] += bias for each of the n rows of width w (no bias: nothing).
void add_bias(float *rows, const float *bias, int32_t n, int64_t w) {
    if (!bias) return;
    for (int32_t t = 0; t < n; ++t)
        for (int64_t i = 0; i < w; ++i) rows[size_t(t) * w + i] += bias[i];
}

int quik_input_bits(mixrt_activations a) { return a == MIXRT_ACT_TOKEN4 ? 4 : 8; }

bool rounds_to_bfp(mixrt_activations a) { return a != MIXRT_ACT_DEFAULT && a != MIXRT_ACT_TOKEN4; }

}  // namespace

Context::Context(const LlamaModel &model, const CpuWeights &weights, int32_t n_ctx, int32_t n_threads,
                 mixrt_kv_type kv, mixrt_activations activations, int32_t n_seq)
    : Engine(model, n_ctx),
      p_(model.params()),
      weights_(weights),
      kernels_(best_kernels()),
      pool_(n_threads <= 0 ? default_threads() : n_threads),
      n_seq_(std::max(1, n_seq)),
      seq_len_(size_t(n_seq_), 0),
      kv_(kv),
      activations_(activations),
      xq_{QuantizedInputBuffer(kMaxBatch, std::max<int64_t>({model.params().hidden_size,
                                                            int64_t(model.params().n_heads) * model.params().head_dim,
                                                            model.params().ffn_size}), quik_input_bits(activations)),
          QuantizedInputBuffer(kMaxBatch, model.params().hidden_size, quik_input_bits(activations)),
          QuantizedInputBuffer(kMaxBatch, model.params().hidden_size, quik_input_bits(activations))} {
    rope_tables(n_ctx_, p_.head_dim, p_.rope_theta, rope_cos_, rope_sin_, p_.rope_scaling);
    const size_t kv_width = size_t(p_.n_kv_heads) * p_.head_dim;
    const size_t cache_values = size_t(p_.n_layers) * n_seq_ * n_ctx_ * kv_width;
    const size_t value_bytes = kv_ == MIXRT_KV_F32 ? sizeof(float) : sizeof(uint16_t);
    check_fits_in_memory(2 * cache_values * value_bytes,
                         "the KV cache of " + (n_seq_ > 1 ? std::to_string(n_seq_) + " sequences x " : "") +
                             std::to_string(n_ctx_) + " tokens (" + std::to_string(p_.n_layers) + " layers x " +
                             std::to_string(kv_width) + " keys and values x " + std::to_string(value_bytes) + " bytes)",
                         n_seq_ > 1 ? "use a smaller n_ctx or fewer sequences" : "use a smaller n_ctx");
    k_cache_ = calloc_cache(cache_values, value_bytes, "key cache");
    v_cache_ = calloc_cache(cache_values, value_bytes, "value cache");
    const ActivationSizes sizes = activation_sizes(p_, kMaxBatch);
    if (rounds_to_bfp(activations_))
        xa_.resize(size_t(kMaxBatch) * std::max<size_t>({size_t(p_.hidden_size), size_t(p_.n_heads) * p_.head_dim,
                                                         size_t(p_.ffn_size)}));
    x_.resize(sizes.x);
    xb_.resize(sizes.xb);
    q_.resize(sizes.q);
    k_.resize(sizes.kv);
    v_.resize(sizes.kv);
    att_.resize(sizes.q);
    gate_.resize(sizes.ffn);
    up_.resize(sizes.ffn);
    scores_.resize(size_t(pool_.size()) * (p_.n_heads / p_.n_kv_heads) * n_ctx_);
    logits_.resize(p_.vocab_size);
    tokens_.reserve(n_ctx_);  // feeding tokens never reallocates
}

void Context::feed(const int32_t *tokens, size_t n, bool all_logits) {
    check_feed(tokens, n);
    logits_rows_ = all_logits ? n : 1;
    logits_.resize(logits_rows_ * p_.vocab_size);
    std::vector<int32_t> seq(size_t(std::min<size_t>(n, kMaxBatch)), 0), pos(seq.size()), logit_rows(seq.size());
    run_chunks(tokens, n, all_logits, kMaxBatch, [&](size_t offset, int32_t count, ChunkLogits logits) {
        for (int32_t t = 0; t < count; ++t) pos[t] = n_past() + t;  // tokens_ holds the chunks before
        int32_t n_logit_rows = 0;
        if (logits.rows == ChunkLogits::all)
            for (int32_t t = 0; t < count; ++t) logit_rows[n_logit_rows++] = t;
        else if (logits.rows == ChunkLogits::last)
            logit_rows[n_logit_rows++] = count - 1;
        forward({tokens + offset, seq.data(), pos.data(), count, logit_rows.data(), n_logit_rows, logits.row0});
    });
}

void Context::decode(const mixrt_batch_entry *entries, size_t n) {
    // Every entry is checked before anything runs: a refused batch changes nothing.
    std::vector<int32_t> next(seq_len_);
    next[0] = n_past();
    const int32_t vocab = p_.vocab_size;
    size_t n_logits = 0;
    for (size_t i = 0; i < n; ++i) {
        const mixrt_batch_entry &e = entries[i];
        const std::string at = "decode: entry " + std::to_string(i);
        if (e.seq < 0 || e.seq >= n_seq_)
            fail(MIXRT_ERR_INVALID_ARGUMENT, at + ": seq " + std::to_string(e.seq) + ", expected 0.." +
                                                 std::to_string(n_seq_ - 1));
        if (e.token < 0 || e.token >= vocab)
            fail(MIXRT_ERR_INVALID_ARGUMENT, at + ": token " + std::to_string(e.token) + " is outside the vocabulary of " +
                                                 std::to_string(vocab));
        if (e.pos != next[e.seq])
            fail(MIXRT_ERR_INVALID_ARGUMENT, at + ": pos " + std::to_string(e.pos) + ", expected " +
                                                 std::to_string(next[e.seq]) + " (the next position of sequence " +
                                                 std::to_string(e.seq) + ")");
        if (e.pos >= n_ctx_)
            fail(MIXRT_ERR_CONTEXT_FULL, at + ": sequence " + std::to_string(e.seq) + " is full (" +
                                             std::to_string(n_ctx_) + " tokens)");
        ++next[e.seq];
        n_logits += e.logits != 0;
    }
    logits_rows_ = n_logits;
    logits_.resize(std::max<size_t>(n_logits, 1) * vocab);
    std::vector<int32_t> tokens, seq, pos, logit_rows;
    size_t out_row = 0;
    for (size_t done = 0; done < n;) {
        const int32_t count = int32_t(std::min<size_t>(kMaxBatch, n - done));
        tokens.clear(), seq.clear(), pos.clear(), logit_rows.clear();
        for (int32_t t = 0; t < count; ++t) {
            const mixrt_batch_entry &e = entries[done + t];
            tokens.push_back(e.token), seq.push_back(e.seq), pos.push_back(e.pos);
            if (e.logits) logit_rows.push_back(t);
        }
        forward({tokens.data(), seq.data(), pos.data(), count, logit_rows.data(), int32_t(logit_rows.size()), out_row});
        for (int32_t t = 0; t < count; ++t) {
            if (seq[t] == 0)
                tokens_.push_back(tokens[t]);
            else
                ++seq_len_[seq[t]];
        }
        out_row += logit_rows.size();
        done += count;
    }
}

int32_t Context::seq_len(int32_t seq) const {
    if (seq < 0 || seq >= n_seq_) return -1;
    return seq == 0 ? n_past() : seq_len_[seq];
}

void Context::seq_clear(int32_t seq) {
    if (seq < 0 || seq >= n_seq_)
        fail(MIXRT_ERR_INVALID_ARGUMENT, "seq_clear: seq " + std::to_string(seq) + ", expected 0.." +
                                             std::to_string(n_seq_ - 1));
    if (seq == 0)
        tokens_.clear();
    else
        seq_len_[seq] = 0;
}

void Context::reset() {
    Engine::reset();
    std::fill(seq_len_.begin(), seq_len_.end(), 0);
}

// ---- helpers ------------------------------------------------------------------------------------

void Context::matmul(const TiledMatrix &w, const float *x, float *out, int32_t n) {
    parallel_matmul(kernels_, pool_, xq_[0], w, activations(x, n, w.weight().cols), out, n);
}

const float *Context::activations(const float *x, int32_t n, int64_t K) {
    if (!rounds_to_bfp(activations_)) return x;
    round_rows_to_bfp(x, n, K, int(activations_), xa_.data());
    return xa_.data();
}

void Context::rmsnorm(const float *x, const Weight &gain, float *out, int32_t n) const {
    const int32_t d = p_.hidden_size;
    const float *g = static_cast<const float *>(gain.data);
    for (int32_t t = 0; t < n; ++t) {
        const float *xt = x + size_t(t) * d;
        float *ot = out + size_t(t) * d;
        double ss = 0;
        for (int32_t i = 0; i < d; ++i) ss += double(xt[i]) * xt[i];
        const float scale = static_cast<float>(1.0 / std::sqrt(ss / d + p_.rms_norm_eps));
        for (int32_t i = 0; i < d; ++i) ot[i] = xt[i] * scale * g[i];
    }
}

// Rotate-half RoPE (FORMAT.md 3.1): dimension i pairs with i + head_dim/2.
void Context::rope(float *x, const Rows &rows, int32_t n_heads) const {
    const int32_t hd = p_.head_dim, half = hd / 2;
    for (int32_t t = 0; t < rows.n; ++t) {
        const float *c = rope_cos_.data() + size_t(rows.pos[t]) * half;
        const float *s = rope_sin_.data() + size_t(rows.pos[t]) * half;
        for (int32_t h = 0; h < n_heads; ++h) {
            float *v = x + (size_t(t) * n_heads + h) * hd;
            for (int32_t i = 0; i < half; ++i) {
                const float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = a * s[i] + b * c[i];
            }
        }
    }
}

size_t Context::kv_offset(int layer, int32_t seq, int32_t pos) const {
    return ((size_t(layer) * n_seq_ + seq) * n_ctx_ + pos) * p_.n_kv_heads * p_.head_dim;
}

// The batch's keys and values (k_, v_) into the cache of `layer`, each row at its sequence and
// position, in runs of rows that continue one sequence.
void Context::store_kv(int layer, const Rows &rows) {
    const size_t kv_width = size_t(p_.n_kv_heads) * p_.head_dim;
    for (int32_t t = 0; t < rows.n;) {
        int32_t end = t + 1;
        while (end < rows.n && rows.seq[end] == rows.seq[t] && rows.pos[end] == rows.pos[t] + (end - t)) ++end;
        const size_t at = kv_offset(layer, rows.seq[t], rows.pos[t]);
        const int64_t count = int64_t(end - t) * kv_width;
        const float *k = k_.data() + size_t(t) * kv_width, *v = v_.data() + size_t(t) * kv_width;
        if (kv_ == MIXRT_KV_F32) {
            std::memcpy(static_cast<float *>(k_cache_.get()) + at, k, count * sizeof(float));
            std::memcpy(static_cast<float *>(v_cache_.get()) + at, v, count * sizeof(float));
        } else {
            kernels_.to_f16(k, static_cast<uint16_t *>(k_cache_.get()) + at, count);
            kernels_.to_f16(v, static_cast<uint16_t *>(v_cache_.get()) + at, count);
        }
        t = end;
    }
}

void Context::attention(int layer, const Rows &rows) {
    const size_t at = kv_offset(layer, 0, 0);
    if (kv_ == MIXRT_KV_F32)
        attention(static_cast<const float *>(k_cache_.get()) + at, static_cast<const float *>(v_cache_.get()) + at, rows);
    else
        attention(static_cast<const uint16_t *>(k_cache_.get()) + at, static_cast<const uint16_t *>(v_cache_.get()) + at,
                  rows);
}

namespace {
inline void attn_scores(const CpuKernels &k, const float *q, int64_t nq, int64_t q_stride, const uint16_t *K,
                        int64_t stride, int64_t len, int64_t hd, float *scores) {
    k.attn_scores_f16(q, nq, q_stride, K, stride, len, hd, scores);
}
inline void attn_scores(const CpuKernels &k, const float *q, int64_t nq, int64_t q_stride, const float *K,
                        int64_t stride, int64_t len, int64_t hd, float *scores) {
    k.attn_scores_f32(q, nq, q_stride, K, stride, len, hd, scores);
}
inline void attn_values(const CpuKernels &k, const float *p, int64_t nq, const uint16_t *V, int64_t stride, int64_t len,
                        int64_t hd, float *out, int64_t out_stride) {
    k.attn_values_f16(p, nq, V, stride, len, hd, out, out_stride);
}
inline void attn_values(const CpuKernels &k, const float *p, int64_t nq, const float *V, int64_t stride, int64_t len,
                        int64_t hd, float *out, int64_t out_stride) {
    k.attn_values_f32(p, nq, V, stride, len, hd, out, out_stride);
}
}  // namespace

// Causal grouped-query attention of the batch's queries over the cache of one layer (K, V: its
// sequence 0, which with the others already holds the batch's keys and values): row t of sequence s
// at position pos gets att[t, h] = softmax(q[t, h] . K_s[first..pos] / sqrt(hd)) V_s[first..pos],
// first = 0, or pos + 1 - sliding_window with a sliding window. The (token, head) items are split
// evenly across the threads; each thread takes its items in runs of the heads of one token that
// share a KV head, so the kernels read each cached row once per run.
template <typename KV>
void Context::attention(const KV *K, const KV *V, const Rows &rows) {
    const int32_t hd = p_.head_dim, n_heads = p_.n_heads, group = p_.n_heads / p_.n_kv_heads;
    const size_t kv_width = size_t(p_.n_kv_heads) * hd, q_width = size_t(n_heads) * hd;
    const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hd));
    const int64_t items = int64_t(rows.n) * n_heads;
    const size_t seq_stride = size_t(n_ctx_) * kv_width;
    const int threads = pool_.size();
    pool_.parallel_for(threads, [&](int64_t tid0, int64_t tid1) {
        for (int64_t tid = tid0; tid < tid1; ++tid) {
            float *scores = scores_.data() + size_t(tid) * group * n_ctx_;
            const int64_t end = items * (tid + 1) / threads;
            for (int64_t item = items * tid / threads; item < end;) {
                const int32_t t = int32_t(item / n_heads), h = int32_t(item % n_heads);
                const int32_t kvh = h / group, last = rows.pos[t];
                const int32_t first = p_.sliding_window ? std::max(0, last + 1 - p_.sliding_window) : 0;
                const int32_t len = last + 1 - first;
                const int32_t nq = int32_t(std::min<int64_t>((kvh + 1) * group - h, end - item));
                const float *q = q_.data() + size_t(t) * q_width + size_t(h) * hd;
                const size_t offset = size_t(rows.seq[t]) * seq_stride + size_t(first) * kv_width + size_t(kvh) * hd;
                attn_scores(kernels_, q, nq, hd, K + offset, kv_width, len, hd, scores);
                kernels_.softmax_rows(scores, nq, len, inv_sqrt);
                attn_values(kernels_, scores, nq, V + offset, kv_width, len, hd,
                            att_.data() + size_t(t) * q_width + size_t(h) * hd, hd);
                item += nq;
            }
        }
    });
}

// gate_ = silu(xb W_gate^T + b_gate) * (xb W_up^T + b_up): the MLP of models with biases (the fused
// parallel_swiglu applies silu before a bias could be added).
void Context::swiglu_with_biases(const LayerOf<TiledMatrix> &w, const LayerBiases &b, int32_t n) {
    const int64_t f = p_.ffn_size;
    QuantizedInputBuffer *const xq[] = {&xq_[0], &xq_[1]};
    const TiledMatrix *const ws[] = {&w.ffn_gate, &w.ffn_up};
    float *const outs[] = {gate_.data(), up_.data()};
    parallel_matmuls(kernels_, pool_, xq, ws, outs, 2, activations(xb_.data(), n, p_.hidden_size), n);
    add_bias(gate_.data(), b.ffn_gate, n, f);
    add_bias(up_.data(), b.ffn_up, n, f);
    for (size_t i = 0; i < size_t(n) * f; ++i) gate_[i] = gate_[i] / (1.0f + std::exp(-gate_[i])) * up_[i];
}

// ---- the forward pass ---------------------------------------------------------------------------

void Context::forward(const Rows &rows) {
    const int32_t d = p_.hidden_size, n = rows.n;

    // Token embedding: x[t] = token_embd[token[t]] (decoded from its dtype).
    for (int32_t t = 0; t < n; ++t) dequantize_row(model_.token_embd(), rows.tokens[t], x_.data() + size_t(t) * d);

    for (int32_t l = 0; l < p_.n_layers; ++l) {
        const LayerOf<TiledMatrix> &w = weights_.layers[l];
        const LayerBiases &b = model_.biases()[l];
        // Attention block.
        rmsnorm(x_.data(), w.attn_norm.weight(), xb_.data(), n);
        capture(l, MIXRT_SITE_ATTN_IN, xb_.data(), n, w.attn_q.weight().cols);
        {
            QuantizedInputBuffer *const xq[] = {&xq_[0], &xq_[1], &xq_[2]};
            const TiledMatrix *const ws[] = {&w.attn_q, &w.attn_k, &w.attn_v};
            float *const outs[] = {q_.data(), k_.data(), v_.data()};
            parallel_matmuls(kernels_, pool_, xq, ws, outs, 3, activations(xb_.data(), n, d), n);
        }
        add_bias(q_.data(), b.attn_q, n, w.attn_q.weight().rows);
        add_bias(k_.data(), b.attn_k, n, w.attn_k.weight().rows);
        add_bias(v_.data(), b.attn_v, n, w.attn_v.weight().rows);
        rope(q_.data(), rows, p_.n_heads);
        rope(k_.data(), rows, p_.n_kv_heads);
        store_kv(l, rows);
        attention(l, rows);
        capture(l, MIXRT_SITE_ATTN_OUT, att_.data(), n, w.attn_output.weight().cols);
        matmul(w.attn_output, att_.data(), xb_.data(), n);
        add_bias(xb_.data(), b.attn_output, n, d);
        for (size_t i = 0; i < size_t(n) * d; ++i) x_[i] += xb_[i];

        // SwiGLU MLP block: x += W_down (silu(W_gate xb) * (W_up xb)).
        rmsnorm(x_.data(), w.ffn_norm.weight(), xb_.data(), n);
        capture(l, MIXRT_SITE_FFN_IN, xb_.data(), n, w.ffn_gate.weight().cols);
        if (p_.bias_mlp)
            swiglu_with_biases(w, b, n);
        else
            parallel_swiglu(kernels_, pool_, xq_[0], xq_[1], w.ffn_gate, w.ffn_up, activations(xb_.data(), n, d),
                            gate_.data(), up_.data(), n);
        capture(l, MIXRT_SITE_FFN_DOWN, gate_.data(), n, w.ffn_down.weight().cols);
        matmul(w.ffn_down, gate_.data(), xb_.data(), n);
        add_bias(xb_.data(), b.ffn_down, n, d);
        for (size_t i = 0; i < size_t(n) * d; ++i) x_[i] += xb_[i];
    }

    if (rows.n_logit_rows == 0) return;
    // Final norm and lm_head for the rows whose logits are kept (gathered, unless they are all).
    const float *kept = x_.data();
    if (rows.n_logit_rows < n) {
        for (int32_t r = 0; r < rows.n_logit_rows; ++r)
            std::memcpy(xb_.data() + size_t(r) * d, x_.data() + size_t(rows.logit_rows[r]) * d, size_t(d) * sizeof(float));
        kept = xb_.data();
    }
    rmsnorm(kept, model_.output_norm(), xb_.data(), rows.n_logit_rows);
    matmul(weights_.output, xb_.data(), logits_.data() + rows.out_row0 * p_.vocab_size, rows.n_logit_rows);
}

}  // namespace mixrt
