// llama_model.cpp: binds hyperparameters (with the variants of FORMAT.md 3.3), tokenizer and weights
// of a validated ModelFile and checks FORMAT.md 6 items 7-9 and 11 (required keys, ranges, tokenizer
// arrays, required tensors).
#include "llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>

#include "error.h"

namespace mixrt {

namespace {

// Tokenizer sizes a file may not exceed (FORMAT.md 3.1), far above real vocabularies (Llama 3's
// longest token is 128 bytes; it has 280,147 merges).
constexpr size_t kMaxTokenBytes = 65536;
constexpr size_t kMaxMerges = size_t(1) << 24;

[[noreturn]] void model_error(const ModelFile &f, const std::string &what) {
    fail(MIXRT_ERR_FORMAT, f.path() + ": " + what);
}

int32_t ranged(const ModelFile &f, const char *key, int64_t lo, int64_t hi) {
    int64_t v = f.meta_i64(key);
    if (v < lo || v > hi)
        model_error(f, std::string("metadata '") + key + "' is " + std::to_string(v) + ", expected " +
                           std::to_string(lo) + ".." + std::to_string(hi));
    return static_cast<int32_t>(v);
}

double positive(const ModelFile &f, const char *key) {
    double v = f.meta_f64(key);
    if (!(v > 0) || v != v || v > 1e300)
        model_error(f, std::string("metadata '") + key + "' is " + std::to_string(v) + ", expected a finite value > 0");
    return v;
}

}  // namespace

LlamaModel::LlamaModel(const std::string &path) : file_(path) {
    std::string_view arch = file_.meta_string("general.architecture");
    if (arch != "llama")
        model_error(file_, "general.architecture is '" + std::string(arch) + "', expected 'llama'");
    for (const char *key : {"general.name", "mixrt.converter_version", "mixrt.recipe", "mixrt.source"})
        file_.meta_string(key);
    read_params();
    read_tokenizer();
    bind_weights();
}

void LlamaModel::read_params() {
    LlamaParams &p = params_;
    p.vocab_size = ranged(file_, "llama.vocab_size", 1, 1 << 20);
    p.hidden_size = ranged(file_, "llama.hidden_size", 1, 65536);
    p.n_layers = ranged(file_, "llama.n_layers", 1, 1024);
    p.n_heads = ranged(file_, "llama.n_heads", 1, 1024);
    p.n_kv_heads = ranged(file_, "llama.n_kv_heads", 1, 1024);
    p.head_dim = ranged(file_, "llama.head_dim", 2, 1024);
    p.ffn_size = ranged(file_, "llama.ffn_size", 1, 262144);
    p.context_length = ranged(file_, "llama.context_length", 1, 1 << 22);
    p.rope_theta = positive(file_, "llama.rope_theta");
    p.rms_norm_eps = positive(file_, "llama.rms_norm_eps");
    p.tie_word_embeddings = ranged(file_, "llama.tie_word_embeddings", 0, 1) == 1;
    if (p.n_heads % p.n_kv_heads != 0)
        model_error(file_, "llama.n_heads (" + std::to_string(p.n_heads) + ") is not a multiple of llama.n_kv_heads (" +
                               std::to_string(p.n_kv_heads) + ")");
    if (p.head_dim % 2 != 0)
        model_error(file_, "llama.head_dim is " + std::to_string(p.head_dim) + ", expected an even number");
    read_variants();
}

// FORMAT.md 3.3: every key optional; present, each is checked like the required ones.
void LlamaModel::read_variants() {
    LlamaParams &p = params_;
    auto flag = [&](const char *key) { return file_.find_meta(key) && ranged(file_, key, 0, 1) == 1; };
    p.bias_qkv = flag("llama.bias.qkv");
    p.bias_attn_output = flag("llama.bias.attn_output");
    p.bias_mlp = flag("llama.bias.mlp");
    p.sliding_window = file_.find_meta("llama.sliding_window") ? ranged(file_, "llama.sliding_window", 1, 1 << 22) : 0;

    RopeScaling &r = p.rope_scaling;
    if (file_.find_meta("llama.rope.freq_factors")) {
        const MetaValue &v = file_.meta_array("llama.rope.freq_factors", MetaType::f32_array);
        if (v.array_len != uint64_t(p.head_dim / 2))
            model_error(file_, "metadata 'llama.rope.freq_factors' has " + std::to_string(v.array_len) +
                                   " entries, expected head_dim/2 = " + std::to_string(p.head_dim / 2));
        r.freq_factors.resize(v.array_len);
        std::memcpy(r.freq_factors.data(), v.array, v.array_len * 4);
        for (size_t i = 0; i < r.freq_factors.size(); ++i)
            if (!(r.freq_factors[i] > 0) || !(r.freq_factors[i] < 1e30f))
                model_error(file_, "llama.rope.freq_factors[" + std::to_string(i) + "] is " +
                                       std::to_string(r.freq_factors[i]) + ", expected a finite value > 0");
    }
    if (!file_.find_meta("llama.rope.scaling_type")) return;
    const std::string_view type = file_.meta_string("llama.rope.scaling_type");
    const RopeScalingType types[] = {RopeScalingType::linear, RopeScalingType::dynamic, RopeScalingType::yarn,
                                     RopeScalingType::llama3};
    const auto found = std::find_if(std::begin(types), std::end(types),
                                    [&](RopeScalingType t) { return type == rope_scaling_name(t); });
    if (found == std::end(types))
        model_error(file_, "llama.rope.scaling_type is '" + std::string(type) +
                               "', expected 'linear', 'dynamic', 'yarn' or 'llama3'");
    r.type = *found;
    r.factor = positive(file_, "llama.rope.scaling_factor");
    if (r.type == RopeScalingType::linear) return;
    r.original_context_length = ranged(file_, "llama.rope.original_context_length", 1, 1 << 22);
    if (r.type == RopeScalingType::llama3) {
        r.low_freq_factor = positive(file_, "llama.rope.low_freq_factor");
        r.high_freq_factor = positive(file_, "llama.rope.high_freq_factor");
        if (!(r.high_freq_factor > r.low_freq_factor))
            model_error(file_, "llama.rope.high_freq_factor is " + std::to_string(r.high_freq_factor) +
                                   ", expected more than llama.rope.low_freq_factor " + std::to_string(r.low_freq_factor));
    } else if (r.type == RopeScalingType::yarn) {
        r.beta_fast = positive(file_, "llama.rope.beta_fast");
        r.beta_slow = positive(file_, "llama.rope.beta_slow");
        r.attention_factor = positive(file_, "llama.rope.attention_factor");
        if (!(r.beta_fast > r.beta_slow))
            model_error(file_, "llama.rope.beta_fast is " + std::to_string(r.beta_fast) +
                                   ", expected more than llama.rope.beta_slow " + std::to_string(r.beta_slow));
    }
}

void LlamaModel::read_tokenizer() {
    const int64_t V = params_.vocab_size;
    TokenizerSpec spec;
    spec.model = std::string(file_.meta_string("tokenizer.model"));
    auto count_error = [&](const char *key, uint64_t n) {
        model_error(file_, std::string("metadata '") + key + "' has " + std::to_string(n) +
                               " entries, expected llama.vocab_size = " + std::to_string(V));
    };
    const MetaValue &tokens = file_.meta_array("tokenizer.tokens", MetaType::string_array);
    if (static_cast<int64_t>(tokens.strings.size()) != V) count_error("tokenizer.tokens", tokens.strings.size());
    spec.tokens = tokens.strings;
    for (size_t i = 0; i < spec.tokens.size(); ++i)
        if (spec.tokens[i].size() > kMaxTokenBytes)
            model_error(file_, "tokenizer.tokens[" + std::to_string(i) + "] is " + std::to_string(spec.tokens[i].size()) +
                                   " bytes long, expected at most " + std::to_string(kMaxTokenBytes));

    const MetaValue &types = file_.meta_array("tokenizer.token_types", MetaType::i32_array);
    if (static_cast<int64_t>(types.array_len) != V) count_error("tokenizer.token_types", types.array_len);
    spec.token_types.resize(V);
    std::memcpy(spec.token_types.data(), types.array, V * 4);
    for (int64_t i = 0; i < V; ++i)
        if (spec.token_types[i] < 1 || spec.token_types[i] > 6)
            model_error(file_, "tokenizer.token_types[" + std::to_string(i) + "] is " +
                                   std::to_string(spec.token_types[i]) + ", expected 1..6");

    if (spec.model == "sentencepiece_bpe") {
        const MetaValue &scores = file_.meta_array("tokenizer.scores", MetaType::f32_array);
        if (static_cast<int64_t>(scores.array_len) != V) count_error("tokenizer.scores", scores.array_len);
        spec.scores.resize(V);
        std::memcpy(spec.scores.data(), scores.array, V * 4);
        for (int64_t i = 0; i < V; ++i)  // merges are ordered by score: NaN has no place in that order
            if (!std::isfinite(spec.scores[i]))
                model_error(file_, "tokenizer.scores[" + std::to_string(i) + "] is " + std::to_string(spec.scores[i]) +
                                       ", expected a finite number");
        spec.add_space_prefix = file_.meta_i64_or("tokenizer.add_space_prefix", 1) != 0;
    } else if (spec.model == "byte_bpe") {
        spec.merges = file_.meta_array("tokenizer.merges", MetaType::string_array).strings;
        if (spec.merges.size() > kMaxMerges)
            model_error(file_, "metadata 'tokenizer.merges' has " + std::to_string(spec.merges.size()) +
                                   " entries, expected at most " + std::to_string(kMaxMerges));
        if (file_.find_meta("tokenizer.pre")) spec.pre_tokenizer = std::string(file_.meta_string("tokenizer.pre"));
        spec.ignore_merges = file_.find_meta("tokenizer.ignore_merges") && ranged(file_, "tokenizer.ignore_merges", 0, 1) == 1;
        if (file_.find_meta("tokenizer.normalizer")) {
            const std::string_view normalizer = file_.meta_string("tokenizer.normalizer");
            if (normalizer != "nfc")
                model_error(file_, "tokenizer.normalizer is '" + std::string(normalizer) + "', expected 'nfc'");
            spec.nfc = true;
        }
    } else {
        model_error(file_, "tokenizer.model is '" + spec.model + "', expected 'byte_bpe' or 'sentencepiece_bpe'");
    }
    auto special_id = [&](const char *key, bool required) -> int32_t {
        int64_t id = required ? file_.meta_i64(key) : file_.meta_i64_or(key, -1);
        if (id < -1 || id >= V)
            model_error(file_, std::string("metadata '") + key + "' is " + std::to_string(id) + ", expected -1.." +
                                   std::to_string(V - 1));
        return static_cast<int32_t>(id);
    };
    spec.bos_id = bos_id_ = special_id("tokenizer.bos_id", true);
    spec.eos_id = eos_id_ = special_id("tokenizer.eos_id", true);
    spec.unk_id = special_id("tokenizer.unk_id", false);
    special_id("tokenizer.pad_id", false);
    spec.add_bos = ranged(file_, "tokenizer.add_bos", 0, 1) == 1;
    if (spec.add_bos && spec.bos_id < 0) model_error(file_, "tokenizer.add_bos is 1 but tokenizer.bos_id is -1");
    tokenizer_ = Tokenizer::create(spec);
}

Weight LlamaModel::weight(const std::string &name, int64_t rows, int64_t cols, Role role) const {
    const TensorEntry *t = file_.find_tensor(name);
    if (!t) model_error(file_, "required tensor '" + name + "' is missing");
    const bool matrix = role != Role::norm;
    std::vector<uint64_t> want = matrix ? std::vector<uint64_t>{uint64_t(rows), uint64_t(cols)}
                                        : std::vector<uint64_t>{uint64_t(cols)};
    if (t->dims != want) {
        auto show = [](const std::vector<uint64_t> &d) {
            std::string s = "[";
            for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
            return s + "]";
        };
        model_error(file_, "tensor '" + name + "' has dims " + show(t->dims) + ", expected " + show(want));
    }
    const DType d = t->dtype;
    const char *allowed = role == Role::norm ? "f32" : role == Role::embedding ? "f32, f16, q8 or q4" : nullptr;
    if ((role == Role::norm && d != DType::f32) ||
        (role == Role::embedding && d != DType::f32 && d != DType::f16 && d != DType::q8 && d != DType::q4))
        model_error(file_, "tensor '" + name + "' has dtype " + dtype_name(d) + ", expected " + allowed);
    std::vector<PartSpan> parts;
    for (const TensorPart &p : t->parts) parts.push_back({p.data, p.size});
    return make_weight(d, matrix ? rows : 1, cols, parts, file_.path() + ": tensor '" + name + "'");
}

void LlamaModel::bind_weights() {
    const LlamaParams &p = params_;
    const int64_t d = p.hidden_size, q = int64_t(p.n_heads) * p.head_dim, kv = int64_t(p.n_kv_heads) * p.head_dim;
    token_embd_ = weight("token_embd.weight", p.vocab_size, d, Role::embedding);
    output_norm_ = weight("output_norm.weight", 1, d, Role::norm);
    if (p.tie_word_embeddings) {
        if (file_.find_tensor("output.weight"))
            model_error(file_, "tensor 'output.weight' is present but llama.tie_word_embeddings is 1");
        output_ = token_embd_;
    } else {
        output_ = weight("output.weight", p.vocab_size, d, Role::embedding);
    }
    for (int i = 0; i < p.n_layers; ++i) {
        const std::string b = "blk." + std::to_string(i) + ".";
        LayerWeights l;
        l.attn_norm = weight(b + "attn_norm.weight", 1, d, Role::norm);
        l.attn_q = weight(b + "attn_q.weight", q, d, Role::linear);
        l.attn_k = weight(b + "attn_k.weight", kv, d, Role::linear);
        l.attn_v = weight(b + "attn_v.weight", kv, d, Role::linear);
        l.attn_output = weight(b + "attn_output.weight", d, q, Role::linear);
        l.ffn_norm = weight(b + "ffn_norm.weight", 1, d, Role::norm);
        l.ffn_gate = weight(b + "ffn_gate.weight", p.ffn_size, d, Role::linear);
        l.ffn_up = weight(b + "ffn_up.weight", p.ffn_size, d, Role::linear);
        l.ffn_down = weight(b + "ffn_down.weight", d, p.ffn_size, Role::linear);
        layers_.push_back(l);
        auto bias = [&](bool present, const char *kind, int64_t rows) -> const float * {
            return present ? static_cast<const float *>(weight(b + kind + ".bias", 1, rows, Role::norm).data) : nullptr;
        };
        biases_.push_back({bias(p.bias_qkv, "attn_q", q), bias(p.bias_qkv, "attn_k", kv), bias(p.bias_qkv, "attn_v", kv),
                           bias(p.bias_attn_output, "attn_output", d), bias(p.bias_mlp, "ffn_gate", p.ffn_size),
                           bias(p.bias_mlp, "ffn_up", p.ffn_size), bias(p.bias_mlp, "ffn_down", d)});
    }
}

}  // namespace mixrt
