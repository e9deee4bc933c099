// literal_matcher.cpp: leftmost-longest matching of literal tokens in text. Tested through the
// tokenizers (special tokens in text) by tests/test_tokenizer.py.
#include "text/literal_matcher.h"

#include <algorithm>

namespace mixrt {

void LiteralMatcher::add(std::string_view literal, int32_t id) {
    if (literal.empty()) return;
    auto &bucket = by_first_byte_[static_cast<uint8_t>(literal[0])];
    for (const Literal &existing : bucket) {
        if (existing.text == literal) return;
    }
    // Keep the bucket sorted longest first (stable, so equal lengths keep insertion order).
    const auto at = std::find_if(bucket.begin(), bucket.end(), [&](const Literal &other) {
        return other.text.size() < literal.size();
    });
    bucket.insert(at, Literal{std::string(literal), id});
    ++count_;
}

size_t LiteralMatcher::match_at(std::string_view text, size_t pos, int32_t *id) const {
    const std::string_view rest = text.substr(pos);
    for (const Literal &literal : by_first_byte_[static_cast<uint8_t>(text[pos])]) {
        if (rest.compare(0, literal.text.size(), literal.text) == 0) {
            *id = literal.id;
            return literal.text.size();
        }
    }
    return 0;
}

std::vector<LiteralMatcher::Segment> LiteralMatcher::split(std::string_view text) const {
    std::vector<Segment> segments;
    size_t plain_start = 0;
    size_t pos = 0;
    while (pos < text.size()) {
        int32_t id = -1;
        const size_t length = count_ == 0 ? 0 : match_at(text, pos, &id);
        if (length == 0) {
            ++pos;
            continue;
        }
        if (pos > plain_start) {
            segments.push_back({text.substr(plain_start, pos - plain_start), -1});
        }
        segments.push_back({text.substr(pos, length), id});
        pos += length;
        plain_start = pos;
    }
    if (text.size() > plain_start) segments.push_back({text.substr(plain_start), -1});
    return segments;
}

}  // namespace mixrt
