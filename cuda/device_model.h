// device_model.h: every weight of a LlamaModel uploaded to the GPU once (DeviceWeight each), shared
// by all CUDA contexts of the model.
#pragma once

#include <mutex>
#include <vector>

#include "device_weight.h"
#include "llama_model.h"

namespace mixrt::cuda {

using DeviceLayer = LayerOf<DeviceWeight>;

class DeviceModel {
public:
    explicit DeviceModel(const LlamaModel &model);  // uploads; throws mixrt::Error

    const LlamaModel &host() const { return host_; }
    const DeviceWeight &token_embd() const { return token_embd_; }
    const DeviceWeight &output_norm() const { return output_norm_; }
    const DeviceWeight &output() const { return tied_ ? token_embd_ : output_; }  // the lm_head
    const std::vector<DeviceLayer> &layers() const { return layers_; }
    uint64_t device_bytes() const { return bytes_; }
    // The most elements of any matrix the forward pass multiplies (size of the f16 GEMM scratch).
    int64_t max_matrix_elements() const { return max_elements_; }
    // Held by a context for a whole feed: the weights' input staging scratch (device_weight.h)
    // serves one stream at a time, so contexts of one model take turns.
    std::mutex &feed_mutex() const { return feed_mutex_; }

private:
    const LlamaModel &host_;
    bool tied_;
    DeviceWeight token_embd_, output_norm_, output_;
    std::vector<DeviceLayer> layers_;
    uint64_t bytes_ = 0;
    int64_t max_elements_ = 0;
    mutable std::mutex feed_mutex_;
};

}  // namespace mixrt::cuda
