// memory_info.h: how much memory this process can still take (Linux: MemAvailable of
// /proc/meminfo, lowered by the cgroup v2 limit of the process if it has one), so that a KV cache
// that cannot fit is refused with a clear error instead of the process being killed later.
#pragma once

#include <cstdint>
#include <string>

namespace mixrt {

// Bytes available, or UINT64_MAX where the system does not say.
uint64_t available_memory_bytes();

// Throws MIXRT_ERR_OUT_OF_MEMORY naming `what` and its size when `bytes` exceed what is available;
// `hint` ends the message (what the caller can do about it).
void check_fits_in_memory(uint64_t bytes, const std::string &what, const std::string &hint);

}  // namespace mixrt
