# train_tokenizer.py: the command line of mixrt.devtools.train_tokenizer: trains a small tokenizer
# (a Llama-style sentencepiece BPE, a GPT-2-style byte-level BPE with ChatML control tokens and a
# chat template, or byte-level BPEs built like Llama 3's and Qwen2's) into a directory, by default
# on this repository's Markdown and Python files.
#   python tools/train_tokenizer.py OUT_DIR [--kind byte_bpe] [--vocab 1000] [--text FILE ...]
import argparse
from pathlib import Path

from mixrt.devtools.train_tokenizer import TRAINERS, repository_text

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description="Train a small tokenizer into a Hugging Face "
                                                 "directory (tokenizer files only).")
    parser.add_argument("out_dir", help="directory to write the tokenizer files into")
    parser.add_argument("--kind", choices=TRAINERS, default="sentencepiece",
                        help="sentencepiece (Llama-2 style), byte_bpe (GPT-2 style with ChatML), llama3_bpe "
                             "(Llama 3 style) or qwen2_bpe (Qwen2 style)")
    parser.add_argument("--vocab", type=int, default=1000, help="vocabulary size (default 1000)")
    parser.add_argument("--text", nargs="*", default=None,
                        help="text files to learn from (default: the repository's own text)")
    args = parser.parse_args()
    text = ("\n".join(Path(t).read_text(encoding="utf-8") for t in args.text) if args.text
            else repository_text(REPO))
    print(f"wrote {TRAINERS[args.kind](args.out_dir, text, args.vocab)}")


if __name__ == "__main__":
    main()
