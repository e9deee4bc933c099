// sentencepiece_tokenizer.cpp: sentencepiece BPE encoding (score-ordered merges, byte fallback)
// and decoding. Tested token for token against the `sentencepiece` library by
// tests/test_tokenizer.py.
#include "text/sentencepiece_tokenizer.h"

#include <queue>

#include "error.h"
#include "text/unicode.h"

namespace mixrt {

namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // "▁" in UTF-8
constexpr uint32_t kSpaceCodepoint = 0x2581;
constexpr std::string_view kUnknownSurface = " \xE2\x81\x87 ";  // " ⁇ ": how <unk> decodes

// The byte of a "<0xXX>" piece, or -1.
int parse_byte_piece(std::string_view piece) {
    if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
    int value = 0;
    for (const char c : piece.substr(3, 2)) {
        const int digit = c >= '0' && c <= '9'   ? c - '0'
                          : c >= 'A' && c <= 'F' ? c - 'A' + 10
                          : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                 : -1;
        if (digit < 0) return -1;
        value = value * 16 + digit;
    }
    return value;
}

// A piece's text with "▁" turned back into spaces.
std::string unescape_spaces(std::string_view piece) {
    std::string text;
    for (size_t pos = 0; pos < piece.size();) {
        if (piece.compare(pos, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
            text += ' ';
            pos += kSpaceSymbol.size();
        } else {
            text += piece[pos++];
        }
    }
    return text;
}

}  // namespace

SentencepieceTokenizer::SentencepieceTokenizer(const TokenizerSpec &spec)
    : bos_id_(spec.bos_id), unk_id_(spec.unk_id), add_space_prefix_(spec.add_space_prefix) {
    const size_t n = spec.tokens.size();
    if (spec.scores.size() != n) {
        fail(MIXRT_ERR_FORMAT, "tokenizer.scores has " + std::to_string(spec.scores.size()) +
                                   " entries, expected one per token (" + std::to_string(n) + ")");
    }
    pieces_.assign(spec.tokens.begin(), spec.tokens.end());
    scores_ = spec.scores;
    byte_ids_.fill(-1);
    piece_ids_.reserve(n);
    types_.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        const auto id = static_cast<int32_t>(i);
        const auto type = static_cast<TokenType>(spec.token_types[i]);
        types_.push_back(type);
        piece_ids_.emplace(pieces_[i], id);
        if (type == TokenType::user_defined) user_defined_.add(pieces_[i], id);
        if (type == TokenType::control) control_.add(pieces_[i], id);
        if (mergeable(id)) {
            const std::string_view piece = pieces_[i];
            uint32_t prev = 0;
            for (size_t pos = 0; pos < piece.size();) {
                const unicode::Utf8Char ch = unicode::decode_utf8(piece, pos);
                if (pos > 0 && piece.compare(pos, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
                    chars_before_space_.insert(prev);
                }
                prev = ch.codepoint;
                pos += ch.length;
            }
        }
        if (type == TokenType::byte) {
            const int byte = parse_byte_piece(pieces_[i]);
            if (byte < 0) {
                fail(MIXRT_ERR_FORMAT, "tokenizer.tokens entry " + std::to_string(i) + " '" +
                                           pieces_[i] + "' has type byte but is not <0xXX>");
            }
            if (byte_ids_[byte] < 0) byte_ids_[byte] = id;
            has_byte_tokens_ = true;
        }
    }
}

int32_t SentencepieceTokenizer::find(std::string_view piece) const {
    const auto it = piece_ids_.find(piece);
    return it == piece_ids_.end() ? -1 : it->second;
}

// The library merges into normal, user-defined and unused pieces (the last are split again).
bool SentencepieceTokenizer::mergeable(int32_t id) const {
    const TokenType type = types_[id];
    return type == TokenType::normal || type == TokenType::user_defined ||
           type == TokenType::unused;
}

void SentencepieceTokenizer::emit_symbol(std::string_view symbol, const Unmerges &unmerges,
                                         std::vector<int32_t> &out) const {
    const int32_t id = find(symbol);
    if (id >= 0 && types_[id] == TokenType::unused) {
        const auto it = unmerges.find(symbol);
        if (it != unmerges.end()) {
            emit_symbol(it->second.first, unmerges, out);
            emit_symbol(it->second.second, unmerges, out);
            return;
        }
    }
    if (id >= 0) {
        out.push_back(id);
    } else if (has_byte_tokens_) {
        for (const char c : symbol) {
            const int32_t byte_id = byte_ids_[static_cast<uint8_t>(c)];
            if (byte_id >= 0) {
                out.push_back(byte_id);
            } else if (unk_id_ >= 0) {
                out.push_back(unk_id_);
            }
        }
    } else if (unk_id_ >= 0 && (out.empty() || out.back() != unk_id_)) {
        out.push_back(unk_id_);  // the library folds a run of unknown symbols into one <unk>
    }
}

void SentencepieceTokenizer::encode_segment(std::string_view text,
                                            std::vector<int32_t> &out) const {
    if (text.empty()) return;
    std::string normalized;
    normalized.reserve(text.size() + 16);
    if (add_space_prefix_) normalized += kSpaceSymbol;
    for (const char c : text) {
        if (c == ' ') {
            normalized += kSpaceSymbol;
        } else {
            normalized += c;
        }
    }
    const std::string_view norm = normalized;

    // Cut in front of each "▁" that no piece joins to the character before it; the words repeat,
    // so each distinct one is merged once.
    std::unordered_map<std::string_view, std::vector<int32_t>> cache;
    const auto emit_word = [&](std::string_view word) {
        auto it = cache.find(word);
        if (it == cache.end()) it = cache.emplace(word, encode_word(word)).first;
        auto first = it->second.begin();
        const bool continues_unknown_run = !has_byte_tokens_ && first != it->second.end() &&
                                           *first == unk_id_ && !out.empty() &&
                                           out.back() == unk_id_;
        out.insert(out.end(), first + (continues_unknown_run ? 1 : 0), it->second.end());
    };
    size_t word_start = 0;
    uint32_t prev = 0;
    for (size_t pos = 0; pos < norm.size();) {
        const unicode::Utf8Char ch = unicode::decode_utf8(norm, pos);
        if (pos > word_start && ch.codepoint == kSpaceCodepoint &&
            chars_before_space_.count(prev) == 0) {
            emit_word(norm.substr(word_start, pos - word_start));
            word_start = pos;
        }
        prev = ch.codepoint;
        pos += ch.length;
    }
    emit_word(norm.substr(word_start));
}

std::vector<int32_t> SentencepieceTokenizer::encode_word(std::string_view word) const {
    // Symbols are contiguous slices of the word in a linked list: user-defined pieces (frozen) or
    // single characters. A candidate pair stays valid while both sides keep their lengths.
    struct Symbol {
        size_t offset;
        size_t length;  // 0 once merged into its left neighbour
        int32_t prev;
        int32_t next;
        bool frozen;
    };
    struct Candidate {
        float score;
        int32_t left;
        int32_t right;
        size_t length;
        bool operator<(const Candidate &other) const {
            return score != other.score ? score < other.score : left > other.left;
        }
    };

    std::vector<Symbol> symbols;
    for (size_t pos = 0; pos < word.size();) {
        int32_t literal_id = -1;
        size_t length = user_defined_.empty() ? 0 : user_defined_.match_at(word, pos, &literal_id);
        const bool frozen = length > 0;
        if (!frozen) length = unicode::decode_utf8(word, pos).length;
        const auto index = static_cast<int32_t>(symbols.size());
        symbols.push_back({pos, length, index - 1, -1, frozen});
        if (index > 0) symbols[index - 1].next = index;
        pos += length;
    }

    std::priority_queue<Candidate> heap;
    Unmerges unmerges;
    const auto consider = [&](int32_t left, int32_t right) {
        if (left < 0 || right < 0 || symbols[left].frozen || symbols[right].frozen) return;
        const size_t length = symbols[left].length + symbols[right].length;
        const std::string_view piece = word.substr(symbols[left].offset, length);
        const int32_t id = find(piece);
        if (id < 0 || !mergeable(id)) return;
        heap.push({scores_[id], left, right, length});
        if (types_[id] == TokenType::unused) {
            unmerges[piece] = {word.substr(symbols[left].offset, symbols[left].length),
                               word.substr(symbols[right].offset, symbols[right].length)};
        }
    };
    for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) consider(i - 1, i);

