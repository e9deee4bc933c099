/* mixrt.h: the C API of the mixrt runtime (plain C99, opaque handles, status codes).
 *
 * Every function that can fail returns a mixrt_status; on failure mixrt_last_error() returns a
 * message for the calling thread naming what was wrong. cpp/apps/mixrt_example.c shows the whole
 * API in use and is built and run by tests/test_c_example.py.
 */
#ifndef MIXRT_H
#define MIXRT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define MIXRT_API __declspec(dllexport)
#else
#define MIXRT_API __attribute__((visibility("default")))
#endif

typedef enum mixrt_status {
    MIXRT_OK = 0,
    MIXRT_ERR_IO = 1,               /* the file could not be opened or mapped */
    MIXRT_ERR_FORMAT = 2,           /* the file breaks FORMAT.md */
    MIXRT_ERR_INVALID_ARGUMENT = 3, /* a bad argument: null pointer, token out of range, ... */
    MIXRT_ERR_CONTEXT_FULL = 4,     /* the tokens would not fit in the context */
    MIXRT_ERR_OUT_OF_MEMORY = 5,
    MIXRT_ERR_BUFFER_TOO_SMALL = 6, /* the required size is returned through the size pointer */
    MIXRT_ERR_INTERNAL = 7,
    MIXRT_ERR_NOT_FINITE = 8        /* the model computed NaN or +inf logits (weights or activations
                                       overflow float32): nothing is sampled from them */
} mixrt_status;

/* The message of the last failure on this thread ("" if none). Valid until the next call. */
MIXRT_API const char *mixrt_last_error(void);
MIXRT_API const char *mixrt_version(void);

/* ---- model: the mapped, validated file ------------------------------------------------------ */

typedef struct mixrt_model mixrt_model;

/* Loads for the CPU backend (as mixrt_model_load_ex with MIXRT_BACKEND_CPU). */
MIXRT_API mixrt_status mixrt_model_load(const char *path, mixrt_model **out_model);
MIXRT_API void mixrt_model_free(mixrt_model *model);

/* ---- backends: where a model's contexts run ------------------------------------------------ */

typedef enum mixrt_backend {
    MIXRT_BACKEND_AUTO = 0, /* CUDA when this build has it and a device is present, else CPU */
    MIXRT_BACKEND_CPU = 1,
    MIXRT_BACKEND_CUDA = 2  /* fails when the build has no CUDA backend or no device is usable */
} mixrt_backend;

/* Like mixrt_model_load; with CUDA the weights are uploaded to the GPU here, once, and every
 * context of the model runs there (out of device memory is MIXRT_ERR_OUT_OF_MEMORY, naming the
 * bytes needed). */
MIXRT_API mixrt_status mixrt_model_load_ex(const char *path, mixrt_backend backend, mixrt_model **out_model);
/* The backend the model's contexts run on: MIXRT_BACKEND_CPU or MIXRT_BACKEND_CUDA. */
MIXRT_API mixrt_backend mixrt_model_backend(const mixrt_model *model);
/* Why MIXRT_BACKEND_AUTO chose the CPU ("" if it chose CUDA or the backend was named). */
MIXRT_API const char *mixrt_model_backend_note(const mixrt_model *model);
/* "" when this build has the CUDA backend and a CUDA device can be used, else why not. */
MIXRT_API const char *mixrt_cuda_unavailable_reason(void);

/* Metadata lookup by key (FORMAT.md section 3). Returns MIXRT_ERR_INVALID_ARGUMENT if the key is
 * absent or has another type. The string stays valid while the model lives (not terminated:
 * use out_len). */
MIXRT_API mixrt_status mixrt_model_meta_int(const mixrt_model *model, const char *key, int64_t *out);
MIXRT_API mixrt_status mixrt_model_meta_float(const mixrt_model *model, const char *key, double *out);
MIXRT_API mixrt_status mixrt_model_meta_string(const mixrt_model *model, const char *key,
                                               const char **out, size_t *out_len);
/* All metadata keys, one at a time (0 <= index < count). */
MIXRT_API size_t mixrt_model_meta_count(const mixrt_model *model);
MIXRT_API const char *mixrt_model_meta_key(const mixrt_model *model, size_t index);

