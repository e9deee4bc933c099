// cuda_context.cu: see cuda_context.h. The forward pass mirrors the CPU one (cpp/src/cpu/context.cpp) step by
// step; weight products go through matvec (up to kMaxMatvecInputs tokens) or dequantize_f16 +
// gemm_f16w (prefill). Every feed ends with a stream synchronization, which also reports any
// asynchronous CUDA error of its kernels.
#include "cuda_context.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>

#include "backend.h"
#include "cuda_check.h"
#include "error.h"
#include "gemm.h"
#include "layer_ops.h"

namespace mixrt::cuda {

CudaContext::CudaContext(std::shared_ptr<const DeviceModel> weights, int32_t n_ctx)
    : Engine(weights->host(), n_ctx),
      weights_(std::move(weights)),
      p_(model_.params()),
      attn_shape_{p_.n_heads, p_.n_kv_heads, p_.head_dim, n_ctx_} {
    check_attention_shape(attn_shape_);
    cudaStream_t stream = nullptr;
    MIXRT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    stream_.reset(stream);
    int32_t *staging = nullptr;
    MIXRT_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void **>(&staging), (kArgmaxSlot + 1) * sizeof(int32_t),
                                   cudaHostAllocDefault));
    staging_.reset(staging);
    tokens_dev_ = DeviceArray<int32_t>(kMaxBatch + 1, "the token ids");

    // The caches come first: they are the big allocation, and running out should say so early.
    const size_t kv_width = size_t(p_.n_kv_heads) * p_.head_dim;
    const size_t cache = size_t(p_.n_layers) * n_ctx_ * kv_width;
    k_cache_ = DeviceArray<__half>(cache, "the key cache (" + std::to_string(n_ctx_) + " tokens)");
    v_cache_ = DeviceArray<__half>(cache, "the value cache (" + std::to_string(n_ctx_) + " tokens)");
    // RoPE tables exactly as the CPU context computes them.
    std::vector<float> cos_table, sin_table;
    rope_tables(n_ctx_, p_.head_dim, p_.rope_theta, cos_table, sin_table);
    rope_cos_ = DeviceArray<float>(cos_table.size(), "the RoPE cos table");
    rope_sin_ = DeviceArray<float>(sin_table.size(), "the RoPE sin table");
    MIXRT_CUDA_CHECK(cudaMemcpy(rope_cos_.get(), cos_table.data(), cos_table.size() * sizeof(float), cudaMemcpyHostToDevice));
    MIXRT_CUDA_CHECK(cudaMemcpy(rope_sin_.get(), sin_table.data(), sin_table.size() * sizeof(float), cudaMemcpyHostToDevice));

    const ActivationSizes sizes = activation_sizes(p_, kMaxBatch);
    x_ = DeviceArray<float>(sizes.x, "activations");
    xb_ = DeviceArray<float>(sizes.xb, "activations");
    q_ = DeviceArray<float>(sizes.q, "queries");
    k_ = DeviceArray<float>(sizes.kv, "keys");
    v_ = DeviceArray<float>(sizes.kv, "values");
    att_ = DeviceArray<float>(sizes.q, "attention outputs");
    gate_ = DeviceArray<float>(sizes.ffn, "MLP activations");
    up_ = DeviceArray<float>(sizes.ffn, "MLP activations");
    partial_ = DeviceArray<float>(attn_shape_.partial_floats(kMaxBatch), "attention chunk results");
    argmax_ = DeviceArray<int32_t>(1, "the argmax");
}

CudaContext::~CudaContext() {
    if (stream_) cudaStreamSynchronize(stream_.get());
}

void CudaContext::set_capture(mixrt_capture_fn fn, void *) { capture_set_ = fn != nullptr; }

void CudaContext::upload_tokens(const int32_t *tokens, int32_t n, int32_t pos0) {
    int32_t *staging = staging_.get();
    staging[0] = pos0;
    std::memcpy(staging + 1, tokens, size_t(n) * sizeof(int32_t));
    MIXRT_CUDA_CHECK(cudaMemcpyAsync(tokens_dev_.get(), staging, size_t(n + 1) * sizeof(int32_t),
                                     cudaMemcpyHostToDevice, stream_.get()));
}

