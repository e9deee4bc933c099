// unicode.h: UTF-8 decoding and encoding, repair of invalid UTF-8, and the codepoint classes of
// the GPT-2 pre-tokenizer pattern. Tested through the tokenizers by tests/test_tokenizer.py.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mixrt::unicode {

constexpr uint32_t kReplacementChar = 0xFFFD;

// One step of UTF-8 decoding at a position of a byte string.
struct Utf8Char {
    uint32_t codepoint;  // kReplacementChar if !valid
    uint32_t length;     // bytes consumed, >= 1: the whole character, or if !valid the maximal
                         // prefix of a well-formed sequence (a lone bad byte counts 1)
    bool valid;
};

// Decodes the character starting at text[pos] (pos < text.size()). Well-formed means the
// shortest form, no surrogates, at most U+10FFFF.
Utf8Char decode_utf8(std::string_view text, size_t pos);

void append_utf8(std::string &out, uint32_t codepoint);

// How to repair invalid UTF-8: the reference libraries differ.
enum class Repair {
    per_sequence,  // one U+FFFD per maximal ill-formed prefix (Python 'replace', Rust lossy)
    per_byte,      // one U+FFFD per byte of an ill-formed sequence (sentencepiece)
};

// text with every ill-formed sequence replaced by U+FFFD; valid text comes back unchanged.
std::string repair_utf8(std::string_view text, Repair repair);

// The classes of the GPT-2 pattern: \p{L}, \p{N}, \s (White_Space) and everything else.
enum class CharClass : uint8_t { other, letter, number, whitespace };

CharClass char_class(uint32_t codepoint);

}  // namespace mixrt::unicode
