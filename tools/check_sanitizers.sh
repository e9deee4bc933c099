#!/usr/bin/env bash
# check_sanitizers.sh: the robustness checks of README "Security and robustness", run by CI.
#  1. The Python package built with AddressSanitizer + UndefinedBehaviorSanitizer (gcc,
#     -DMIXRT_SANITIZE=ON), then the C-API, API, bad-file, batched-decode and tokenizer tests and the
#     kernels' non-finite input tests on it (the sanitizer runtime preloaded; any report stops the
#     test process and fails).
#  2. The libFuzzer targets of cpp/fuzz built with clang (-DMIXRT_FUZZ=ON, also ASan + UBSan) and run
#     for FUZZ_SECONDS each from the committed seed corpora (tests/fuzz/), on copies: the file
#     reader on .mixrt files, the tokenizers on texts. Prints executions and coverage; a crash,
#     sanitizer report, leak, hang (> 10 s per input) or 2 GB of memory fails, leaving the input
#     in build/fuzz-artifacts/.
# Usage: bash tools/check_sanitizers.sh [--fuzz-seconds N] [--no-tests] [--no-fuzz]
# Needs: gcc with libasan/libubsan, clang with libFuzzer (Debian: clang libclang-rt-14-dev), and an
# installed mixrt (for the generated tokenizer models and the test fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=60
RUN_TESTS=1
RUN_FUZZ=1
while [ $# -gt 0 ]; do
  case "$1" in
    --fuzz-seconds) FUZZ_SECONDS="$2"; shift 2 ;;
    --no-tests) RUN_TESTS=0; shift ;;
    --no-fuzz) RUN_FUZZ=0; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "check_sanitizers.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"

if [ "$RUN_TESTS" = 1 ]; then
  echo "== 1. ASan + UBSan build of the package (gcc)"
  PKG=build/sanitize-pkg
  rm -rf "$PKG"
  CMAKE_ARGS="-DMIXRT_SANITIZE=ON -DMIXRT_CUDA=OFF" \
    python -m pip install --quiet --no-deps --target "$PKG" -C build-dir=build/sanitize .
  # The sanitizer runtime must be loaded first, and libstdc++ with it (its exception interceptor
  # needs the real __cxa_throw at start-up; the Python interpreter does not link libstdc++).
  ASAN_RUNTIME="$(gcc -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so.6)"
  for lib in $ASAN_RUNTIME; do
    [ -f "$lib" ] || { echo "check_sanitizers.sh: $lib is missing (gcc's libasan, libstdc++)" >&2; exit 1; }
  done
  echo "== 1. tests under the sanitizers"
  # Leaks are not checked here (the Python interpreter keeps its own allocations to the end); the
  # fuzzers below check them for loading, tokenizing, contexts and sampling. The tokenizer tests
  # that encode whole corpora (10 minutes under the sanitizers) are left to the normal run; the
  # tokenizer fuzzer covers the same code here.
  LD_PRELOAD="$ASAN_RUNTIME" PYTHONPATH="$PKG" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    python -m pytest -q -p no:cacheprovider tests/test_c_example.py tests/test_api.py tests/test_bad_files.py \
      tests/test_batched_decode.py tests/test_tokenizer.py tests/test_quant_kernels.py \
      -k "not every_codepoint and not whole_file and not line_by_line and (not test_quant_kernels or non_finite)"
fi

if [ "$RUN_FUZZ" = 1 ]; then
  command -v clang++ >/dev/null || { echo "check_sanitizers.sh: clang++ is needed for the fuzzers (Debian: apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
  echo "== 2. fuzz targets (clang, libFuzzer, ASan + UBSan)"
  cmake -S . -B build/fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DMIXRT_FUZZ=ON \
    -DMIXRT_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build/fuzz --target fuzz_model_file fuzz_tokenizer -j "$(nproc)" >/dev/null
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  mkdir -p build/fuzz-artifacts
  python -m mixrt.devtools.fuzz_models tokenizer-models "$WORK/models" --text-root . > "$WORK/models.txt"
  export MIXRT_FUZZ_TOKENIZER_MODELS="$(cat "$WORK/models.txt")"
  for target in model_file tokenizer; do
    cp -r "tests/fuzz/$target" "$WORK/corpus-$target"
    echo "-- fuzz_$target: $FUZZ_SECONDS s from $(ls "tests/fuzz/$target" | wc -l) seeds"
    if ! build/fuzz/fuzz_$target -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
         -print_final_stats=1 -artifact_prefix=build/fuzz-artifacts/ "$WORK/corpus-$target" > "$WORK/$target.log" 2>&1; then
      tail -60 "$WORK/$target.log"
      echo "check_sanitizers.sh: fuzz_$target failed; the input is in build/fuzz-artifacts/" >&2
      exit 1
    fi
    # the instrumented edges (PCs) in all, then executions, edges covered, features, corpus
    grep -E "^INFO: Loaded [0-9]+ PC tables|^#[0-9]+[[:space:]]+DONE" "$WORK/$target.log"
    grep -E "^Done|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)" "$WORK/$target.log"
  done
fi
echo "== check_sanitizers.sh: passed"
