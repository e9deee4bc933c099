# cli.py: the `mixrt-convert SRC -o OUT.mixrt [--force] [--recipe f16|f32|q8|q4|mix|bfp|bfp-search|mxint8|mxfp4|quik]
# [--bits B] [--embed-dtype D] [--calib TEXT|self | --no-calib] [--calib-tokens N] [--calib-method M]
# [--outlier-frac F] [--no-clip-search] [--outlier-cols F] [--down-proj q8|quik] [--quiet]` console
# script, and `mixrt-convert --version`.
# Refusals print one line, `mixrt-convert: error: <message>` (naming the file, and the field where
# one is at fault), and exit 1; bad options (a value out of its range too: `argument --bits:
# expected ..., found ...`) are refused the same way while parsing, before any work, with exit
# status 2. SIGINT and SIGTERM stop the conversion, remove its temporary files and exit with 130 or
# 143. Tested by tests/test_convert.py and tests/test_convert_damaged.py.
from __future__ import annotations

import argparse
import signal
import sys
import warnings

from .. import __version__
from . import (BFP_BITS, CALIB_METHODS, CALIBRATED_RECIPES, DEFAULT_BFP_BITS, DEFAULT_BITS,
               DEFAULT_CALIB_TOKENS, DEFAULT_OUTLIER_FRAC, DEFAULT_SEARCH_BITS, DOWN_PROJ_DTYPES,
               EMBED_DTYPES, NUMERIC_RANGES, RECIPES, SELF_CALIB, convert, numeric_problem)
from ..quant.quik import DEFAULT_OUT_FRACTION
from .errors import ConversionError, one_line


