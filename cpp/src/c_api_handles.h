// c_api_handles.h: what the opaque mixrt_model handle of the C API holds, for code inside the
// project that needs the C++ model behind a handle (the Python extension's benchmark hooks).
#pragma once

#include <memory>
#include <string>

#include "llama_model.h"
#include "mixrt/mixrt.h"
#ifdef MIXRT_WITH_CUDA
#include "cuda_backend.h"
#endif

struct mixrt_model {
    mixrt::LlamaModel model;
    mixrt_backend backend = MIXRT_BACKEND_CPU;
    std::string backend_note;  // why AUTO fell back to the CPU
#ifdef MIXRT_WITH_CUDA
    std::shared_ptr<const mixrt::cuda::DeviceModel> device_weights;
#endif
    // Loads path; with a CUDA request (AUTO or CUDA) uploads the weights (c_api.cpp).
    mixrt_model(const std::string &path, mixrt_backend requested);
};
