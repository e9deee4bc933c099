// speed_probe.h: the measurements behind `mixrt bench`: the machine's memory read bandwidth (a
// multi-threaded reduction over a buffer far larger than the caches, in the same process and
// thread pool as the model) and the time of matmuls over a model's own weights (--gemv).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cpu/tiled_matrix.h"

namespace mixrt {

// Bytes per second of reading `bytes` once with `threads` threads, for each of `reps` passes.
std::vector<double> read_bandwidth(int threads, size_t bytes, int reps);

// Seconds of one pass of matmuls (n tokens, the best kernel table, `threads` threads) over each of
// `weights` in turn, for each of `reps` passes after one warm-up pass. Passing the same-shaped
// weights of every layer streams them from memory as decode does.
std::vector<double> time_matmuls(const std::vector<const TiledMatrix *> &weights, int threads, int n, int reps);

}  // namespace mixrt
