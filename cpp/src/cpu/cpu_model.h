// cpu_model.h: a model prepared for the CPU backend, shared by all its contexts: every linear
// weight (and the output head) as a TiledMatrix, repacked once at load. The file's pages of the
// quantized codes and scales that were repacked are then released from memory (they stay mapped
// and readable, e.g. for the token embedding, which is read in place row by row), so the weights
// are resident once.
#pragma once

#include <vector>

#include "cpu/tiled_matrix.h"
#include "llama_model.h"

namespace mixrt {

struct CpuWeights {
    explicit CpuWeights(const LlamaModel &model);  // throws mixrt::Error (out of memory)

    std::vector<LayerOf<TiledMatrix>> layers;
    TiledMatrix output;
};

}  // namespace mixrt
