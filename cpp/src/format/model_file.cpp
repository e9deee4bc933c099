// model_file.cpp: maps a .mixrt file and checks every rule of FORMAT.md sections 2-5 and 6
// (items 1-6 and 10; the model-level items 7-9 and 11 are checked in llama_model.cpp).
#include "format/model_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "error.h"
#include "text/unicode.h"

namespace mixrt {

namespace {

constexpr uint8_t kMagic[8] = {'M', 'I', 'X', 'R', 'T', 0, '\r', '\n'};
constexpr uint32_t kVersionMajor = 1;
constexpr uint64_t kHeaderSize = 128;
constexpr uint32_t kMaxNameLength = 256;

[[noreturn]] void format_error(const std::string &path, const std::string &what) {
    fail(MIXRT_ERR_FORMAT, path + ": " + what);
}

bool valid_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        const unicode::Utf8Char c = unicode::decode_utf8(s, i);
        if (!c.valid) return false;
        i += c.length;
    }
    return true;
}

bool valid_key(std::string_view key) {
    for (char c : key)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.')) return false;
    return true;
}

// Reads little-endian values from one section, failing with the section's name on overrun.
class Cursor {
public:
    Cursor(const std::string &path, const char *section, const uint8_t *begin, uint64_t size)
        : path_(path), section_(section), p_(begin), end_(begin + size) {}

    uint64_t remaining() const { return static_cast<uint64_t>(end_ - p_); }

    const uint8_t *take(uint64_t n, const char *what) {
        if (n > remaining())
            format_error(path_, std::string(section_) + " section is truncated: " + what + " needs " +
                                    std::to_string(n) + " bytes, " + std::to_string(remaining()) + " left");
        const uint8_t *at = p_;
        p_ += n;
        return at;
    }
    template <typename T>
    T read(const char *what) {
        T v;
        std::memcpy(&v, take(sizeof(T), what), sizeof(T));
        return v;
    }
    std::string_view string(const char *what) {
        uint32_t len = read<uint32_t>(what);
        const uint8_t *at = take(len, what);
        std::string_view s(reinterpret_cast<const char *>(at), len);
        if (!valid_utf8(s)) format_error(path_, std::string(section_) + ": " + what + " is not valid UTF-8");
        return s;
    }

private:
    const std::string &path_;
    const char *section_;
    const uint8_t *p_;
    const uint8_t *end_;
};

// a * b, failing on overflow.
uint64_t checked_mul(uint64_t a, uint64_t b, const std::string &path, const std::string &what) {
    if (a != 0 && b > UINT64_MAX / a) format_error(path, what + ": size overflows 64 bits");
    return a * b;
}

}  // namespace

const char *meta_type_name(MetaType type) {
    switch (type) {
        case MetaType::i64: return "i64";
        case MetaType::f64: return "f64";
        case MetaType::string: return "string";
        case MetaType::string_array: return "string array";
        case MetaType::f32_array: return "f32 array";
        case MetaType::i32_array: return "i32 array";
    }
    return "?";
}

ModelFile::ModelFile(const std::string &path) : path_(path) {
    map_file();
    try {
        parse_header();
    } catch (...) {
        release();
        throw;
    }
}

ModelFile::~ModelFile() { release(); }

void ModelFile::release() {
    if (base_) munmap(const_cast<uint8_t *>(base_), size_);
    if (fd_ >= 0) close(fd_);
    base_ = nullptr;
    fd_ = -1;
}

void ModelFile::map_file() {
    fd_ = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) fail(MIXRT_ERR_IO, "cannot open '" + path_ + "': " + std::strerror(errno));
    struct stat st;
    if (fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd_);
        fd_ = -1;
        fail(MIXRT_ERR_IO, "'" + path_ + "' is not a regular file");
    }
    size_ = static_cast<uint64_t>(st.st_size);
    if (size_ < kHeaderSize) {
        close(fd_);
        fd_ = -1;
        format_error(path_, "file is " + std::to_string(size_) + " bytes, shorter than the " +
                                std::to_string(kHeaderSize) + "-byte header");
    }
    void *p = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (p == MAP_FAILED) {
        close(fd_);
        fd_ = -1;
        fail(MIXRT_ERR_IO, "cannot map '" + path_ + "': " + std::strerror(errno));
    }
    base_ = static_cast<const uint8_t *>(p);
}

