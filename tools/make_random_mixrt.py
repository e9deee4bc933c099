# make_random_mixrt.py: the command line of mixrt.devtools.random_model.make_random_mixrt: writes a
# randomly initialised .mixrt directly in packed form (random valid codes, no quantization), so a
# Llama-2-7B-shaped file in any recipe (f16, q8, q4, mix at --bits, a block format: bfp6, mxfp4, ...;
# quik with ffn_down q8) takes a minute or two.
#   python tools/make_random_mixrt.py OUT.mixrt [--shape llama2-7b] [--recipe mix] [--bits 2.9]
import argparse

from mixrt.convert import DEFAULT_BITS
from mixrt.devtools.random_model import DEFAULT_VOCAB, EMBED_DTYPES, RECIPES, SHAPES, make_random_mixrt


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a randomly initialised .mixrt in packed form.")
    parser.add_argument("out")
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--recipe", choices=RECIPES, default="mix")
    parser.add_argument("--bits", type=float, default=DEFAULT_BITS, help="mix: bits per decoder linear weight")
    parser.add_argument("--embed-dtype", choices=EMBED_DTYPES, help="embedding and head (default q8; f16 for f16)")
    parser.add_argument("--vocab", type=int, default=DEFAULT_VOCAB)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    summary = make_random_mixrt(args.out, args.shape, args.recipe, args.bits, args.embed_dtype, args.vocab,
                                args.seed)
    print(f"wrote {args.out}: {summary['bytes']} bytes, decoder linear weights at "
          f"{summary['linear_bits']:.3f} bits per weight")


if __name__ == "__main__":
    main()