typedef struct mixrt_tensor_info {
    const char *name;  /* valid while the model lives */
    const char *dtype; /* "f32", "f16", "q8", "q4", "mix" */
    uint32_t ndim;
    uint64_t dims[4];
    uint64_t n_elements;
    uint64_t n_bytes; /* all parts together */
    uint64_t n_cols_4bit;  /* mix: columns stored in 4-bit strips (K4); quik: its 4-bit columns; else 0 */
    uint64_t n_outliers;   /* mix: fp16 outliers; quik: the weights of its fp16 columns; else 0 */
} mixrt_tensor_info;

MIXRT_API size_t mixrt_model_tensor_count(const mixrt_model *model);
MIXRT_API mixrt_status mixrt_model_tensor_info(const mixrt_model *model, size_t index,
                                               mixrt_tensor_info *out);

MIXRT_API int32_t mixrt_model_n_vocab(const mixrt_model *model);
MIXRT_API int32_t mixrt_model_context_length(const mixrt_model *model);
MIXRT_API int32_t mixrt_model_bos(const mixrt_model *model); /* -1 if none */
MIXRT_API int32_t mixrt_model_eos(const mixrt_model *model); /* -1 if none */

/* ---- tokenizer: native, over the vocabulary stored in the file ------------------------------ */

/* add_bos: 1 prepend BOS, 0 do not, -1 as the file says (tokenizer.add_bos).
 * parse_special: 1 to recognise control tokens written in the text (e.g. "<|im_start|>").
 * Writes at most cap ids; *out_n receives the number of ids of the full encoding, and if it
 * exceeds cap the call returns MIXRT_ERR_BUFFER_TOO_SMALL. */
MIXRT_API mixrt_status mixrt_tokenize(const mixrt_model *model, const char *text, size_t text_len,
                                      int add_bos, int parse_special, int32_t *out_ids, size_t cap,
                                      size_t *out_n);
/* The bytes of ids (may be incomplete UTF-8 at the ends). Same size contract as mixrt_tokenize.
 * Control tokens decode to nothing unless render_special is 1. */
MIXRT_API mixrt_status mixrt_detokenize(const mixrt_model *model, const int32_t *ids, size_t n_ids,
                                        int render_special, char *out, size_t cap, size_t *out_len);

/* ---- context: KV cache, scratch buffers, threads --------------------------------------------- */

typedef struct mixrt_context mixrt_context;

/* How the KV cache stores keys and values: f16 (the default; half the memory and attention
   bytes) or f32 (CPU backend only). */
typedef enum mixrt_kv_type {
    MIXRT_KV_F16 = 0,
    MIXRT_KV_F32 = 1
} mixrt_kv_type;

/* How every matmul input (activation) is rounded before the product. MIXRT_ACT_DEFAULT: the
   kernels' own rounding only (8-bit groups of 32 for quantized weights, 8 bits per token for quik
   weights, none for f16/f32); MIXRT_ACT_BFP8 .. MIXRT_ACT_BFP3: first to block floating point of
   that many bits, 16 values per shared exponent (FORMAT.md 5.6, arXiv 2310.05079's activations);
   MIXRT_ACT_TOKEN4: the inputs of quik weights to 4 bits per token instead of 8 (QUIK's A4,
   FORMAT.md 5.7), the others as by default. CPU backend only, except the default. */
typedef enum mixrt_activations {
    MIXRT_ACT_DEFAULT = 0,
    MIXRT_ACT_BFP3 = 3,
    MIXRT_ACT_BFP4 = 4,
    MIXRT_ACT_BFP5 = 5,
    MIXRT_ACT_BFP6 = 6,
    MIXRT_ACT_BFP8 = 8,
    MIXRT_ACT_TOKEN4 = 20
} mixrt_activations;

/* The context an n_ctx of 0 gets when the model advertises a longer one (Llama 3.1's 131072 tokens
   would otherwise reserve gigabytes of KV cache): min(the model's context length, this). */
#define MIXRT_DEFAULT_N_CTX 4096

typedef struct mixrt_context_params {
    int32_t n_ctx;       /* tokens the KV cache holds; 0 = the model's context length, at most
                            MIXRT_DEFAULT_N_CTX; a cache larger than the memory available is
                            refused with MIXRT_ERR_OUT_OF_MEMORY */
    int32_t n_threads;   /* 0 = all cores */
    int32_t kv_type;     /* a mixrt_kv_type */
    int32_t activations; /* a mixrt_activations */
    int32_t n_seq;       /* sequences the context holds, each with its own n_ctx positions of KV
                            cache; 0 = 1. More than 1: CPU backend only (mixrt_context_decode) */
} mixrt_context_params;

