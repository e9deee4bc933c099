// backend.cpp: see backend.h. The CPU backend is always built; the CUDA one when MIXRT_WITH_CUDA.
#include "backend.h"

#include "cpu/context.h"
#include "cpu/cpu_model.h"
#include "cpu/kernels.h"
#include "error.h"

namespace mixrt {

namespace {

class CpuModel : public PreparedModel {
public:
    explicit CpuModel(const LlamaModel &model) : model_(model), weights_(model, best_kernels().reads_tiles) {}
    mixrt_backend backend() const override { return MIXRT_BACKEND_CPU; }
    std::unique_ptr<Engine> make_engine(int32_t n_ctx, int32_t n_threads, mixrt_kv_type kv,
                                        mixrt_activations activations) const override {
        return std::make_unique<Context>(model_, weights_, n_ctx, n_threads, kv, activations);
    }
    std::unique_ptr<Engine> make_batch_engine(int32_t n_ctx, int32_t n_seq, int32_t n_threads, mixrt_kv_type kv,
                                              mixrt_activations activations) const override {
        return std::make_unique<Context>(model_, weights_, n_ctx, n_threads, kv, activations, n_seq);
    }

private:
    const LlamaModel &model_;
    const CpuWeights weights_;
};

// Why the CUDA backend cannot run this model ("" when it can): the model variants of FORMAT.md 3.3
// (RoPE scaling, biases, sliding window) and the dtypes it does not implement yet (the block formats
// of FORMAT.md 5.6 and quik, 5.7).
std::string cuda_model_unsupported_reason(const LlamaModel &model) {
    const LlamaParams &p = model.params();
    const char *missing = "";
    if (p.rope_scaling.type != RopeScalingType::none)
        return std::string("llama.rope.scaling_type is '") + rope_scaling_name(p.rope_scaling.type) +
               "', which the CUDA backend does not implement yet";
    if (!p.rope_scaling.freq_factors.empty()) missing = "llama.rope.freq_factors";
    if (p.sliding_window) missing = "llama.sliding_window";
    if (model.has_biases()) missing = "llama.bias.*";
    if (*missing) return std::string("the model uses ") + missing + ", which the CUDA backend does not implement yet";
    const auto &layers = model.layers();
    for (size_t i = 0; i < layers.size(); ++i) {
        const LayerWeights &l = layers[i];
        for (const auto &[name, w] : {std::pair{"attn_q", &l.attn_q}, {"attn_k", &l.attn_k}, {"attn_v", &l.attn_v},
                                      {"attn_output", &l.attn_output}, {"ffn_gate", &l.ffn_gate},
                                      {"ffn_up", &l.ffn_up}, {"ffn_down", &l.ffn_down}})
            if (is_block_format(w->dtype) || w->dtype == DType::quik)
                return std::string("tensor 'blk.") + std::to_string(i) + "." + name + ".weight' has dtype " +
                       dtype_name(w->dtype) + ", which the CUDA backend does not implement yet";
    }
    return "";
}

}  // namespace

std::unique_ptr<Engine> PreparedModel::make_batch_engine(int32_t, int32_t n_seq, int32_t, mixrt_kv_type,
                                                         mixrt_activations) const {
    fail(MIXRT_ERR_INVALID_ARGUMENT, "n_seq " + std::to_string(n_seq) + ": contexts of several sequences run on the "
                                     "CPU backend only (the CUDA engine serves one sequence at a time)");
}

std::string cuda_unavailable_reason() {
#ifdef MIXRT_WITH_CUDA
    return cuda::device_unavailable_reason();
#else
    return "mixrt was built without the CUDA backend";
#endif
}

std::unique_ptr<PreparedModel> prepare_model(const LlamaModel &model, mixrt_backend requested,
                                             std::string &fallback_note) {
    if (requested == MIXRT_BACKEND_CPU) return std::make_unique<CpuModel>(model);
    std::string why_not = cuda_model_unsupported_reason(model);
    if (why_not.empty()) why_not = cuda_unavailable_reason();
    if (!why_not.empty()) {
        if (requested == MIXRT_BACKEND_CUDA)
            fail(MIXRT_ERR_INVALID_ARGUMENT, "backend cuda requested but unavailable: " + why_not);
        fallback_note = "CUDA unavailable (" + why_not + "), running on the CPU";
        return std::make_unique<CpuModel>(model);
    }
#ifdef MIXRT_WITH_CUDA
    return cuda::prepare(model);
#else
    fail(MIXRT_ERR_INTERNAL, "no CUDA backend in this build");  // cuda_unavailable_reason() said so
#endif
}

}  // namespace mixrt