void ModelFile::parse_header() {
    Cursor h(path_, "header", base_, kHeaderSize);
    if (std::memcmp(h.take(8, "magic"), kMagic, 8) != 0)
        format_error(path_, "wrong magic: not a .mixrt file");
    uint32_t major = h.read<uint32_t>("version_major");
    h.read<uint32_t>("version_minor");
    if (major != kVersionMajor)
        format_error(path_, "version_major is " + std::to_string(major) + ", this reader supports " +
                                std::to_string(kVersionMajor));
    alignment_ = h.read<uint32_t>("alignment");
    if (alignment_ < 64 || alignment_ > 65536 || (alignment_ & (alignment_ - 1)) != 0)
        format_error(path_, "alignment is " + std::to_string(alignment_) +
                                ", expected a power of two in 64..65536");
    uint32_t flags = h.read<uint32_t>("flags");
    if (flags != 0) format_error(path_, "flags is " + std::to_string(flags) + ", expected 0");
    uint64_t meta_off = h.read<uint64_t>("metadata_offset");
    uint64_t meta_size = h.read<uint64_t>("metadata_size");
    uint64_t table_off = h.read<uint64_t>("tensor_table_offset");
    uint64_t table_size = h.read<uint64_t>("tensor_table_size");
    data_offset_ = h.read<uint64_t>("data_offset");
    uint64_t data_size = h.read<uint64_t>("data_size");
    uint64_t file_size = h.read<uint64_t>("file_size");
    const uint8_t *reserved = h.take(48, "reserved");
    for (int i = 0; i < 48; ++i)
        if (reserved[i] != 0) format_error(path_, "reserved header byte " + std::to_string(80 + i) + " is not zero");

    if (file_size != size_)
        format_error(path_, "file_size field says " + std::to_string(file_size) + " bytes, the file has " +
                                std::to_string(size_) + " (truncated or extended)");
    auto section_end = [&](uint64_t off, uint64_t size, const char *name) {
        if (off > size_ || size > size_ - off)
            format_error(path_, std::string(name) + " section [" + std::to_string(off) + ", +" +
                                    std::to_string(size) + ") lies outside the file of " + std::to_string(size_) + " bytes");
        return off + size;
    };
    uint64_t meta_end = section_end(meta_off, meta_size, "metadata");
    uint64_t table_end = section_end(table_off, table_size, "tensor table");
    section_end(data_offset_, data_size, "data");
    if (meta_off < kHeaderSize)
        format_error(path_, "metadata_offset is " + std::to_string(meta_off) + ", inside the 128-byte header");
    if (table_off < meta_end)
        format_error(path_, "tensor table (offset " + std::to_string(table_off) +
                                ") overlaps or precedes the metadata section ending at " + std::to_string(meta_end));
    if (data_offset_ < table_end)
        format_error(path_, "data section (offset " + std::to_string(data_offset_) +
                                ") overlaps or precedes the tensor table ending at " + std::to_string(table_end));
    if (data_offset_ % alignment_ != 0)
        format_error(path_, "data_offset " + std::to_string(data_offset_) + " is not a multiple of the alignment " +
                                std::to_string(alignment_));
    if (data_offset_ + data_size != size_)
        format_error(path_, "data_offset + data_size = " + std::to_string(data_offset_ + data_size) +
                                ", expected the file size " + std::to_string(size_));

    parse_metadata(meta_off, meta_size);
    parse_tensor_table(table_off, table_size);
    check_parts();
}