    while (!heap.empty()) {
        const Candidate top = heap.top();
        heap.pop();
        Symbol &left = symbols[top.left];
        Symbol &right = symbols[top.right];
        if (left.length == 0 || right.length == 0 || left.length + right.length != top.length) {
            continue;
        }
        left.length = top.length;
        right.length = 0;
        left.next = right.next;
        if (left.next >= 0) symbols[left.next].prev = top.left;
        consider(left.prev, top.left);
        consider(top.left, left.next);
    }

    std::vector<int32_t> ids;
    for (int32_t i = 0; i >= 0; i = symbols[i].next) {
        emit_symbol(word.substr(symbols[i].offset, symbols[i].length), unmerges, ids);
    }
    return ids;
}

std::vector<int32_t> SentencepieceTokenizer::encode(std::string_view text, bool add_bos,
                                                    bool parse_special) const {
    const std::string valid = unicode::repair_utf8(text, unicode::Repair::per_byte);
    std::vector<int32_t> out;
    if (add_bos && bos_id_ >= 0) out.push_back(bos_id_);
    if (!parse_special) {
        encode_segment(valid, out);
        return out;
    }
    for (const LiteralMatcher::Segment &segment : control_.split(valid)) {
        if (segment.id >= 0) {
            out.push_back(segment.id);
        } else {
            encode_segment(segment.text, out);
        }
    }
    return out;
}