void CudaContext::feed(const int32_t *tokens, size_t n, bool all_logits) {
    check_feed(tokens, n);
    if (capture_set_)
        fail(MIXRT_ERR_INVALID_ARGUMENT, "a capture function is set, and capture (calibration) runs on the CPU "
                                         "backend only: load the model with backend cpu");
    std::lock_guard<std::mutex> turn(weights_->feed_mutex());
    const size_t vocab = size_t(p_.vocab_size);
    const size_t rows = all_logits ? n : 1;
    if (logits_dev_.size() < rows * vocab) {
        decode_graph_.reset();  // it writes into the old buffer
        decode_warmed_up_ = false;
        logits_dev_ = DeviceArray<float>();
        logits_dev_ = DeviceArray<float>(rows * vocab, "the logits of " + std::to_string(rows) + " tokens");
    }
    logits_rows_ = rows;
    logits_host_valid_ = false;
    run_chunks(tokens, n, all_logits, kMaxBatch, [&](size_t offset, int32_t count, ChunkLogits logits) {
        if (offset > 0) MIXRT_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));  // the staging buffer is free again
        upload_tokens(tokens + offset, count, n_past());
        if (count == 1 && logits.rows == ChunkLogits::last) decode_with_graph();
        else forward(count, logits);
    });
    MIXRT_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
}

void CudaContext::decode_with_graph() {
    cudaStream_t stream = stream_.get();
    if (decode_graph_) {
        MIXRT_CUDA_CHECK(cudaGraphLaunch(decode_graph_.get(), stream));
        return;
    }
    if (!decode_warmed_up_) {  // lazy set-up inside the kernels' host code happens outside the capture
        forward(1, {ChunkLogits::last, 0});
        decode_warmed_up_ = true;
        return;
    }
    MIXRT_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
        forward(1, {ChunkLogits::last, 0});
    } catch (...) {
        cudaGraph_t broken = nullptr;
        cudaStreamEndCapture(stream, &broken);
        if (broken) cudaGraphDestroy(broken);
        throw;
    }
    cudaGraph_t graph = nullptr;
    MIXRT_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (err != cudaSuccess) fail_cuda(err, "cudaGraphInstantiate(decode graph)", __FILE__, __LINE__);
    decode_graph_.reset(exec);
    MIXRT_CUDA_CHECK(cudaGraphLaunch(exec, stream));
}

void CudaContext::linear(const DeviceWeight &w, const float *x, float *y, int32_t n) {
    if (n <= kMaxMatvecInputs) {
        matvec(w, x, y, n, stream_.get());
        return;
    }
    if (!w16_.get())
        w16_ = DeviceArray<__half>(size_t(weights_->max_matrix_elements()), "the f16 weight scratch of prefill");
    dequantize_f16(w, w16_.get(), stream_.get());
    gemm_f16w(w16_.get(), x, y, n, w.rows(), w.cols(), stream_.get());
}