void ModelFile::parse_metadata(uint64_t offset, uint64_t size) {
    Cursor c(path_, "metadata", base_ + offset, size);
    uint64_t count = c.read<uint64_t>("entry count");
    // Every entry takes at least 4 (key length) + 1 (key) + 4 (type) bytes.
    if (count > c.remaining() / 9)
        format_error(path_, "metadata count " + std::to_string(count) + " cannot fit in " +
                                std::to_string(size) + " bytes");
    for (uint64_t i = 0; i < count; ++i) {
        std::string_view key = c.string("key");
        std::string ks(key);
        if (key.empty() || key.size() > kMaxNameLength || !valid_key(key))
            format_error(path_, "metadata entry " + std::to_string(i) + " has an invalid key '" + ks +
                                    "' (1..256 characters of [a-z0-9_.])");
        if (meta_.count(ks)) format_error(path_, "metadata key '" + ks + "' appears twice");
        MetaValue v;
        uint32_t type = c.read<uint32_t>("value type");
        v.type = static_cast<MetaType>(type);
        switch (v.type) {
            case MetaType::i64: v.i64 = c.read<int64_t>("i64 value"); break;
            case MetaType::f64: v.f64 = c.read<double>("f64 value"); break;
            case MetaType::string: v.str = c.string("string value"); break;
            case MetaType::string_array: {
                uint64_t n = c.read<uint64_t>("array length");
                if (n > c.remaining() / 4)
                    format_error(path_, "metadata '" + ks + "': array of " + std::to_string(n) +
                                            " strings cannot fit in the section");
                v.strings.reserve(n);
                for (uint64_t k = 0; k < n; ++k) v.strings.push_back(c.string("array string"));
                break;
            }
            case MetaType::f32_array:
            case MetaType::i32_array: {
                v.array_len = c.read<uint64_t>("array length");
                if (v.array_len > c.remaining() / 4)
                    format_error(path_, "metadata '" + ks + "': array of " + std::to_string(v.array_len) +
                                            " elements runs past the section end");
                v.array = c.take(v.array_len * 4, "array data");
                break;
            }
            default:
                format_error(path_, "metadata '" + ks + "' has unknown value type " + std::to_string(type));
        }
        meta_keys_.push_back(ks);
        meta_.emplace(ks, std::move(v));
    }
    if (c.remaining() != 0)
        format_error(path_, "metadata section has " + std::to_string(c.remaining()) +
                                " bytes after its last entry (metadata_size does not match the entries)");
}

void ModelFile::parse_tensor_table(uint64_t offset, uint64_t size) {
    Cursor c(path_, "tensor table", base_ + offset, size);
    uint64_t count = c.read<uint64_t>("tensor count");
    // Every entry takes at least 4 + 1 + 4 + 4 + 8 + 4 bytes.
    if (count > c.remaining() / 25)
        format_error(path_, "tensor count " + std::to_string(count) + " cannot fit in the tensor table of " +
                                std::to_string(size) + " bytes");
    for (uint64_t i = 0; i < count; ++i) {
        TensorEntry t;
        std::string_view name = c.string("tensor name");
        t.name = std::string(name);
        if (name.empty() || name.size() > kMaxNameLength)
            format_error(path_, "tensor " + std::to_string(i) + " has an empty or too long name");
        if (tensor_index_.count(t.name)) format_error(path_, "tensor '" + t.name + "' appears twice");
        const std::string where = "tensor '" + t.name + "'";
        uint32_t dtype = c.read<uint32_t>("dtype");
        if (dtype >= kDTypeCount) format_error(path_, where + " has unknown dtype code " + std::to_string(dtype));
        t.dtype = static_cast<DType>(dtype);
        uint32_t ndim = c.read<uint32_t>("ndim");
        if (ndim < 1 || ndim > 4)
            format_error(path_, where + " has ndim " + std::to_string(ndim) + ", expected 1..4");
        if (is_quantized(t.dtype) && ndim != 2)
            format_error(path_, where + " has dtype " + dtype_name(t.dtype) + " and ndim " + std::to_string(ndim) +
                                    ", quantized dtypes need 2");
        t.n_elements = 1;
        for (uint32_t d = 0; d < ndim; ++d) {
            uint64_t dim = c.read<uint64_t>("dimension");
            if (dim == 0) format_error(path_, where + " has a zero dimension");
            t.n_elements = checked_mul(t.n_elements, dim, path_, where);
            t.dims.push_back(dim);
        }
        checked_mul(t.n_elements, 4, path_, where);  // every dtype's parts stay below 4 bytes per element
        uint32_t nparts = c.read<uint32_t>("part count");
        const size_t want_parts = part_sizes(t.dtype, 1, 1).size();
        if (nparts != want_parts)
            format_error(path_, where + " has " + std::to_string(nparts) + " parts, dtype " + dtype_name(t.dtype) +
                                    " has " + std::to_string(want_parts));
        const uint64_t data_size = size_ - data_offset_;
        for (uint32_t p = 0; p < nparts; ++p) {
            uint64_t off = c.read<uint64_t>("part offset");
            uint64_t psize = c.read<uint64_t>("part size");
            const std::string part = where + " part " + std::to_string(p);
            if (off % alignment_ != 0)
                format_error(path_, part + " offset " + std::to_string(off) + " is not a multiple of the alignment " +
                                        std::to_string(alignment_));
            if (off > data_size || psize > data_size - off)
                format_error(path_, part + " [" + std::to_string(off) + ", +" + std::to_string(psize) +
                                        ") lies outside the data section of " + std::to_string(data_size) + " bytes");
            t.parts.push_back({base_ + data_offset_ + off, data_offset_ + off, psize});
        }
        check_part_sizes(t);
        tensor_index_.emplace(t.name, tensors_.size());
        tensors_.push_back(std::move(t));
    }
    if (c.remaining() != 0)
        format_error(path_, "tensor table has " + std::to_string(c.remaining()) +
                                " bytes after its last entry (tensor_table_size does not match the entries)");
}