MIXRT_API mixrt_context_params mixrt_context_default_params(void);
MIXRT_API mixrt_status mixrt_context_create(const mixrt_model *model,
                                            const mixrt_context_params *params,
                                            mixrt_context **out_ctx);
MIXRT_API void mixrt_context_free(mixrt_context *ctx);
/* Forget all tokens (the KV cache is reused). */
MIXRT_API void mixrt_context_reset(mixrt_context *ctx);
MIXRT_API int32_t mixrt_context_n_past(const mixrt_context *ctx);
MIXRT_API int32_t mixrt_context_n_ctx(const mixrt_context *ctx);
/* "cpu" or "cuda". */
MIXRT_API const char *mixrt_context_backend(const mixrt_context *ctx);

/* Run the model over n_tokens more tokens, in one batched pass (prompt processing) or one token
 * (decode). all_logits = 1 keeps the logits of every fed token, otherwise only the last.
 * MIXRT_ERR_CONTEXT_FULL if n_past + n_tokens > n_ctx (nothing is fed then). */
MIXRT_API mixrt_status mixrt_context_feed(mixrt_context *ctx, const int32_t *tokens, size_t n_tokens,
                                          int all_logits);
/* Logits of the last feed: *out_rows rows of n_vocab floats (1 row unless all_logits was set),
 * or of the last decode: one row per entry that asked for them, in entry order.
 * Valid until the next feed, decode or reset. */
MIXRT_API const float *mixrt_context_logits(const mixrt_context *ctx, size_t *out_rows);

/* Batched decoding of several sequences (as llama.cpp's llama_batch): each entry adds one token to
 * one sequence at that sequence's next position, so a batch can advance many sequences by one
 * token each, or prefill a prompt, or both, in one pass over the weights. Entries of one sequence
 * come in position order. A sequence's results do not depend on what else is in the batch. Sequence
 * 0 is the one mixrt_context_feed and mixrt_context_n_past see. CPU backend only. */
typedef struct mixrt_batch_entry {
    int32_t seq;    /* 0 .. n_seq-1 */
    int32_t token;
    int32_t pos;    /* the sequence's length before this entry: mixrt_context_seq_len(), plus one
                       per earlier entry of the same sequence in this batch */
    int32_t logits; /* 1: keep this entry's logits */
} mixrt_batch_entry;
/* Runs the entries (MIXRT_ERR_INVALID_ARGUMENT naming the first bad entry, or
 * MIXRT_ERR_CONTEXT_FULL, before anything is run). */
MIXRT_API mixrt_status mixrt_context_decode(mixrt_context *ctx, const mixrt_batch_entry *entries, size_t n_entries);
/* Sequences the context holds (its n_seq). */
MIXRT_API int32_t mixrt_context_n_seq(const mixrt_context *ctx);
/* Tokens sequence seq holds (-1 for a sequence the context does not have). */
MIXRT_API int32_t mixrt_context_seq_len(const mixrt_context *ctx, int32_t seq);
/* Forgets one sequence's tokens (the others keep theirs). */
MIXRT_API mixrt_status mixrt_context_seq_clear(mixrt_context *ctx, int32_t seq);

/* Calibration (CPU backend only: a CUDA context fails its feeds while a capture function is set):
 * while a capture function is set, every feed calls it with the inputs of each decoder
 * layer's linear layers, on the calling thread, before they are used:
 *   site 0 (MIXRT_SITE_ATTN_IN):  the normed input of attn_q/k/v      (rows, hidden_size)
 *   site 1 (MIXRT_SITE_ATTN_OUT): the input of attn_output            (rows, n_heads * head_dim)
 *   site 2 (MIXRT_SITE_FFN_IN):   the normed input of ffn_gate/up     (rows, hidden_size)
 *   site 3 (MIXRT_SITE_FFN_DOWN): the input of ffn_down               (rows, ffn_size)
 * x is valid only during the call. Pass NULL to stop capturing. */
enum { MIXRT_SITE_ATTN_IN = 0, MIXRT_SITE_ATTN_OUT = 1, MIXRT_SITE_FFN_IN = 2, MIXRT_SITE_FFN_DOWN = 3 };
typedef void (*mixrt_capture_fn)(void *user, int32_t layer, int32_t site, const float *x, int32_t rows,
                                 int32_t width);
MIXRT_API void mixrt_context_set_capture(mixrt_context *ctx, mixrt_capture_fn fn, void *user);

/* ---- sampler ---------------------------------------------------------------------------------- */

