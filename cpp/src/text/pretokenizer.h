// pretokenizer.h: the regex pre-tokenizers of byte-level BPE vocabularies (FORMAT.md 3.2
// tokenizer.pre), hand-written matchers of these exact patterns (Unicode 16 classes of unicode.h):
//   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//           \s*[\r\n]+|\s+(?!\S)|\s+
//   qwen2:  llama3's with \p{N} (one digit per word) instead of \p{N}{1,3}
// Tested against the `tokenizers` library (every codepoint, real text) by tests/test_tokenizer.py.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mixrt {

enum class PreTokenizer { gpt2, llama3, qwen2 };

// The pre-tokenizer named by tokenizer.pre; throws MIXRT_ERR_FORMAT for an unknown name.
PreTokenizer pre_tokenizer_named(std::string_view name);

// Splits valid UTF-8 text into the pattern's words (views into text; together they are text).
std::vector<std::string_view> split_words(std::string_view text, PreTokenizer pattern);

}  // namespace mixrt
