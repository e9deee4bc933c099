# decoded_copy.py: a copy of a .mixrt file with some (or all) of its tensors stored as the f32
# values their dtype decodes to, the rest part for part: a quantized file's weights without the
# rounding its kernels apply to their inputs (tests compare the runtime against it; quant_table
# measures quik's weights alone with it).
from __future__ import annotations

import os
from pathlib import Path

from ..format import MixrtWriter, read_mixrt
from ..quant.layouts import derived_counts


def decoded_copy(src: str | os.PathLike, out: str | os.PathLike, dtypes: set | None = None) -> Path:
    """Writes `out`: src with every tensor whose dtype name is in `dtypes` (every tensor if None)
    as f32 decoded values. Returns out."""
    source = read_mixrt(src)

    def decoded(t) -> bool:
        return dtypes is None or t.dtype_name in dtypes

    with MixrtWriter(out) as writer:
        writer.add_metadata(source.metadata)
        for t in source.tensors.values():
            if decoded(t):
                writer.declare_tensor(t.name, "f32", t.dims)
                continue
            counts = derived_counts(t.dtype_name, [size for _, size in t.parts], t.dims[0]) if len(t.dims) == 2 else {}
            writer.declare_tensor(t.name, t.dtype_name, t.dims, **counts)
        for t in source.tensors.values():
            writer.write_tensor(t.name, t.dequantize() if decoded(t) else
                                t.array() if t.dtype_name in ("f32", "f16") else t.part_views())
    return Path(out)
