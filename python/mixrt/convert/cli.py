# cli.py: the `mixrt-convert SRC -o OUT.mixrt [--dtype f16|f32] [--quiet]` console script.
# Refusals print `mixrt-convert: error: <message>` and exit 1. Tested by tests/test_convert.py.
from __future__ import annotations

import argparse
import sys

from . import RECIPES, convert
from .errors import ConversionError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mixrt-convert",
        description="Convert a Llama checkpoint (a GGUF file or a Hugging Face directory with "
                    "config.json, *.safetensors and a tokenizer) into one .mixrt file.")
    parser.add_argument("src", help="GGUF file or Hugging Face checkpoint directory")
    parser.add_argument("-o", "--output", required=True, help="the .mixrt file to write")
    parser.add_argument("--dtype", choices=RECIPES, default="f16",
                        help="storage of linear weights and embeddings; norms stay f32 "
                             "(default: f16)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    args = parser.parse_args(argv)
    try:
        summary = convert(args.src, args.output, dtype=args.dtype, progress=not args.quiet)
    except (ConversionError, OSError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted, no file written", file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"wrote {args.output}: {summary['tensors']} tensors, "
              f"{summary['parameters'] / 1e6:.1f}M parameters, "
              f"{summary['bytes'] / 2**20:.1f} MiB in {summary['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
