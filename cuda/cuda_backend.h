// cuda_backend.h: the entry points of the CUDA backend for the C++ core (plain C++, no CUDA
// headers): upload a model's weights once, then create contexts that run it on the GPU.
#pragma once

#include <cstdint>
#include <memory>

#include "engine.h"
#include "llama_model.h"

namespace mixrt::cuda {

class DeviceModel;  // the weights of a LlamaModel on the GPU (device_model.h)

// Uploads every weight of model (through DeviceWeight::upload). Throws mixrt::Error; out of device
// memory names the bytes needed. The LlamaModel must outlive the result.
std::shared_ptr<const DeviceModel> upload_model(const LlamaModel &model);

// A context over the uploaded weights with a KV cache of n_ctx tokens (0: the model's context
// length) in device memory. Keeps `weights` alive.
std::unique_ptr<Engine> make_context(std::shared_ptr<const DeviceModel> weights, int32_t n_ctx);

}  // namespace mixrt::cuda