std::string SentencepieceTokenizer::token_bytes(int32_t id, bool render_special) const {
    if (id < 0 || id >= vocab_size()) {
        fail(MIXRT_ERR_INVALID_ARGUMENT, "token id " + std::to_string(id) +
                                             " is out of range [0, " +
                                             std::to_string(vocab_size()) + ")");
    }
    switch (types_[id]) {
        case TokenType::control:
            return render_special ? pieces_[id] : std::string();
        case TokenType::unknown:
            return std::string(kUnknownSurface);
        case TokenType::byte:
            return std::string(1, static_cast<char>(parse_byte_piece(pieces_[id])));
        default:
            return unescape_spaces(pieces_[id]);
    }
}

std::string SentencepieceTokenizer::decode(const std::vector<int32_t> &ids,
                                           bool render_special) const {
    // Like the library: runs of byte tokens are repaired as UTF-8 one run at a time, and the
    // space of the dummy prefix is dropped from the first token that is not a control token (if
    // that token is text, not a byte or <unk>).
    std::string text;
    std::string byte_run;
    bool at_start = true;
    for (const int32_t id : ids) {
        std::string bytes = token_bytes(id, render_special);
        const TokenType type = types_[id];
        if (type == TokenType::byte) {
            byte_run += bytes;
            at_start = false;
            continue;
        }
        text += unicode::repair_utf8(byte_run, unicode::Repair::per_byte);
        byte_run.clear();
        if (type == TokenType::control) {
            text += bytes;
            continue;
        }
        if (at_start && add_space_prefix_ && type != TokenType::unknown && !bytes.empty() &&
            bytes[0] == ' ') {
            bytes.erase(0, 1);
        }
        at_start = false;
        text += bytes;
    }
    return text + unicode::repair_utf8(byte_run, unicode::Repair::per_byte);
}

}  // namespace mixrt
