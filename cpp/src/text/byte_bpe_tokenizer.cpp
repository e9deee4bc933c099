// byte_bpe_tokenizer.cpp: byte alphabet and rank-ordered BPE merges over the words of the
// pre-tokenizer (text/pretokenizer.h). Tested token for token against the `tokenizers` library by
// tests/test_tokenizer.py.
#include "text/byte_bpe_tokenizer.h"

#include <deque>
#include <queue>

#include "error.h"
#include "text/nfc.h"
#include "text/pretokenizer.h"
#include "text/unicode.h"

namespace mixrt {

namespace {

// GPT-2's reversible byte-to-character map: printable Latin-1 bytes stand for themselves, the
// other 68 bytes (controls, space, 0x7F-0xA0, 0xAD) for U+0100 onwards, in byte order.
std::array<uint32_t, 256> make_byte_alphabet() {
    std::array<uint32_t, 256> alphabet{};
    uint32_t next_extra = 256;
    for (uint32_t b = 0; b < 256; ++b) {
        const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        alphabet[b] = printable ? b : next_extra++;
    }
    return alphabet;
}

const std::array<uint32_t, 256> kByteAlphabet = make_byte_alphabet();

// The bytes a vocabulary entry stands for: its characters mapped back through the byte alphabet,
// or, if one of them is outside the alphabet (an added token such as "<|im_start|>" can be), the
// entry's own UTF-8 text, as the reference ByteLevel decoder does.
std::string alphabet_to_bytes(std::string_view token) {
    static const std::unordered_map<uint32_t, char> inverse = [] {
        std::unordered_map<uint32_t, char> map;
        for (uint32_t b = 0; b < 256; ++b) map[kByteAlphabet[b]] = static_cast<char>(b);
        return map;
    }();
    std::string bytes;
    for (size_t pos = 0; pos < token.size();) {
        const unicode::Utf8Char ch = unicode::decode_utf8(token, pos);
        const auto it = inverse.find(ch.codepoint);
        if (!ch.valid || it == inverse.end()) return std::string(token);
        bytes += it->second;
        pos += ch.length;
    }
    return bytes;
}

uint64_t pair_key(int32_t left, int32_t right) {
    return static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 |
           static_cast<uint32_t>(right);
}

}  // namespace

ByteBpeTokenizer::ByteBpeTokenizer(const TokenizerSpec &spec)
    : pre_tokenizer_(pre_tokenizer_named(spec.pre_tokenizer)), nfc_(spec.nfc), bos_id_(spec.bos_id) {
    const size_t n = spec.tokens.size();
    std::unordered_map<std::string_view, int32_t> ids;  // views into spec.tokens
    ids.reserve(n);
    bytes_.reserve(n);
    types_.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        const auto id = static_cast<int32_t>(i);
        const std::string_view token = spec.tokens[i];
        const auto type = static_cast<TokenType>(spec.token_types[i]);
        ids.emplace(token, id);
        if (spec.ignore_merges && type == TokenType::normal) whole_words_.emplace(token, id);
        bytes_.push_back(alphabet_to_bytes(token));
        types_.push_back(type);
        if (type == TokenType::user_defined) user_defined_.add(token, id);
        if (type == TokenType::user_defined || type == TokenType::control) {
            all_literals_.add(token, id);
        }
    }

    for (uint32_t b = 0; b < 256; ++b) {
        std::string ch;
        unicode::append_utf8(ch, kByteAlphabet[b]);
        const auto it = ids.find(ch);
        byte_token_[b] = it == ids.end() ? -1 : it->second;
    }

    merges_.reserve(spec.merges.size());
    for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
        const std::string_view merge = spec.merges[rank];
        const auto bad_merge = [&](const std::string &problem) {
            return "tokenizer.merges entry " + std::to_string(rank) + " '" + std::string(merge) +
                   "' " + problem;
        };
        const size_t space = merge.find(' ');
        if (space == std::string_view::npos) fail(MIXRT_ERR_FORMAT, bad_merge("has no space"));
        const std::string_view parts[2] = {merge.substr(0, space), merge.substr(space + 1)};
        int32_t part_ids[2];
        for (int k = 0; k < 2; ++k) {
            const auto it = ids.find(parts[k]);
            if (it == ids.end()) {
                fail(MIXRT_ERR_FORMAT, bad_merge("names '" + std::string(parts[k]) +
                                                 "', which is not in tokenizer.tokens"));
            }
            part_ids[k] = it->second;
        }
        const auto result = ids.find(std::string(parts[0]) + std::string(parts[1]));
        if (result == ids.end()) {
            fail(MIXRT_ERR_FORMAT, bad_merge("makes a token that is not in tokenizer.tokens"));
        }
        // A repeated merge keeps its first (best) rank.
        merges_.emplace(pair_key(part_ids[0], part_ids[1]),
                        Merge{static_cast<int32_t>(rank), result->second});
    }
}

