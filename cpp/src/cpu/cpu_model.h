// cpu_model.h: a model prepared for the CPU backend, shared by all its contexts: every linear
// weight (and the output head) as a TiledMatrix, repacked once at load when the kernel table in
// use reads row tiles. The file's pages of the quantized codes and scales that were repacked are
// then released from memory (they stay mapped and readable, e.g. for the token embedding, which
// is read in place row by row), so the weights are resident once.
#pragma once

#include <vector>

#include "cpu/tiled_matrix.h"
#include "llama_model.h"

namespace mixrt {

struct CpuWeights {
    // repack: false for the scalar kernels (they read the file's parts in place). Throws
    // mixrt::Error (out of memory).
    CpuWeights(const LlamaModel &model, bool repack);

    std::vector<LayerOf<TiledMatrix>> layers;
    TiledMatrix output;
};

}  // namespace mixrt
