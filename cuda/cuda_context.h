// cuda_context.h: the CUDA inference context (an Engine): KV cache (f16) and activations in device
// memory, the forward pass as kernels on one stream, single-token decode replayed from a captured
// CUDA graph. Only token ids go to the device; logits come back on request (logits()) and the
// greedy token as one int (argmax_last()).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "attention.h"
#include "device_array.h"
#include "device_model.h"
#include "engine.h"

namespace mixrt::cuda {

class CudaContext : public Engine {
public:
    // Tokens per forward pass; longer feeds run in chunks of this size.
    static constexpr int32_t kMaxBatch = 256;

    CudaContext(std::shared_ptr<const DeviceModel> weights, int32_t n_ctx);  // throws mixrt::Error
    ~CudaContext() override;

    const char *backend_name() const override { return "cuda"; }
    void feed(const int32_t *tokens, size_t n, bool all_logits) override;
    const float *logits() const override;
    size_t logits_rows() const override { return logits_rows_; }
    int32_t argmax_last() const override;
    void set_capture(mixrt_capture_fn fn, void *user) override;

private:
    // Stages tokens and their first position in pinned memory and copies them to the device.
    void upload_tokens(const int32_t *tokens, int32_t n, int32_t pos0);
    // The forward pass of n staged tokens, keeping the logits `logits` says; the argmax of the last
    // row written goes to the staging buffer.
    void forward(int32_t n, ChunkLogits logits);
    void linear(const DeviceWeight &w, const float *x, float *y, int32_t n);
    void decode_with_graph();  // n = 1, last logits: replays (captures the first time) the graph

    struct StreamDeleter {
        void operator()(cudaStream_t s) const { cudaStreamDestroy(s); }
    };
    struct GraphExecDeleter {
        void operator()(cudaGraphExec_t g) const { cudaGraphExecDestroy(g); }
    };
    struct PinnedDeleter {
        void operator()(int32_t *p) const { cudaFreeHost(p); }
    };

    std::shared_ptr<const DeviceModel> weights_;
    const LlamaParams &p_;
    AttentionShape attn_shape_;
    std::unique_ptr<CUstream_st, StreamDeleter> stream_;
    std::unique_ptr<CUgraphExec_st, GraphExecDeleter> decode_graph_;
    bool decode_warmed_up_ = false;  // one eager single-token run precedes the graph capture

    // Pinned host memory: [0] the first position, [1 .. kMaxBatch] the tokens of a forward pass,
    // [kArgmaxSlot] the argmax of the last logits row (copied back at the end of the pass).
    static constexpr int32_t kArgmaxSlot = kMaxBatch + 1;
    std::unique_ptr<int32_t, PinnedDeleter> staging_;
    DeviceArray<int32_t> tokens_dev_;  // [0] first position, [1..] tokens
    DeviceArray<float> rope_cos_, rope_sin_;
    DeviceArray<__half> k_cache_, v_cache_;  // (layer, n_ctx, n_kv_heads * head_dim)
    DeviceArray<float> x_, xb_, q_, k_, v_, att_, gate_, up_, partial_;
    DeviceArray<__half> w16_;           // dequantized weight of a prefill GEMM
    DeviceArray<float> logits_dev_;     // (rows, vocab)
    DeviceArray<int32_t> argmax_;
    mutable std::vector<float> logits_host_;
    mutable bool logits_host_valid_ = false;
    size_t logits_rows_ = 0;
    bool capture_set_ = false;
};

}  // namespace mixrt::cuda
