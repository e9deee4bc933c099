// device_model.cu: uploads a LlamaModel's weights (DeviceModel).
#include "device_model.h"

#include <algorithm>
#include <string>

#include "error.h"

namespace mixrt::cuda {

namespace {

// Bytes of all tensors as stored in the file (what the upload needs, before padding).
uint64_t file_tensor_bytes(const LlamaModel &model) {
    uint64_t total = 0;
    for (const TensorEntry &t : model.file().tensors())
        for (const auto &part : t.parts) total += part.size;
    return total;
}

}  // namespace

DeviceModel::DeviceModel(const LlamaModel &model) : host_(model), tied_(model.params().tie_word_embeddings) {
    auto upload = [this, &model](const Weight &w) {
        DeviceWeight d;
        try {
            d = DeviceWeight::upload(w);
        } catch (const Error &e) {
            if (e.status() != MIXRT_ERR_OUT_OF_MEMORY) throw;
            fail(MIXRT_ERR_OUT_OF_MEMORY, std::string(e.what()) + "; the model's weights need about " +
                                              std::to_string(file_tensor_bytes(model)) + " bytes of device memory, " +
                                              std::to_string(bytes_) + " were uploaded before this failed");
        }
        bytes_ += d.device_bytes();
        if (w.rows > 1) max_elements_ = std::max(max_elements_, w.rows * w.cols);
        return d;
    };
    token_embd_ = upload(model.token_embd());
    output_norm_ = upload(model.output_norm());
    if (!tied_) output_ = upload(model.output());
    layers_.reserve(model.layers().size());
    for (const LayerWeights &l : model.layers()) layers_.push_back(map_layer(l, upload));
}

}  // namespace mixrt::cuda