const ByteBpeTokenizer::Merge *ByteBpeTokenizer::find_merge(int32_t left, int32_t right) const {
    const auto it = merges_.find(pair_key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
}

std::vector<int32_t> ByteBpeTokenizer::encode_word(std::string_view word) const {
    // ignore_merges: a word that is itself in the vocabulary is that token.
    if (!whole_words_.empty()) {
        std::string alphabet;
        for (const char c : word) unicode::append_utf8(alphabet, kByteAlphabet[static_cast<uint8_t>(c)]);
        const auto it = whole_words_.find(alphabet);
        if (it != whole_words_.end()) return {it->second};
    }
    // The word's byte tokens as a linked list; merges are applied lowest rank first, the leftmost
    // of equal ranks first, from a heap of candidate pairs that are checked when popped.
    struct Symbol {
        int32_t id;  // -1 once merged into its left neighbour
        int32_t prev;
        int32_t next;
    };
    struct Candidate {
        int32_t rank;
        int32_t left;
        int32_t left_id;
        int32_t right_id;
        bool operator>(const Candidate &other) const {
            return rank != other.rank ? rank > other.rank : left > other.left;
        }
    };

    std::vector<Symbol> symbols;
    symbols.reserve(word.size());
    for (const char c : word) {
        const int32_t id = byte_token_[static_cast<uint8_t>(c)];
        if (id < 0) continue;
        const auto index = static_cast<int32_t>(symbols.size());
        symbols.push_back({id, index - 1, -1});
        if (index > 0) symbols[index - 1].next = index;
    }

    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    const auto consider = [&](int32_t left) {
        const int32_t right = left < 0 ? -1 : symbols[left].next;
        if (right < 0) return;
        if (const Merge *merge = find_merge(symbols[left].id, symbols[right].id)) {
            heap.push({merge->rank, left, symbols[left].id, symbols[right].id});
        }
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);

    while (!heap.empty()) {
        const Candidate top = heap.top();
        heap.pop();
        Symbol &left = symbols[top.left];
        if (left.id != top.left_id || left.next < 0) continue;
        Symbol &right = symbols[left.next];
        if (right.id != top.right_id) continue;
        left.id = find_merge(top.left_id, top.right_id)->result;
        right.id = -1;
        left.next = right.next;
        if (left.next >= 0) symbols[left.next].prev = top.left;
        consider(left.prev);
        consider(top.left);
    }

    std::vector<int32_t> ids;
    for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
        ids.push_back(symbols[i].id);
    }
    return ids;
}

void ByteBpeTokenizer::encode_plain(std::string_view text, WordCache &cache,
                                    std::vector<int32_t> &out) const {
    for (const std::string_view word : split_words(text, pre_tokenizer_)) {
        auto it = cache.find(word);
        if (it == cache.end()) it = cache.emplace(word, encode_word(word)).first;
        out.insert(out.end(), it->second.begin(), it->second.end());
    }
}

std::vector<int32_t> ByteBpeTokenizer::encode(std::string_view text, bool add_bos,
                                              bool parse_special) const {
    const std::string valid = unicode::repair_utf8(text, unicode::Repair::per_sequence);
    std::vector<int32_t> out;
    if (add_bos && bos_id_ >= 0) out.push_back(bos_id_);
    WordCache cache;
    std::deque<std::string> normalized;  // the NFC segments, alive as long as the cache's keys
    const LiteralMatcher &literals = parse_special ? all_literals_ : user_defined_;
    for (const LiteralMatcher::Segment &segment : literals.split(valid)) {
        if (segment.id >= 0) {
            out.push_back(segment.id);
        } else if (nfc_) {
            encode_plain(normalized.emplace_back(unicode::nfc(segment.text)), cache, out);
        } else {
            encode_plain(segment.text, cache, out);
        }
    }
    return out;
}

std::string ByteBpeTokenizer::token_bytes(int32_t id, bool render_special) const {
    if (id < 0 || id >= vocab_size()) {
        fail(MIXRT_ERR_INVALID_ARGUMENT, "token id " + std::to_string(id) +
                                             " is out of range [0, " +
                                             std::to_string(vocab_size()) + ")");
    }
    if (types_[id] == TokenType::control && !render_special) return {};
    return bytes_[id];
}

std::string ByteBpeTokenizer::decode(const std::vector<int32_t> &ids, bool render_special) const {
    std::string bytes;
    for (const int32_t id : ids) bytes += token_bytes(id, render_special);
    return unicode::repair_utf8(bytes, unicode::Repair::per_sequence);
}

}  // namespace mixrt
