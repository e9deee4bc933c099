# reference_perplexity.py: perplexity of a GGUF Llama under the project's protocol, computed by
# the independent float64 numpy reference, mixrt.devtools.reference_llama (slow; ground truth only).
# Usage: python tools/reference_perplexity.py GGUF TEXTFILE [--ctx 512] [--tokens 16384]
import argparse
import json
import time
from pathlib import Path

from tokenizers import Tokenizer

from mixrt.devtools.reference_llama import ReferenceLlama


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Perplexity of a GGUF Llama by the float64 numpy reference.")
    parser.add_argument("gguf", type=Path)
    parser.add_argument("text", type=Path, help="text file, tokenized whole as one string")
    parser.add_argument("--ctx", type=int, default=512, help="window length in tokens")
    parser.add_argument("--tokens", type=int, default=16384, help="use the first N tokens")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="Hugging Face tokenizer.json (default: hf/tokenizer.json beside the GGUF)")
    args = parser.parse_args()

    tokenizer_path = args.tokenizer or args.gguf.parent / "hf" / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    text = args.text.read_text(encoding="utf-8")
    tokens = tokenizer.encode(text, add_special_tokens=False).ids[:args.tokens]

    start = time.perf_counter()
    model = ReferenceLlama.from_gguf(args.gguf)
    result = model.perplexity(tokens, ctx=args.ctx)
    result.update(tokens=len(tokens), seconds=round(time.perf_counter() - start, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
