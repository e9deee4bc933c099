// unicode.cpp: UTF-8 decoding/encoding, invalid UTF-8 repair and codepoint classes (the table
// comes from tools/gen_unicode_tables.py). Tested through the tokenizers by
// tests/test_tokenizer.py.
#include "text/unicode.h"

#include <algorithm>
#include <iterator>

namespace mixrt::unicode {

namespace {

struct CharRange {
    uint32_t first;
    uint32_t last;
    CharClass cls;
};

#include "text/unicode_tables.inc"

bool is_continuation(uint8_t byte) { return (byte & 0xC0) == 0x80; }

}  // namespace

Utf8Char decode_utf8(std::string_view text, size_t pos) {
    const auto *bytes = reinterpret_cast<const uint8_t *>(text.data());
    const size_t avail = text.size() - pos;
    const uint8_t lead = bytes[pos];
    if (lead < 0x80) return {lead, 1, true};

    // The sequence length and the allowed range of the second byte (Unicode table 3-7), which
    // rules out overlong forms, surrogates and codepoints above U+10FFFF.
    uint32_t length = 0;
    uint8_t second_min = 0x80, second_max = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
        length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        length = 3;
        if (lead == 0xE0) second_min = 0xA0;
        if (lead == 0xED) second_max = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        length = 4;
        if (lead == 0xF0) second_min = 0x90;
        if (lead == 0xF4) second_max = 0x8F;
    } else {
        return {kReplacementChar, 1, false};
    }

    uint32_t codepoint = lead & (0xFF >> (length + 1));
    for (uint32_t i = 1; i < length; ++i) {
        const bool in_range =
            i < avail && (i == 1 ? bytes[pos + 1] >= second_min && bytes[pos + 1] <= second_max
                                 : is_continuation(bytes[pos + i]));
        if (!in_range) return {kReplacementChar, i, false};
        codepoint = (codepoint << 6) | (bytes[pos + i] & 0x3F);
    }
    return {codepoint, length, true};
}

void append_utf8(std::string &out, uint32_t codepoint) {
    if (codepoint < 0x80) {
        out += static_cast<char>(codepoint);
    } else if (codepoint < 0x800) {
        out += static_cast<char>(0xC0 | (codepoint >> 6));
        out += static_cast<char>(0x80 | (codepoint & 0x3F));
    } else if (codepoint < 0x10000) {
        out += static_cast<char>(0xE0 | (codepoint >> 12));
        out += static_cast<char>(0x80 | ((codepoint >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (codepoint & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (codepoint >> 18));
        out += static_cast<char>(0x80 | ((codepoint >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((codepoint >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (codepoint & 0x3F));
    }
}

std::string repair_utf8(std::string_view text, Repair repair) {
    std::string out;
    out.reserve(text.size());
    size_t pos = 0;
    while (pos < text.size()) {
        const Utf8Char ch = decode_utf8(text, pos);
        if (ch.valid) {
            out.append(text.substr(pos, ch.length));
            pos += ch.length;
        } else {
            append_utf8(out, kReplacementChar);
            pos += repair == Repair::per_byte ? 1 : ch.length;
        }
    }
    return out;
}

CharClass char_class(uint32_t codepoint) {
    const auto *end = std::end(kCharRanges);
    const auto *it = std::upper_bound(
        std::begin(kCharRanges), end, codepoint,
        [](uint32_t cp, const CharRange &range) { return cp < range.first; });
    if (it == std::begin(kCharRanges)) return CharClass::other;
    --it;
    return codepoint <= it->last ? it->cls : CharClass::other;
}

}  // namespace mixrt::unicode
