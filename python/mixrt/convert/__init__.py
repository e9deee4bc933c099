# mixrt.convert: converts a Llama checkpoint (GGUF file or Hugging Face directory) into one .mixrt
# file, streaming tensor by tensor. The console script is cli.py (`mixrt-convert`).
# Tested by tests/test_convert.py.
from __future__ import annotations

import math
import os
import time
from pathlib import Path

from tqdm import tqdm

from .. import __version__
from ..format import FormatError, MixrtWriter
from .errors import ConversionError
from .gguf_source import open_gguf
from .hf_source import open_hf_dir
from .llama import ModelSource

__all__ = ["ConversionError", "convert", "open_source"]

RECIPES = ("f16", "f32")


def open_source(src: Path) -> ModelSource:
    """A GGUF file or a Hugging Face checkpoint directory, read as the canonical description."""
    if src.is_dir():
        return open_hf_dir(src)
    if not src.is_file():
        raise ConversionError(f"{src}: expected a GGUF file or a checkpoint directory, "
                              f"found nothing")
    with open(src, "rb") as stream:
        magic = stream.read(4)
    if magic != b"GGUF":
        raise ConversionError(f"{src}: expected a GGUF file (magic b'GGUF') or a checkpoint "
                              f"directory, found a file starting with {magic!r}")
    return open_gguf(src)


def _file_metadata(model: ModelSource, recipe: str) -> dict:
    return {"general.architecture": "llama",
            "general.name": model.name,
            "mixrt.converter_version": __version__,
            "mixrt.recipe": recipe,
            "mixrt.source": model.source,
            **model.hparams.metadata(),
            **model.tokenizer}


def convert(src: str | os.PathLike, out: str | os.PathLike, dtype: str = "f16",
            progress: bool = True) -> dict:
    """Writes `out` from `src` with linear weights and embeddings in `dtype` (norms stay f32).
    Returns a summary: tensors, parameters, bytes (file size) and seconds. On any failure no
    output file is left (an existing `out` is untouched)."""
    if dtype not in RECIPES:
        raise ConversionError(f"dtype: expected one of {', '.join(RECIPES)}, found {dtype!r}")
    start = time.perf_counter()
    model = open_source(Path(src))
    parameters = sum(math.prod(tensor.dims) for _, tensor in model.tensors)
    with MixrtWriter(out) as writer:
        writer.add_metadata(_file_metadata(model, dtype))
        for name, tensor in model.tensors:
            writer.declare_tensor(name, "f32" if len(tensor.dims) == 1 else dtype, tensor.dims)
        with tqdm(total=parameters, unit="param", unit_scale=True, desc=Path(out).name,
                  disable=not progress) as bar:
            for name, tensor in model.tensors:
                try:
                    writer.write_tensor(name, tensor.load())
                except FormatError as error:
                    raise ConversionError(str(error)) from error
                bar.update(math.prod(tensor.dims))
    return {"tensors": len(model.tensors), "parameters": parameters,
            "bytes": os.path.getsize(out), "seconds": time.perf_counter() - start}
