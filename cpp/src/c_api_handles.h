// c_api_handles.h: what the opaque mixrt_model handle of the C API holds, for code inside the
// project that needs the C++ model behind a handle (the Python extension's benchmark hooks).
#pragma once

#include <string>

#include "llama_model.h"

struct mixrt_model {
    mixrt::LlamaModel model;
    explicit mixrt_model(const std::string &path) : model(path) {}
};
