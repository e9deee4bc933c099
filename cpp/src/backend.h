// backend.h: the seam between the core and its backends, and the one place that knows which
// backends this build has. A backend prepares a loaded model once (the CPU repacks the quantized
// weights into its row tiles, cpu/cpu_model.h; CUDA uploads the weights) and then makes inference
// contexts (Engines) over it. The CUDA backend (cuda/) defines the functions of namespace
// mixrt::cuda declared here; a build without it never references them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine.h"
#include "llama_model.h"
#include "mixrt/mixrt.h"

namespace mixrt {

// A model ready to run on one backend.
class PreparedModel {
public:
    virtual ~PreparedModel() = default;
    virtual mixrt_backend backend() const = 0;
    // A context with a KV cache of n_ctx tokens (0: the model's context length) stored as kv;
    // n_threads: CPU threads (0: all cores); activations: the rounding of every matmul input.
    // Throws mixrt::Error (also for a kv or activations the backend lacks).
    virtual std::unique_ptr<Engine> make_engine(int32_t n_ctx, int32_t n_threads, mixrt_kv_type kv,
                                                mixrt_activations activations) const = 0;
    // The same with n_seq sequences of n_ctx positions each, for batched decoding (Engine::decode).
    // Backends without it refuse (the CUDA engine serves one sequence at a time).
    virtual std::unique_ptr<Engine> make_batch_engine(int32_t n_ctx, int32_t n_seq, int32_t n_threads,
                                                      mixrt_kv_type kv, mixrt_activations activations) const;
};

// "" when this build has the CUDA backend and a CUDA device can be used, else why not.
std::string cuda_unavailable_reason();

// `model` prepared for `requested` (CPU, CUDA, or AUTO: CUDA when cuda_unavailable_reason() is ""
// else the CPU, with the reason in `fallback_note`). The model must outlive the result. Throws
// mixrt::Error (CUDA requested but unavailable, out of device memory naming the bytes, ...).
std::unique_ptr<PreparedModel> prepare_model(const LlamaModel &model, mixrt_backend requested,
                                             std::string &fallback_note);

namespace cuda {
// Defined by the CUDA backend (cuda/device_info.cu, cuda/cuda_context.cu).
std::string device_unavailable_reason();
std::unique_ptr<PreparedModel> prepare(const LlamaModel &model);
}  // namespace cuda

}  // namespace mixrt
