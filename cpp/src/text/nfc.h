// nfc.h: Unicode Normalization Form C (UAX #15) of valid UTF-8 text as the `tokenizers` library's
// NFC normalizer (Qwen2's) computes it: Unicode 16 data restricted to the entries that normalizer
// knows (nfc_tables.inc, tools/gen_unicode_tables.py). Tested through the byte-level tokenizer
// against `tokenizers` on every codepoint by tests/test_tokenizer.py.
#pragma once

#include <string>
#include <string_view>

namespace mixrt::unicode {

// text (valid UTF-8) in NFC: canonical decomposition, canonical ordering of combining marks,
// canonical composition. ASCII text comes back unchanged without work.
std::string nfc(std::string_view text);

}  // namespace mixrt::unicode
