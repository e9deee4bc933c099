/* mixrt_example.c: a small C program that embeds mixrt through its C API only: it loads a model,
 * prints a few facts, tokenizes a prompt and streams a greedy continuation to stdout.
 * Usage: mixrt_example MODEL.mixrt "prompt" [max_tokens]. Built by CMake, run by
 * tests/test_c_example.py (against the Python package) and tests/test_c_package.py (against
 * `cmake --install`, through find_package and pkg-config). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mixrt/mixrt.h"

static int check(mixrt_status status, const char *what) {
    if (status != MIXRT_OK) {
        fprintf(stderr, "mixrt_example: %s failed (status %d): %s\n", what, (int)status, mixrt_last_error());
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.mixrt PROMPT [MAX_TOKENS]\n", argv[0]);
        return 2;
    }
    const int max_tokens = argc > 3 ? atoi(argv[3]) : 32;
    mixrt_model *model = NULL;
    mixrt_context *ctx = NULL;
    mixrt_sampler *sampler = NULL;
    mixrt_generation *gen = NULL;
    int32_t *ids = NULL;
    int rc = 1;

    if (check(mixrt_model_load(argv[1], &model), "mixrt_model_load")) goto done;
    fprintf(stderr, "mixrt %s: vocab %d, context %d, %zu tensors\n", mixrt_version(), mixrt_model_n_vocab(model),
            mixrt_model_context_length(model), mixrt_model_tensor_count(model));

    /* Ask for the size first, then tokenize into a buffer of that size. */
    size_t n_ids = 0;
    mixrt_status st = mixrt_tokenize(model, argv[2], strlen(argv[2]), -1, 1, NULL, 0, &n_ids);
    if (st != MIXRT_OK && st != MIXRT_ERR_BUFFER_TOO_SMALL && check(st, "mixrt_tokenize")) goto done;
    ids = (int32_t *)malloc((n_ids ? n_ids : 1) * sizeof(int32_t));
    if (!ids || check(mixrt_tokenize(model, argv[2], strlen(argv[2]), -1, 1, ids, n_ids, &n_ids), "mixrt_tokenize"))
        goto done;
    fprintf(stderr, "prompt: %zu tokens\n", n_ids);

    mixrt_context_params cp = mixrt_context_default_params();
    cp.n_ctx = (int32_t)n_ids + max_tokens;
    if (check(mixrt_context_create(model, &cp, &ctx), "mixrt_context_create")) goto done;

    mixrt_sampler_params sp = mixrt_sampler_default_params();
    sp.temperature = 0.0f; /* greedy */
    if (check(mixrt_sampler_create(&sp, &sampler), "mixrt_sampler_create")) goto done;

    mixrt_generation_params gp = {max_tokens, NULL, 0};
    if (check(mixrt_generation_start(ctx, sampler, ids, n_ids, &gp, &gen), "mixrt_generation_start")) goto done;
    for (;;) {
        const char *text;
        size_t len;
        mixrt_stop_reason reason;
        if (check(mixrt_generation_next(gen, &text, &len, &reason), "mixrt_generation_next")) goto done;
        fwrite(text, 1, len, stdout);
        fflush(stdout);
        if (reason != MIXRT_STOP_NONE) {
            fprintf(stderr, "\n[%d tokens, stop reason %d]\n", mixrt_generation_n_generated(gen), (int)reason);
            break;
        }
    }
    rc = 0;
done:
    mixrt_generation_free(gen);
    mixrt_sampler_free(sampler);
    mixrt_context_free(ctx);
    free(ids);
    mixrt_model_free(model);
    return rc;
}
