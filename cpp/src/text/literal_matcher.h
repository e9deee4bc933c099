// literal_matcher.h: finds tokens written literally in text (control and user-defined tokens such
// as "<|im_start|>"), leftmost-longest like the reference libraries. Tested by
// tests/test_tokenizer.py.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mixrt {

class LiteralMatcher {
public:
    // A piece of text: a literal (id >= 0) or the plain text between literals (id == -1).
    struct Segment {
        std::string_view text;
        int32_t id;
    };

    // Adds a literal; empty ones are ignored. When two literals are equal the first one wins.
    void add(std::string_view literal, int32_t id);
    bool empty() const { return count_ == 0; }

    // The length of the longest literal starting at text[pos] (0 if none) and its id.
    size_t match_at(std::string_view text, size_t pos, int32_t *id) const;

    // Splits text at the literals, scanning left to right and taking the longest literal at the
    // first position where one starts. Plain segments are never empty.
    std::vector<Segment> split(std::string_view text) const;

private:
    struct Literal {
        std::string text;
        int32_t id;
    };
    // Literals by first byte, longest first.
    std::array<std::vector<Literal>, 256> by_first_byte_;
    size_t count_ = 0;
};

}  // namespace mixrt
