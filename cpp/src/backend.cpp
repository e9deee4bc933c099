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
    std::unique_ptr<Engine> make_engine(int32_t n_ctx, int32_t n_threads, mixrt_kv_type kv) const override {
        return std::make_unique<Context>(model_, weights_, n_ctx, n_threads, kv);
    }

private:
    const LlamaModel &model_;
    const CpuWeights weights_;
};

}  // namespace

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
    const std::string why_not = cuda_unavailable_reason();
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
