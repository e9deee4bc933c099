// model_file.h: a memory-mapped .mixrt file, validated against FORMAT.md (header, metadata,
// tensor table, parts). Everything points into the mapping. Rejections are tested one by one in
// tests/test_bad_files.py.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "format/quant_layout.h"

namespace mixrt {

enum class MetaType : uint32_t { i64 = 1, f64 = 2, string = 3, string_array = 4, f32_array = 5, i32_array = 6 };
const char *meta_type_name(MetaType type);

struct MetaValue {
    MetaType type;
    int64_t i64 = 0;
    double f64 = 0;
    std::string_view str;
    std::vector<std::string_view> strings;
    const uint8_t *array = nullptr;  // f32/i32 arrays, unaligned: read with memcpy
    uint64_t array_len = 0;
};

struct TensorPart {
    const uint8_t *data;
    uint64_t offset;  // from the start of the file
    uint64_t size;
};

struct TensorEntry {
    std::string name;
    DType dtype;
    std::vector<uint64_t> dims;
    uint64_t n_elements;
    std::vector<TensorPart> parts;
};

class ModelFile {
public:
    explicit ModelFile(const std::string &path);  // throws mixrt::Error
    ~ModelFile();
    ModelFile(const ModelFile &) = delete;
    ModelFile &operator=(const ModelFile &) = delete;

    const std::string &path() const { return path_; }
    uint64_t size() const { return size_; }

    const std::vector<std::string> &meta_keys() const { return meta_keys_; }
    const MetaValue *find_meta(std::string_view key) const;
    // Required lookups: throw a FORMAT error naming the key and the expected/found type.
    int64_t meta_i64(std::string_view key) const;
    double meta_f64(std::string_view key) const;
    std::string_view meta_string(std::string_view key) const;
    const MetaValue &meta_array(std::string_view key, MetaType type) const;
    int64_t meta_i64_or(std::string_view key, int64_t fallback) const;

    const std::vector<TensorEntry> &tensors() const { return tensors_; }
    const TensorEntry *find_tensor(std::string_view name) const;

private:
    void map_file();
    void release();
    void parse_header();
    void parse_metadata(uint64_t offset, uint64_t size);
    void parse_tensor_table(uint64_t offset, uint64_t size);
    void check_part_sizes(const TensorEntry &t) const;
    void check_parts();

    std::string path_;
    int fd_ = -1;
    const uint8_t *base_ = nullptr;
    uint64_t size_ = 0;
    uint32_t alignment_ = 0;
    uint64_t data_offset_ = 0;
    std::vector<std::string> meta_keys_;
    std::map<std::string, MetaValue, std::less<>> meta_;
    std::vector<TensorEntry> tensors_;
    std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace mixrt
