// pretokenizer.cpp: see pretokenizer.h. Each matcher returns the end of the pattern's match at a
// position, trying the alternatives in order as the regex engine does.
#include "text/pretokenizer.h"

#include "error.h"
#include "text/unicode.h"

namespace mixrt {

namespace {

using unicode::CharClass;

struct Char {
    size_t offset;
    uint32_t codepoint;
    CharClass cls;
};

bool is_newline(uint32_t c) { return c == '\r' || c == '\n'; }

// The end of a contraction 's|'t|'re|'ve|'m|'ll|'d at chars[i], or i if there is none; with
// ignore_case as (?i:...) matches it (U+017F, long s, folds to s).
size_t match_contraction(const std::vector<Char> &chars, size_t i, bool ignore_case) {
    const size_t n = chars.size();
    if (chars[i].codepoint != '\'' || i + 1 >= n) return i;
    auto lower = [&](size_t k) -> uint32_t {
        const uint32_t c = chars[k].codepoint;
        if (!ignore_case) return c;
        if (c == 0x17F) return 's';
        return c >= 'A' && c <= 'Z' ? c + 32 : c;
    };
    const uint32_t a = lower(i + 1);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 < n) {
        const uint32_t b = lower(i + 2);
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
    return i;
}

// \s+(?!\S)|\s+ at a whitespace character: a run that ends the text, else the run but its last
// character, which then begins the next match; one whitespace character before a non-space
// stands alone.
size_t match_whitespace(const std::vector<Char> &chars, size_t i) {
    const size_t n = chars.size();
    size_t end = i + 1;
    while (end < n && chars[end].cls == CharClass::whitespace) ++end;
    return end < n && end - i > 1 ? end - 1 : end;
}

size_t match_gpt2(const std::vector<Char> &chars, size_t i) {
    const size_t n = chars.size();
    if (const size_t end = match_contraction(chars, i, false); end != i) return end;
    // " ?X+" for X in letters, numbers, others: an optional space, then a run of one class.
    const size_t start =
        chars[i].codepoint == ' ' && i + 1 < n && chars[i + 1].cls != CharClass::whitespace ? i + 1 : i;
    if (chars[start].cls != CharClass::whitespace) {
        size_t end = start + 1;
        while (end < n && chars[end].cls == chars[start].cls) ++end;
        return end;
    }
    return match_whitespace(chars, i);
}

size_t match_llama3(const std::vector<Char> &chars, size_t i, size_t max_digits) {
    const size_t n = chars.size();
    if (const size_t end = match_contraction(chars, i, true); end != i) return end;
    auto run = [&](size_t from, CharClass cls) {
        while (from < n && chars[from].cls == cls) ++from;
        return from;
    };
    const Char &c = chars[i];
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (c.cls == CharClass::letter) return run(i + 1, CharClass::letter);
    if (c.cls != CharClass::number && !is_newline(c.codepoint) && i + 1 < n && chars[i + 1].cls == CharClass::letter)
        return run(i + 2, CharClass::letter);
    // \p{N}{1,max_digits}
    if (c.cls == CharClass::number) {
        size_t end = i + 1;
        while (end < n && end - i < max_digits && chars[end].cls == CharClass::number) ++end;
        return end;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    const size_t start = c.codepoint == ' ' && i + 1 < n && chars[i + 1].cls == CharClass::other ? i + 1 : i;
    if (chars[start].cls == CharClass::other) {
        size_t end = run(start + 1, CharClass::other);
        while (end < n && is_newline(chars[end].codepoint)) ++end;
        return end;
    }
    // \s*[\r\n]+: the whitespace run up to and including its last newline, if it has one
    const size_t run_end = run(i, CharClass::whitespace);
    for (size_t k = run_end; k > i; --k)
        if (is_newline(chars[k - 1].codepoint)) return k;
    return match_whitespace(chars, i);
}

}  // namespace

PreTokenizer pre_tokenizer_named(std::string_view name) {
    if (name == "gpt2") return PreTokenizer::gpt2;
    if (name == "llama3") return PreTokenizer::llama3;
    if (name == "qwen2") return PreTokenizer::qwen2;
    fail(MIXRT_ERR_FORMAT, "tokenizer.pre is '" + std::string(name) + "', expected 'gpt2', 'llama3' or 'qwen2'");
}

std::vector<std::string_view> split_words(std::string_view text, PreTokenizer pattern) {
    std::vector<Char> chars;
    chars.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
        const unicode::Utf8Char ch = unicode::decode_utf8(text, pos);
        chars.push_back({pos, ch.codepoint, unicode::char_class(ch.codepoint)});
        pos += ch.length;
    }
    std::vector<std::string_view> words;
    for (size_t i = 0; i < chars.size();) {
        const size_t end = pattern == PreTokenizer::gpt2     ? match_gpt2(chars, i)
                           : pattern == PreTokenizer::llama3 ? match_llama3(chars, i, 3)
                                                             : match_llama3(chars, i, 1);
        const size_t end_offset = end < chars.size() ? chars[end].offset : text.size();
        words.push_back(text.substr(chars[i].offset, end_offset - chars[i].offset));
        i = end;
    }
    return words;
}

}  // namespace mixrt
