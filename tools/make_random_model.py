# make_random_model.py: the command line of mixrt.devtools.random_model.make_random_model: writes a
# randomly initialised Hugging Face Llama checkpoint directory in a real shape (tiny,
# tinyllama-1.1b, llama2-7b), for speed measurements and converter tests.
#   python tools/make_random_model.py OUT_DIR [--shape llama2-7b] [--tokenizer T] [--dtype float16]
import argparse

from mixrt.devtools.random_model import SHAPES, make_random_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Write a randomly initialised Hugging Face Llama checkpoint directory.")
    parser.add_argument("out_dir")
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--tokenizer", help="sentencepiece tokenizer.model, or a directory of "
                                            "tokenizer files (tools/train_tokenizer.py), to include "
                                            "(needed to convert the result)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float32", "float16"),
                        help="weight storage (default: float32 for tiny, float16 otherwise)")
    args = parser.parse_args()
    out = make_random_model(args.out_dir, shape=args.shape, tokenizer=args.tokenizer,
                            seed=args.seed, dtype=args.dtype)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