void CudaContext::forward(int32_t n, ChunkLogits logits_kept) {
    cudaStream_t stream = stream_.get();
    const int32_t d = p_.hidden_size, f = p_.ffn_size;
    const size_t kv_width = size_t(p_.n_kv_heads) * p_.head_dim;
    const int32_t *pos0 = tokens_dev_.get();
    const int32_t *ids = tokens_dev_.get() + 1;
    float *x = x_.get(), *xb = xb_.get();

    // Each residual add is fused with the RMSNorm that follows it: xb holds the normed input of the
    // next block throughout.
    gather_rows(weights_->token_embd(), ids, n, x, stream);
    rmsnorm(x, weights_->layers()[0].attn_norm.parts().f32, xb, n, d, p_.rms_norm_eps, stream);
    for (int32_t l = 0; l < p_.n_layers; ++l) {
        const DeviceLayer &w = weights_->layers()[l];
        __half *k_layer = k_cache_.get() + size_t(l) * n_ctx_ * kv_width;
        __half *v_layer = v_cache_.get() + size_t(l) * n_ctx_ * kv_width;
        // Attention block.
        linear(w.attn_q, xb, q_.get(), n);
        linear(w.attn_k, xb, k_.get(), n);
        linear(w.attn_v, xb, v_.get(), n);
        rope_store_kv(q_.get(), k_.get(), v_.get(), n, p_.n_heads, p_.n_kv_heads, p_.head_dim, rope_cos_.get(),
                      rope_sin_.get(), pos0, k_layer, v_layer, stream);
        attention(q_.get(), k_layer, v_layer, pos0, n, attn_shape_, partial_.get(), att_.get(), stream);
        linear(w.attn_output, att_.get(), xb, n);
        add_rmsnorm(x, xb, w.ffn_norm.parts().f32, xb, n, d, p_.rms_norm_eps, stream);
        // SwiGLU MLP block.
        linear(w.ffn_gate, xb, gate_.get(), n);
        linear(w.ffn_up, xb, up_.get(), n);
        swiglu(gate_.get(), up_.get(), int64_t(n) * f, stream);
        linear(w.ffn_down, gate_.get(), xb, n);
        if (l + 1 < p_.n_layers)
            add_rmsnorm(x, xb, weights_->layers()[l + 1].attn_norm.parts().f32, xb, n, d, p_.rms_norm_eps, stream);
    }
    if (logits_kept.rows == ChunkLogits::none) return;
    // The last residual add and the final norm, for every row or only the last; then lm_head.
    const int32_t first = logits_kept.rows == ChunkLogits::all ? 0 : n - 1, rows = n - first;
    const size_t vocab = size_t(p_.vocab_size), skip = size_t(first) * d;
    add_rmsnorm(x + skip, xb + skip, weights_->output_norm().parts().f32, xb + skip, rows, d, p_.rms_norm_eps, stream);
    float *logits = logits_dev_.get() + logits_kept.row0 * vocab;
    linear(weights_->output(), xb + skip, logits, rows);
    argmax(logits + size_t(rows - 1) * vocab, p_.vocab_size, argmax_.get(), stream);
    MIXRT_CUDA_CHECK(cudaMemcpyAsync(staging_.get() + kArgmaxSlot, argmax_.get(), sizeof(int32_t),
                                     cudaMemcpyDeviceToHost, stream));
}

const float *CudaContext::logits() const {
    if (!logits_host_valid_) {
        logits_host_.resize(logits_rows_ * size_t(p_.vocab_size));
        MIXRT_CUDA_CHECK(cudaMemcpy(logits_host_.data(), logits_dev_.get(), logits_host_.size() * sizeof(float),
                                    cudaMemcpyDeviceToHost));
        logits_host_valid_ = true;
    }
    return logits_host_.data();
}

int32_t CudaContext::argmax_last() const {
    if (logits_rows_ == 0) fail(MIXRT_ERR_INVALID_ARGUMENT, "the context has no logits yet (feed tokens first)");
    return staging_.get()[kArgmaxSlot];  // copied by the feed, which synchronized
}

namespace {

// The model with its weights on the GPU (uploaded once); its contexts share them.
class CudaModel : public PreparedModel {
public:
    explicit CudaModel(const LlamaModel &model) : weights_(std::make_shared<const DeviceModel>(model)) {}
    mixrt_backend backend() const override { return MIXRT_BACKEND_CUDA; }
    std::unique_ptr<Engine> make_engine(int32_t n_ctx, int32_t, mixrt_kv_type kv, mixrt_activations activations) const override {
        if (kv != MIXRT_KV_F16)
            fail(MIXRT_ERR_INVALID_ARGUMENT, "the CUDA backend keeps its KV cache in f16; an f32 KV cache needs the CPU backend");
        if (activations != MIXRT_ACT_DEFAULT)
            fail(MIXRT_ERR_INVALID_ARGUMENT, "the CUDA backend does not round activations to block floating point yet; "
                                             "that needs the CPU backend");
        return std::make_unique<CudaContext>(weights_, n_ctx);
    }

private:
    std::shared_ptr<const DeviceModel> weights_;
};

}  // namespace

std::unique_ptr<PreparedModel> prepare(const LlamaModel &model) { return std::make_unique<CudaModel>(model); }

}  // namespace mixrt::cuda