void ModelFile::check_part_sizes(const TensorEntry &t) const {
    const bool dense = t.dtype == DType::f32 || t.dtype == DType::f16;  // any rank: one run of values
    std::vector<uint64_t> part_bytes;
    for (const auto &part : t.parts) part_bytes.push_back(part.size);
    mixrt::check_part_sizes(t.dtype, dense || t.dims.size() != 2 ? 1 : t.dims[0], dense ? t.n_elements : t.dims.back(),
                            part_bytes, path_ + ": tensor '" + t.name + "'");
}

void ModelFile::check_parts() {
    struct Span {
        uint64_t begin, end;
        const std::string *name;
    };
    std::vector<Span> spans;
    for (const auto &t : tensors_)
        for (const auto &p : t.parts)
            if (p.size > 0) spans.push_back({p.offset, p.offset + p.size, &t.name});  // empty parts hold nothing
    std::sort(spans.begin(), spans.end(), [](const Span &a, const Span &b) { return a.begin < b.begin; });
    for (size_t i = 1; i < spans.size(); ++i)
        if (spans[i].begin < spans[i - 1].end)
            format_error(path_, "tensors '" + *spans[i - 1].name + "' and '" + *spans[i].name + "' overlap");
}

const MetaValue *ModelFile::find_meta(std::string_view key) const {
    auto it = meta_.find(key);
    return it == meta_.end() ? nullptr : &it->second;
}

namespace {
const MetaValue &require_meta(const ModelFile &f, std::string_view key, MetaType type) {
    const MetaValue *v = f.find_meta(key);
    if (!v) format_error(f.path(), "required metadata key '" + std::string(key) + "' is missing");
    if (v->type != type)
        format_error(f.path(), "metadata '" + std::string(key) + "' is a " + meta_type_name(v->type) +
                                   ", expected " + meta_type_name(type));
    return *v;
}
}  // namespace

int64_t ModelFile::meta_i64(std::string_view key) const { return require_meta(*this, key, MetaType::i64).i64; }
double ModelFile::meta_f64(std::string_view key) const { return require_meta(*this, key, MetaType::f64).f64; }
std::string_view ModelFile::meta_string(std::string_view key) const {
    return require_meta(*this, key, MetaType::string).str;
}
const MetaValue &ModelFile::meta_array(std::string_view key, MetaType type) const {
    return require_meta(*this, key, type);
}
int64_t ModelFile::meta_i64_or(std::string_view key, int64_t fallback) const {
    return find_meta(key) ? meta_i64(key) : fallback;
}

const TensorEntry *ModelFile::find_tensor(std::string_view name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace mixrt