def numeric(name: str):
    """The argparse type of convert()'s numeric parameter `name`: out-of-range values (NaN and
    infinity included) and text that is no number are refused while the options are parsed,
    before any work, as `argument --option: expected <range>, found <value>`."""
    kind = NUMERIC_RANGES[name][0]

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = text
        problem = numeric_problem(name, value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value
    return parse


class OneLineErrorParser(argparse.ArgumentParser):
    """Reports a bad command line in one line, as the conversion's refusals are, without the
    usage text (--help shows it); exit status 2, as argparse's."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="mixrt-convert",
        description="Convert a Llama checkpoint (a GGUF file or a Hugging Face directory with "
                    "config.json, *.safetensors and a tokenizer) into one .mixrt file.")
    parser.add_argument("src", help="GGUF file or Hugging Face checkpoint directory")
    parser.add_argument("-o", "--output", required=True,
                        help="the .mixrt file to write (its directory must exist)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite the output file if it exists (otherwise refused)")
    parser.add_argument("--recipe", "--dtype", dest="recipe", choices=RECIPES, default="f16",
                        help="storage of the decoder linear weights: f16, f32, q8 (8.5 bits), "
                             "q4 (5 bits), mix (2/4/16-bit within --bits), bfp (block floating "
                             "point: --bits-bit elements, 16 per shared exponent), bfp-search (bfp6 "
                             "to bfp3 per matrix within --bits, by their cost on calibration text), "
                             "mxint8 (8.25 bits), mxfp4 (4.25 bits; OCP MX) or quik (QUIK: 4-bit "
                             "weights and per-token 8-bit inputs with fp16 input columns); norms "
                             "stay f32 (default: f16)")
    parser.add_argument("--bits", type=numeric("bits"), metavar="B",
                        help=f"mix: budget in bits per decoder linear weight, every stored byte "
                             f"counted (default: {DEFAULT_BITS}); bfp: element bits, one of "
                             f"{', '.join(map(str, BFP_BITS))} (default: {DEFAULT_BFP_BITS}); bfp-search: "
                             f"budget as for mix (default: {DEFAULT_SEARCH_BITS})")
    parser.add_argument("--embed-dtype", choices=EMBED_DTYPES,
                        help="storage of the embedding and output head (default: the recipe "
                             "for f16/f32, else q8; q4: smaller and faster, less accurate)")
    calib = parser.add_mutually_exclusive_group()
    calib.add_argument("--calib", metavar="TEXTFILE", default=SELF_CALIB,
                       help=f"mix, bfp-search, quik: calibrate (mix, quik: Hessian-aware quantization, "
                            f"GPTQ; bfp-search: each format's cost; quik: its fp16 columns) on this "
                            f"text, never one you "
                            f"evaluate on; '{SELF_CALIB}' (the default): on text the model writes itself, "
                            f"which needs no data but takes its decode time")
    calib.add_argument("--no-calib", dest="calib", action="store_const", const=None,
                       help="mix: round to nearest without calibration (fast, far less accurate); "
                            "quik: the same, with --outlier-cols 0")
    parser.add_argument("--calib-tokens", type=numeric("calib_tokens"), metavar="N",
                        default=DEFAULT_CALIB_TOKENS,
                        help=f"mix: calibration tokens, read from the text or written by the model "
                             f"(default {DEFAULT_CALIB_TOKENS})")
    parser.add_argument("--calib-method", choices=CALIB_METHODS, default="auto",
                        help="runtime: Hessians of every layer collected by running the model "
                             "(fast, memory grows with the model); sequential: layer by layer in "
                             "numpy on the quantized layers' outputs (memory bounded); auto: "
                             "runtime unless its Hessians exceed 4 GiB (default)")
    parser.add_argument("--outlier-frac", type=numeric("outlier_frac"), metavar="F",
                        default=DEFAULT_OUTLIER_FRAC,
                        help=f"mix: fraction of weights kept as fp16 outliers "
                             f"(default: {DEFAULT_OUTLIER_FRAC})")
    parser.add_argument("--no-clip-search", dest="clip_search", action="store_false",
                        help="mix: 2-bit groups take their full range instead of the best of "
                             "several clipped ranges")
    parser.add_argument("--outlier-cols", type=numeric("outlier_cols"), metavar="F",
                        help=f"quik: fraction of each layer's input columns (those with the largest "
                             f"calibration activations) kept fp16 (default: {DEFAULT_OUT_FRACTION}, "
                             f"the paper's 256 of 4096)")
    parser.add_argument("--down-proj", choices=DOWN_PROJ_DTYPES,
                        help="quik: storage of ffn_down, q8 (the paper's 8-bit down_proj, the "
                             "default) or quik")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the conversion is so that it cleans up as after Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # Python's default would end the process at once
    # Warnings of convert() (e.g. the mix recipe without calibration) as one line each.
    warnings.showwarning = lambda message, *_: print(f"{parser.prog}: warning: {message}", file=sys.stderr)
    if args.recipe in CALIBRATED_RECIPES and args.calib == SELF_CALIB and not args.quiet:
        print(f"{parser.prog}: calibrating on {args.calib_tokens} tokens of text the model writes itself "
              f"(--calib FILE to use a text instead)", file=sys.stderr)
    try:
        summary = convert(args.src, args.output, recipe=args.recipe, bits=args.bits,
                          embed_dtype=args.embed_dtype, calib=args.calib, calib_tokens=args.calib_tokens,
                          calib_method=args.calib_method,
                          progress=not args.quiet, outlier_frac=args.outlier_frac,
                          clip_search=args.clip_search, outlier_cols=args.outlier_cols,
                          down_proj=args.down_proj, force=args.force)
    except (ConversionError, OSError) as error:
        print(f"{parser.prog}: error: {one_line(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:  # the temporary files are gone by now
        terminated = isinstance(interrupt, Terminated)
        print(f"{parser.prog}: {'terminated' if terminated else 'interrupted'}, no file written", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    if not args.quiet:
        linear = ("" if summary["linear_bits"] is None else
                  f", decoder linear layers {summary['linear_bits']:.3f} bits per weight")
        print(f"wrote {args.output}: {summary['tensors']} tensors, "
              f"{summary['parameters'] / 1e6:.1f}M parameters, "
              f"{summary['bytes'] / 1e6:.1f} MB ({summary['file_bits']:.3f} bits per "
              f"parameter{linear}) in {summary['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
