"""Inputs of the fuzz targets in cpp/fuzz (run by tools/check_sanitizers.sh).

`seeds`: the seed corpus of the file reader (committed in tests/fuzz/model_file): the byte model
and a one-layer random model of width 64 in each packed dtype family (q8, q4, mix, quik, block
floating point, MX), each a few tens of KB so that mutations stay fast. `tokenizer-models`: one
small model per tokenizer kind (sentencepiece BPE, byte-level BPE with the GPT-2, Llama 3 and Qwen2
pre-tokenizers), their tokenizers trained on the repository's text (the Markdown and Python files
under --text-root, the current directory by default), for the tokenizer target.

    python -m mixrt.devtools.fuzz_models seeds OUT_DIR
    python -m mixrt.devtools.fuzz_models tokenizer-models OUT_DIR   (prints the ':'-joined paths)
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np

from ..convert.tokenizer_export import tokenizer_metadata_from_hf_dir
from .random_model import (BYTE_SHAPE, Shape, byte_model_metadata, byte_model_tensors, make_random_mixrt,
                           write_byte_model)
from .train_tokenizer import TRAINERS, repository_text

SEED_SHAPE = Shape(hidden=64, layers=1, heads=2, kv_heads=1, ffn=64, context=64, dtype="float32")
SEED_RECIPES = {"q8": {}, "q4": {}, "mix": {"bits": 4.0}, "quik": {}, "bfp4": {}, "mxfp4": {}}


def write_seeds(out_dir) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_byte_model(out / "byte-f16.mixrt")]
    for recipe, options in SEED_RECIPES.items():
        path = out / f"width64-{recipe}.mixrt"
        make_random_mixrt(path, shape=SEED_SHAPE, recipe=recipe, vocab=258, embed_dtype="q4", **options)
        paths.append(path)
    return paths


def write_tokenizer_models(out_dir, text_root, vocab_size: int = 1000) -> list[Path]:
    """The byte model's weights (width 8) under each tokenizer kind, trained on text_root's text."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = repository_text(text_root)
    base_tensors = byte_model_tensors()
    paths = []
    for kind, train in TRAINERS.items():
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer_dir = train(Path(tmp), text, vocab_size)
            (tokenizer_dir / "config.json").write_text("{}")
            tokenizer = tokenizer_metadata_from_hf_dir(tokenizer_dir)
        vocab = len(tokenizer["tokenizer.tokens"])
        metadata = {k: v for k, v in byte_model_metadata().items() if not k.startswith("tokenizer.")}
        metadata.update(tokenizer, **{"llama.vocab_size": vocab, "general.name": f"{kind} tokenizer model"})
        rng = np.random.default_rng(0)
        tensors = dict(base_tensors)
        tensors["token_embd.weight"] = ("f16", (vocab, BYTE_SHAPE.hidden),
                                        rng.standard_normal((vocab, BYTE_SHAPE.hidden)).astype(np.float32) * 0.1)
        paths.append(write_byte_model(out / f"{kind}.mixrt", metadata, tensors))
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mixrt.devtools.fuzz_models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("seeds", "tokenizer-models"))
    parser.add_argument("out_dir")
    parser.add_argument("--text-root", default=".", help="the repository whose text trains the tokenizers")
    args = parser.parse_args(argv)
    paths = (write_seeds(args.out_dir) if args.what == "seeds" else
             write_tokenizer_models(args.out_dir, args.text_root))
    print(":".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
