// memory_info.cpp: see memory_info.h.
#include "memory_info.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>

#include "error.h"

namespace mixrt {

namespace {

constexpr uint64_t kUnknown = std::numeric_limits<uint64_t>::max();

// The value of "key: N kB" in /proc/meminfo, in bytes.
uint64_t meminfo_bytes(const std::string &key) {
    std::ifstream in("/proc/meminfo");
    std::string name, unit;
    uint64_t kb = 0;
    while (in >> name >> kb) {
        std::getline(in, unit);
        if (name == key + ":") return kb * 1024;
    }
    return kUnknown;
}

// A number read from a cgroup file ("max" or unreadable: unknown).
uint64_t cgroup_value(const std::string &path) {
    std::ifstream in(path);
    std::string text;
    if (!(in >> text) || text == "max") return kUnknown;
    try {
        return std::stoull(text);
    } catch (...) {
        return kUnknown;
    }
}

// What the process's cgroup v2 still allows (its memory.max less memory.current).
uint64_t cgroup_headroom() {
    std::ifstream in("/proc/self/cgroup");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("0::", 0) != 0) continue;
        const std::string dir = "/sys/fs/cgroup" + line.substr(3);
        const uint64_t limit = cgroup_value(dir + "/memory.max"), used = cgroup_value(dir + "/memory.current");
        if (limit == kUnknown || used == kUnknown) return kUnknown;
        return limit > used ? limit - used : 0;
    }
    return kUnknown;
}

}  // namespace

uint64_t available_memory_bytes() { return std::min(meminfo_bytes("MemAvailable"), cgroup_headroom()); }

void check_fits_in_memory(uint64_t bytes, const std::string &what, const std::string &hint) {
    const uint64_t available = available_memory_bytes();
    if (bytes <= available) return;
    std::ostringstream msg;
    msg << what << " needs " << (bytes >> 20) << " MiB, more than the " << (available >> 20)
        << " MiB of memory available; " << hint;
    fail(MIXRT_ERR_OUT_OF_MEMORY, msg.str());
}

}  // namespace mixrt