typedef struct mixrt_sampler mixrt_sampler;

typedef struct mixrt_sampler_params {
    float temperature;    /* <= 0: greedy (argmax) */
    int32_t top_k;        /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off; applied to the last repeat_last_n tokens of the context */
    int32_t repeat_last_n;
    uint64_t seed;
} mixrt_sampler_params;

/* The default sampling settings, seed 0. The Python API and the mixrt command take theirs from
   here (with a fresh seed each time). */
MIXRT_API mixrt_sampler_params mixrt_sampler_default_params(void);
MIXRT_API mixrt_status mixrt_sampler_create(const mixrt_sampler_params *params,
                                            mixrt_sampler **out_sampler);
MIXRT_API void mixrt_sampler_free(mixrt_sampler *sampler);
/* Pick the next token from the context's last logits and its token history. */
MIXRT_API mixrt_status mixrt_sampler_sample(mixrt_sampler *sampler, const mixrt_context *ctx,
                                            int32_t *out_token);
/* The same from a row of n_vocab logits (e.g. one sequence's row after mixrt_context_decode) and
 * that sequence's token history (for the repetition penalty). */
MIXRT_API mixrt_status mixrt_sampler_sample_logits(mixrt_sampler *sampler, const float *logits, int32_t n_vocab,
                                                   const int32_t *history, size_t n_history, int32_t *out_token);

/* ---- generation: prompt -> streamed text pieces ----------------------------------------------- */

typedef struct mixrt_generation mixrt_generation;

typedef enum mixrt_stop_reason {
    MIXRT_STOP_NONE = 0,       /* still running */
    MIXRT_STOP_EOS = 1,        /* the model produced its end-of-sequence token */
    MIXRT_STOP_STRING = 2,     /* a stop string appeared (it is not part of the output) */
    MIXRT_STOP_MAX_TOKENS = 3  /* max_tokens were generated */
} mixrt_stop_reason;

typedef struct mixrt_generation_params {
    int32_t max_tokens;
    const char *const *stop; /* n_stop NUL-terminated strings */
    size_t n_stop;
} mixrt_generation_params;

/* Feeds the prompt (after the tokens the context already holds) and prepares to generate.
 * MIXRT_ERR_CONTEXT_FULL if n_past + n_prompt + max_tokens > n_ctx. The context and sampler must
 * outlive the generation. */
MIXRT_API mixrt_status mixrt_generation_start(mixrt_context *ctx, mixrt_sampler *sampler,
                                              const int32_t *prompt, size_t n_prompt,
                                              const mixrt_generation_params *params,
                                              mixrt_generation **out_gen);
/* Generates until it has text to hand out or stops. *out_text (valid until the next call) holds
 * *out_len bytes of complete UTF-8, never part of a stop string; *out_reason is MIXRT_STOP_NONE
 * while more may follow. */
MIXRT_API mixrt_status mixrt_generation_next(mixrt_generation *gen, const char **out_text,
                                             size_t *out_len, mixrt_stop_reason *out_reason);
MIXRT_API int32_t mixrt_generation_n_generated(const mixrt_generation *gen);
MIXRT_API void mixrt_generation_free(mixrt_generation *gen);

/* ---- text streams: sampled tokens -> streamed text, for callers that sample themselves -------- */

/* What mixrt_generation does with the tokens it samples, without the context: each pushed token
 * may end the stream (the model's EOS, a stop string, max_tokens) and hands out the text that is
 * complete UTF-8 and can no longer become part of a stop string. One per sequence of a batched
 * decode (mixrt_context_decode). The model must outlive the stream. */
typedef struct mixrt_text_stream mixrt_text_stream;
MIXRT_API mixrt_status mixrt_text_stream_create(const mixrt_model *model, const mixrt_generation_params *params,
                                                mixrt_text_stream **out_stream);
/* *out_text (valid until the next call) holds *out_len bytes; *out_reason is MIXRT_STOP_NONE while
 * more may follow (tokens pushed after a stop are ignored). */
MIXRT_API mixrt_status mixrt_text_stream_push(mixrt_text_stream *stream, int32_t token, const char **out_text,
                                              size_t *out_len, mixrt_stop_reason *out_reason);
MIXRT_API int32_t mixrt_text_stream_n_generated(const mixrt_text_stream *stream);
MIXRT_API void mixrt_text_stream_free(mixrt_text_stream *stream);

#ifdef __cplusplus
}
#endif

#endif /* MIXRT_H */
