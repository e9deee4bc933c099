// error.h: the one exception type of the C++ core; the C API turns it into a status code and
// the thread's last-error message.
#pragma once

#include <stdexcept>
#include <string>

#include "mixrt/mixrt.h"

namespace mixrt {

class Error : public std::runtime_error {
public:
    Error(mixrt_status status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    mixrt_status status() const { return status_; }

private:
    mixrt_status status_;
};

[[noreturn]] inline void fail(mixrt_status status, const std::string &message) {
    throw Error(status, message);
}

}  // namespace mixrt
