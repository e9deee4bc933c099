# mixrt.convert: converts a Llama checkpoint (GGUF file or Hugging Face directory) into one .mixrt
# file, streaming tensor by tensor, with the weights stored by a recipe (f16, f32, q8, q4, mix, the
# block formats bfp, bfp-search, mxint8, mxfp4, and quik).
# The console script is cli.py (`mixrt-convert`). Tested by tests/test_convert.py.
from __future__ import annotations

import dataclasses
import glob
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..format import FormatError, MixrtWriter
from ..quant.calibration import DEFAULT_CALIB_CTX, DEFAULT_CALIB_TOKENS
from ..quant import pack_mix, part_sizes, plan_mix, quantize_mix_rtn, quantize_q4, quantize_q8
from ..quant import blockfp, quik
from ..quant.blockfp import BLOCK_FORMATS
from ..quant.width_plan import plan_widths
from ..quant.layouts import GROUP, SCALE_CODES, SUPER_GROUPS
from .errors import ConversionError, naming
from .gguf_source import open_gguf
from .hf_source import open_hf_dir
from .llama import ModelSource

__all__ = ["ConversionError", "Storage", "convert", "open_source", "plan_storage"]

RECIPES = ("f16", "f32", "q8", "q4", "mix", "bfp", "bfp-search", "mxint8", "mxfp4", "quik")
CALIBRATED_RECIPES = ("mix", "bfp-search", "quik")
# quik (QUIK, arXiv 2310.09259, FORMAT.md 5.7): this fraction of every layer's input columns (those
# with the largest calibration max|x|) stays fp16; ffn_down is q8 (the paper's 8-bit down_proj) or
# quik too.
DOWN_PROJ_DTYPES = ("q8", "quik")
# bfp: the paper's block floating point (arXiv 2310.05079, FORMAT.md 5.6) at --bits element bits.
BFP_BITS = (8, 6, 5, 4, 3)
DEFAULT_BFP_BITS = 6  # W6: the width the paper finds nearly lossless without calibration
# bfp-search: a format per matrix among these (the paper's per-tensor width search), --bits on
# average, chosen by the KL each costs on calibration text (quant/width_plan.py).
SEARCH_FORMATS = ("bfp6", "bfp5", "bfp4", "bfp3")
DEFAULT_SEARCH_BITS = 5.5
EMBED_DTYPES = ("f16", "f32", "q8", "q4")  # what FORMAT.md 5.8 allows for embedding and head
EMBEDDINGS = ("token_embd.weight", "output.weight")
DEFAULT_BITS = 2.9  # mix budget per decoder linear weight, all metadata counted (the paper's v4)
# Share of the mix weights kept as fp16 outliers. Measured on SmolLM2 at 2.9 bits (wikitext
# calibration half; ratio to f16 and KL on the wikitext eval half / tiny Shakespeare, 16384
# tokens): 0.003 gives 1.747, 0.637 / 1.947, 0.796; 0.0015 gives 1.774, 0.644 / 1.933, 0.777.
DEFAULT_OUTLIER_FRAC = 0.003
# calib: calibrate the mix recipe on text the model writes itself (the default; no text needed).
SELF_CALIB = "self"
RTN_WARNING = ("the mix recipe without calibration rounds its 2-bit weights to nearest, which loses "
               "far more quality (SmolLM2-135M at 2.9 bits: wiki perplexity 240, against 63 calibrated "
               "on its own text, 49 on wiki text and 28 for f16); calibrate on a text (--calib FILE) or "
               "on the model's own (--calib self)")
QUANTIZE_ROWS = 4096  # q8/q4 quantize this many rows at a time, bounding the temporaries
# The numeric parameters: their type, which values they accept, and how to say so. convert()
# refuses other values before any work, the CLI while parsing its options (--bits, ...). NaN fails
# every comparison and infinity every bound, so neither gets through.
NUMERIC_RANGES = {
    "bits": (float, lambda value: 0 < value <= 16, "a number in (0, 16]"),
    "outlier_frac": (float, lambda value: 0 <= value < 1, "a number in [0, 1)"),
    "outlier_cols": (float, lambda value: 0 <= value <= 1, "a number in [0, 1]"),
    "calib_tokens": (int, lambda value: value >= 1, "an integer >= 1"),
}


@dataclasses.dataclass(frozen=True)
class Storage:
    """How one tensor is stored: its dtype and, for mix, its 4-bit columns and outliers, for quik
    its fp16 columns."""

    dtype: str
    k4: int = 0
    nnz: int = 0
    out_cols: int = 0


def numeric_problem(name: str, value) -> str | None:
    """Why `value` is refused for the numeric parameter `name` of NUMERIC_RANGES, or None."""
    kind, accepts, expected = NUMERIC_RANGES[name]
    number = (isinstance(value, int if kind is int else (int, float))
              and not isinstance(value, bool))
    if number and accepts(value):
        return None
    return f"expected {expected}, found {value if number else repr(value)}"


def check_output(src: Path, out: Path, force: bool) -> None:
    """Refuses, before any work, an output the conversion could not end in or should not
    replace: a missing or unwritable directory, a directory or special file at `out`, the source
    itself, or an existing file unless `force` (the CLI's --force). Messages name `out`, never the
    temporary file the writer builds beside it."""
    directory = out.parent
    if not directory.is_dir():
        raise ConversionError(f"output directory {directory} "
                              f"{'is not a directory' if directory.exists() else 'does not exist'}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConversionError(f"output directory {directory} is not writable")
    if out.exists() and not out.is_file():
        raise ConversionError(f"output {out}: expected a file path, found "
                              f"{'a directory' if out.is_dir() else 'a special file'}")
    if out.exists() and src.exists() and os.path.samefile(src, out):
        raise ConversionError(f"output {out}: expected a path other than the source, found the "
                              f"source itself")
    if out.exists() and not force:
        raise ConversionError(f"{out} exists; pass --force to overwrite")


def remove_stale_temp_files(out: Path) -> list[Path]:
    """Removes the temporary files a conversion to `out` leaves when it is killed (SIGKILL gives it
    no chance to clean up): `out`'s `.tmp-PID` files (the writer's, the calibration's) whose
    process no longer exists; each removal is warned about. Returns what was removed."""
    removed = []
    for path in out.parent.glob(f"{glob.escape(out.name)}.*tmp-*"):
        pid = path.name.rsplit("tmp-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # that conversion is still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # a live process of another user
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
        warnings.warn(f"removed {path}, left by a conversion that ended without cleaning up (pid {pid} is "
                      f"gone)", stacklevel=3)
    return removed


def open_source(src: Path) -> ModelSource:
    """A GGUF file or a Hugging Face checkpoint directory, read as the canonical description."""
    if src.is_dir():
        return open_hf_dir(src)
    if not src.is_file():
        raise ConversionError(f"{src}: expected a GGUF file or a checkpoint directory, "
                              f"found nothing")
    return open_gguf(src)


def _is_decoder_linear(name: str, dims: tuple[int, ...]) -> bool:
    return len(dims) == 2 and name not in EMBEDDINGS


def linear_dtype(recipe: str, bits: float | None) -> str:
    """The dtype of the decoder linear weights of a recipe (bfp: bfp<bits>; bfp-search: the
    widest of its formats, until planned)."""
    return f"bfp{int(bits)}" if recipe == "bfp" else SEARCH_FORMATS[0] if recipe == "bfp-search" else recipe


def plan_storage(model: ModelSource, recipe: str, embed_dtype: str, bits: float,
                 outlier_frac: float, clip_search: bool,
                 sensitivities: dict | None = None,
                 format_costs: dict | None = None, *,
                 outlier_cols: float = quik.DEFAULT_OUT_FRACTION, down_proj: str = "q8",
                 calibrated: bool = True) -> tuple[dict[str, Storage], dict]:
    """Every tensor's storage, decided before anything is written (the writer needs the part
    sizes up front): norms f32, embedding and head embed_dtype, decoder linear layers the
    recipe's dtype; for mix, plan_mix spends `bits` per decoder linear weight (uniform 4-bit
    fraction, or by column sensitivity when `sensitivities` maps each linear name to its scores,
    Calibration.sensitivities); for bfp-search, plan_widths picks each matrix's format within
    `bits` by `format_costs` (Calibration.format_costs; without them every cost is 0, which only
    checks that the budget can be met); for quik, round(outlier_cols x K) fp16 columns per matrix
    and ffn_down as `down_proj` (q8 or quik), by GPTQ when `calibrated`. Also returns the mixrt.recipe.* metadata entries (embed_dtype only where it is not
    implied by an f16/f32 recipe, so that those files stay as they were)."""
    linear = {name: tensor.dims for name, tensor in model.tensors
              if _is_decoder_linear(name, tensor.dims)}
    storage = {name: Storage("f32" if len(tensor.dims) == 1 else
                             embed_dtype if name in EMBEDDINGS else linear_dtype(recipe, bits))
               for name, tensor in model.tensors}
    recipe_keys = {}
    if recipe not in ("f16", "f32") or embed_dtype != recipe:
        recipe_keys["mixrt.recipe.embed_dtype"] = embed_dtype
    if recipe == "mix":
        try:
            plan = plan_mix(linear.values(), bits, outlier_frac,
                            None if sensitivities is None else [sensitivities[n] for n in linear])
        except ValueError as error:
            raise ConversionError(f"mix: {error}") from error
        for name, k4, nnz in zip(linear, plan.k4, plan.nnz):
            storage[name] = Storage("mix", k4, nnz)
        recipe_keys.update({"mixrt.recipe.bits_target": float(bits),
                            "mixrt.recipe.outlier_frac": float(outlier_frac),
                            "mixrt.recipe.super_group_size": SUPER_GROUPS,
                            "mixrt.recipe.scale_code_bits": int(math.log2(SCALE_CODES)),
                            "mixrt.recipe.method": "rtn" if sensitivities is None else "gptq",
                            "mixrt.recipe.k4_allocation":
                                "uniform" if sensitivities is None else "fisher_kl_gain",
                            "mixrt.recipe.strip_selection":
                                "range" if sensitivities is None else "hessian_gain",
                            "mixrt.recipe.clip_search": int(clip_search)})
        if sensitivities is not None:
            from ..quant.gptq import RECIPE

            recipe_keys.update({f"mixrt.recipe.gptq.{key}": value for key, value in RECIPE.items()})
    if recipe == "quik":
        for name, (m, k) in linear.items():
            storage[name] = (Storage("q8") if name.endswith("ffn_down.weight") and down_proj == "q8" else
                             Storage("quik", out_cols=quik.out_column_count(k, outlier_cols)))
        recipe_keys.update({"mixrt.recipe.outlier_cols": float(outlier_cols),
                            "mixrt.recipe.out_col_selection": "calibration_max_abs",
                            "mixrt.recipe.down_proj": down_proj,
                            "mixrt.recipe.method": "gptq" if calibrated else "rtn"})
    if recipe == "bfp-search":
        costs = format_costs or {name: dict.fromkeys(SEARCH_FORMATS, 0.0) for name in linear}
        try:
            plan = plan_widths([costs[name] for name in linear],
                               [{fmt: sum(part_sizes(fmt, *dims)) for fmt in SEARCH_FORMATS}
                                for dims in linear.values()],
                               sum(math.prod(dims) for dims in linear.values()), bits)
        except ValueError as error:
            raise ConversionError(f"bfp-search: {error}") from error
        for name, fmt in zip(linear, plan.choice):
            storage[name] = Storage(fmt)
        recipe_keys.update({"mixrt.recipe.bits_target": float(bits),
                            "mixrt.recipe.search_formats": ",".join(SEARCH_FORMATS),
                            "mixrt.recipe.width_allocation": "fisher_kl",
                            "mixrt.recipe.predicted_kl": float(plan.predicted_kl),
                            "mixrt.recipe.format_counts": ",".join(
                                f"{fmt}:{plan.choice.count(fmt)}" for fmt in SEARCH_FORMATS)})
    elif linear_dtype(recipe, bits) in BLOCK_FORMATS:
        fmt = BLOCK_FORMATS[linear_dtype(recipe, bits)]
        recipe_keys.update({"mixrt.recipe.block_format": fmt.name,
                            "mixrt.recipe.element_bits": fmt.bits})
    if recipe not in ("f16", "f32"):
        linear_bytes = sum(sum(part_sizes(storage[name].dtype, *dims, storage[name].k4,
                                          storage[name].nnz, storage[name].out_cols))
                           for name, dims in linear.items())
        first = storage[next(iter(linear))].dtype
        recipe_keys.update({"mixrt.recipe.group_size": BLOCK_FORMATS[first].block if first in BLOCK_FORMATS else GROUP,
                            "mixrt.recipe.linear_bits":
                                8 * linear_bytes / sum(math.prod(d) for d in linear.values())})
    return storage, recipe_keys


def _stored(name: str, storage: Storage, weight: np.ndarray, clip_search: bool,
            calibration: Calibration | None = None):
    """What write_tensor takes for one tensor: the array itself (f32/f16, checked by the writer)
    or its packed parts (mix: GPTQ with the layer's Hessian when calibrated)."""
    if storage.dtype in ("f32", "f16"):
        return weight
    if not np.isfinite(weight).all():
        raise ConversionError(f"tensor {name}: values expected finite, found NaN or infinity")
    if storage.dtype == "mix" and calibration is not None and calibration.parts is not None:
        return calibration.parts.pop(name)
    if storage.dtype == "mix" and calibration is not None:
        from ..quant.gptq import quantize_mix_gptq

        return pack_mix(quantize_mix_gptq(weight, calibration.hessian(name), storage.k4, storage.nnz))
    if storage.dtype == "mix":
        return pack_mix(quantize_mix_rtn(weight, storage.k4, storage.nnz, clip_search))
    if storage.dtype == "quik":
        if calibration is None:  # no fp16 columns (convert refuses any without calibration)
            return quik.pack(quik.quantize_rtn(weight, np.arange(weight.shape[1], dtype=np.uint32), 0))
        perm = quik.column_order(calibration.col_max(name), weight.shape[1], storage.out_cols)
        return quik.pack(quik.quantize_gptq(weight, calibration.hessian(name), perm, storage.out_cols))
    if storage.dtype in BLOCK_FORMATS:
        def quantize(rows):
            return blockfp.quantize(rows, BLOCK_FORMATS[storage.dtype], name)
    else:
        quantize = quantize_q8 if storage.dtype == "q8" else quantize_q4
    chunks = [quantize(weight[row:row + QUANTIZE_ROWS])
              for row in range(0, weight.shape[0], QUANTIZE_ROWS)]
    return [np.concatenate(parts) for parts in zip(*chunks)]  # every part is row-major [M, ...]


CALIB_METHODS = ("auto", "runtime", "sequential")
# The runtime method holds every layer's Hessians (float64) at once; above this many bytes "auto"
# picks the sequential method, whose memory is the calibration activations plus one layer.
RUNTIME_HESSIAN_LIMIT = 4 << 30


def runtime_hessian_bytes(hparams) -> int:
    """Bytes of the Hessians the runtime method keeps: per layer one matrix per input site
    (attention input, attention output input, FFN input, FFN down input), float64."""
    q_width = hparams.n_heads * hparams.head_dim
    widths = (hparams.hidden_size, q_width, hparams.hidden_size, hparams.ffn_size)
    return 8 * hparams.n_layers * sum(w * w for w in widths)


@dataclasses.dataclass
class Calibration:
    """What calibration measured, by one of two methods:

    * runtime: the model itself (an f16 conversion of the source, run by the runtime) over the
      calibration text, capturing the Hessians (mean x x^T) of every linear layer's inputs;
      each weight is quantized by GPTQ while it is written.
    * sequential: the decoder run layer by layer in numpy (quant.calibration.LayerStack) on the
      outputs of the layers before it *as quantized*; GPTQ runs during that pass (after the
      plan), so `parts` holds every linear weight's packed parts until it is written.
    """

    method: str
    n_tokens: int
    seconds: float
    hessians: dict | None = None  # runtime: (layer, site) -> Hessian
    windows: list | None = None  # calibration windows (token ids)
    parts: dict | None = None  # sequential: name -> packed mix parts, filled by quantize_all
    fisher_tokens: int = 0  # tokens of the sensitivities' Fisher measurement

    def hessian(self, name: str) -> np.ndarray:
        from ..quant.calibration import tensor_site

        return self.hessians[tensor_site(name)]

    def col_max(self, name: str) -> np.ndarray:
        """max |x| of each input column of the named layer over the calibration tokens."""
        from ..quant.calibration import tensor_site

        return self.hessians.col_max[tensor_site(name)]

    def sensitivities(self, model: ModelSource, progress: bool = False) -> dict:
        """Per decoder linear weight, the KL divergence that each column saves at 4 bits
        (quant.gptq.kl_gains), the planner's input: the Fisher diagonal of every linear layer's
        outputs measured by backpropagation (quant.fisher) over about FISHER_TOKENS tokens of
        the calibration windows, with the runtime's Hessians or, for the sequential method, those
        of the unquantized numpy layer stack over the same windows."""
        from ..quant.gptq import kl_gains, model_sensitivities

        linear = [name for name, tensor in model.tensors if _is_decoder_linear(name, tensor.dims)]
        windows, fisher = self._output_fisher(model, progress)
        if self.method == "runtime":
            tensors = dict(model.tensors)
            return {name: kl_gains(tensors[name].load(), self.hessian(name), fisher[name])
                    for name in linear}
        return model_sensitivities(_stack_hparams(model), _loader(model), windows,
                                   {name: fisher[name] for name in linear})

    def _output_fisher(self, model: ModelSource, progress: bool) -> tuple[list, dict]:
        """(the windows used, name -> the Fisher diagonal of that linear layer's outputs over
        about FISHER_TOKENS tokens of the calibration windows)."""
        from ..quant.fisher import output_fisher

        step = max(1, len(self.windows) * len(self.windows[0]) // FISHER_TOKENS)
        windows = self.windows[::step][:max(1, FISHER_TOKENS // len(self.windows[0]))]
        fisher = output_fisher(_stack_hparams(model), _loader(model), windows, progress=progress)
        self.fisher_tokens = sum(len(window) for window in windows)
        return windows, fisher

    def format_costs(self, model: ModelSource, formats: tuple, progress: bool = False) -> dict:
        """Per decoder linear weight, {format: the KL divergence that storing it in that block
        format costs} (quant.gptq.predicted_kl: the rounding error with the runtime's Hessian and
        the Fisher diagonal of the layer's outputs), the bfp-search planner's input. Needs the
        runtime method's Hessians."""
        from ..quant.gptq import predicted_kl

        _, fisher = self._output_fisher(model, progress)
        costs = {}
        for name, tensor in model.tensors:
            if _is_decoder_linear(name, tensor.dims):
                w = np.asarray(tensor.load(), np.float32)
                h = self.hessian(name)
                costs[name] = {fmt: predicted_kl(blockfp.decode(*blockfp.encode(w, BLOCK_FORMATS[fmt], name),
                                                                BLOCK_FORMATS[fmt], w.shape[1]) - w, h, fisher[name])
                               for fmt in formats}
        return costs

    def quantize_all(self, model: ModelSource, storage: dict, progress: bool) -> None:
        """sequential: GPTQ of every mix weight in one layer-by-layer pass, packed into parts."""
        from ..quant.gptq import calibrated_mix

        plan = {name: (s.k4, s.nnz) for name, s in storage.items() if s.dtype == "mix"}
        self.parts = calibrated_mix(_stack_hparams(model), _loader(model), self.windows, plan,
                                    progress=progress, pack=True)


# Calibration tokens over which the planner's sensitivities are measured (Calibration.sensitivities:
# the Fisher diagonal by backpropagation through the numpy decoder, about three forward passes).
FISHER_TOKENS = 2048


def _stack_hparams(model: ModelSource) -> dict:
    return dict(model.hparams.metadata())


def _loader(model: ModelSource):
    tensors = dict(model.tensors)
    return lambda name: np.asarray(tensors[name].load(), np.float32)


def calibrate(src: Path, out: Path, calib, n_tokens: int, ctx: int, method: str,
              hparams, progress: bool) -> Calibration:
    """Converts src to a temporary f16 file beside out (the runtime's model and tokenizer), takes
    n_tokens of calibration windows of ctx tokens (no BOS) from the calib text, or, for calib
    SELF_CALIB, from text the model writes itself (sampled from a temporary q8 file: three times
    the f16 decode speed), and for the runtime method runs the model over them collecting the
    Hessians of every linear layer's inputs; removes the temporary files. method "auto" resolves
    by runtime_hessian_bytes."""
    import mixrt

    from ..quant.calibration import calibration_windows, collect_hessians, self_generated_windows

    if method not in CALIB_METHODS:
        raise ConversionError(f"calib_method: expected one of {', '.join(CALIB_METHODS)}, "
                              f"found {method!r}")
    if method == "auto":
        method = "runtime" if runtime_hessian_bytes(hparams) <= RUNTIME_HESSIAN_LIMIT else "sequential"
    start = time.perf_counter()
    temp = out.with_name(f"{out.name}.calib-f16.tmp-{os.getpid()}")
    sampler = out.with_name(f"{out.name}.calib-q8.tmp-{os.getpid()}")
    try:
        convert(src, temp, "f16", progress=False)
        if calib == SELF_CALIB:
            convert(src, sampler, "q8", progress=False)
            windows = self_generated_windows(mixrt.load(sampler, n_ctx=ctx, backend="cpu"), n_tokens, ctx,
                                             progress=progress)
        else:
            text = Path(calib).read_text(encoding="utf-8")
            tokens = mixrt.load(temp, n_ctx=ctx, backend="cpu").tokenize(text, add_bos=False, special=False)
            windows = calibration_windows(tokens, n_tokens, ctx)
        if method == "runtime":
            hessians = collect_hessians(temp, windows=windows, ctx=ctx, progress=progress)
            return Calibration(method, hessians.n_tokens, time.perf_counter() - start,
                               hessians=hessians, windows=windows)
    finally:
        temp.unlink(missing_ok=True)
        sampler.unlink(missing_ok=True)
    return Calibration(method, sum(len(w) for w in windows), time.perf_counter() - start,
                       windows=windows)


def _file_metadata(model: ModelSource, recipe: str) -> dict:
    return {"general.architecture": "llama",
            "general.name": model.name,
            "mixrt.converter_version": __version__,
            "mixrt.recipe": recipe,
            "mixrt.source": model.source,
            **model.hparams.metadata(),
            **model.tokenizer}


def convert(src: str | os.PathLike, out: str | os.PathLike, recipe: str = "f16",
            bits: float | None = None, embed_dtype: str | None = None,
            calib: str | os.PathLike | None = SELF_CALIB, progress: bool = True, *,
            outlier_frac: float = DEFAULT_OUTLIER_FRAC, clip_search: bool = True,
            calib_tokens: int = DEFAULT_CALIB_TOKENS, calib_method: str = "auto",
            outlier_cols: float | None = None, down_proj: str | None = None,
            dtype: str | None = None, force: bool = False) -> dict:
    """Writes `out` from `src` with the decoder linear weights stored by `recipe` (f16, f32, q8,
    q4, mix, bfp (block floating point with `bits` element bits: 8, 6, 5, 4 or 3, default 6),
    bfp-search (bfp6..bfp3 per matrix within `bits` per weight, default 5.5, by the KL each costs on
    the calibration text: Calibration.format_costs), mxint8, mxfp4 or quik (QUIK: `outlier_cols`
    of each layer's input columns, those with the largest max|x| on the calibration text, kept
    fp16, the rest 4-bit per row by GPTQ; ffn_down `down_proj`, q8 or quik; defaults 0.0625 and q8,
    and only for quik); `dtype` is its old name), embedding and head in embed_dtype (default: the recipe
    for f16/f32, else q8 like llama.cpp's quantized files; q4 makes a SmolLM2 mix file 18% smaller
    and decode 21% faster for +7.5% perplexity on the calibrated 2.9-bit mix, measured) and norms in f32. mix: `bits` per decoder linear weight (default 2.9,
    every stored byte counted), `outlier_frac` of the weights as fp16 outliers, 2-bit clipping
    search unless clip_search is False, calibrated quantization on `calib`: the Hessians of every
    linear layer's inputs over `calib_tokens` tokens of a text file, or (SELF_CALIB, the default)
    of text the model writes itself, decide where the 4-bit strips go (across matrices by the KL
    divergence each strip saves, from the Fisher diagonal of every layer's outputs measured by
    backpropagation: Calibration.sensitivities) and drive GPTQ error feedback; calib None quantizes to nearest (much worse:
    RTN_WARNING is issued); `calib_method`
    (Calibration): "runtime", "sequential", or "auto" = runtime unless its Hessians would exceed
    RUNTIME_HESSIAN_LIMIT bytes (models beyond ~1B parameters).

    Before any work, numeric parameters outside NUMERIC_RANGES are refused, and check_output
    refuses an `out` that cannot be written (a missing directory, a directory, the source
    itself), and one that exists unless `force` is True (the CLI's --force).

    Returns a summary: tensors, parameters, bytes (file size), seconds, recipe, linear_bits (the
    decoder linear average bits per weight; None for f16/f32) and file_bits (8 bytes /
    parameters). On any failure no output file is left (an existing `out` is untouched)."""
    if dtype is not None:
        if recipe not in ("f16", dtype):
            raise ConversionError(f"dtype: an alias of recipe, expected the same value, "
                                  f"found recipe {recipe!r} and dtype {dtype!r}")
        recipe = dtype
    if recipe not in RECIPES:
        raise ConversionError(f"recipe: expected one of {', '.join(RECIPES)}, found {recipe!r}")
    embed_dtype = embed_dtype or (recipe if recipe in ("f16", "f32") else "q8")
    if embed_dtype not in EMBED_DTYPES:
        raise ConversionError(f"embed_dtype: expected one of {', '.join(EMBED_DTYPES)}, "
                              f"found {embed_dtype!r}")
    if recipe not in ("mix", "bfp", "bfp-search") and bits is not None:
        raise ConversionError(f"bits: expected only with the mix, bfp and bfp-search recipes, found {bits} "
                              f"for {recipe}")
    if recipe == "bfp":
        bits = DEFAULT_BFP_BITS if bits is None else bits
        if bits not in BFP_BITS:
            raise ConversionError(f"bits: the bfp recipe expected one of "
                                  f"{', '.join(map(str, BFP_BITS))}, found {bits:g}")
    for name, value in (("bits", bits), ("outlier_frac", outlier_frac),
                        ("calib_tokens", calib_tokens), ("outlier_cols", outlier_cols)):
        problem = None if value is None else numeric_problem(name, value)
        if problem is not None:
            raise ConversionError(f"{name}: {problem}")
    if calib not in (None, SELF_CALIB) and recipe not in CALIBRATED_RECIPES:
        raise ConversionError(f"calib: expected only with the {', '.join(CALIBRATED_RECIPES)} recipes, "
                              f"found {recipe}")
    for name, value in (("outlier_cols", outlier_cols), ("down_proj", down_proj)):
        if value is not None and recipe != "quik":
            raise ConversionError(f"{name}: expected only with the quik recipe, found {value} for {recipe}")
    outlier_cols = quik.DEFAULT_OUT_FRACTION if outlier_cols is None else outlier_cols
    down_proj = "q8" if down_proj is None else down_proj
    if down_proj not in DOWN_PROJ_DTYPES:
        raise ConversionError(f"down_proj: expected one of {', '.join(DOWN_PROJ_DTYPES)}, found {down_proj!r}")
    if recipe == "quik" and calib is None and outlier_cols > 0:
        raise ConversionError("calib: the quik recipe picks its fp16 columns by their activations on "
                              "calibration text; give --calib FILE, leave the default (the model's own "
                              "text) or set --outlier-cols 0")
    if recipe == "bfp-search":
        bits = DEFAULT_SEARCH_BITS if bits is None else bits
        if calib is None:
            raise ConversionError("calib: the bfp-search recipe measures each format's cost on calibration "
                                  "text; give --calib FILE or leave the default (the model's own text)")
    if recipe not in CALIBRATED_RECIPES:
        calib = None
    elif calib is None:
        if recipe == "mix":
            warnings.warn(RTN_WARNING, stacklevel=2)
    elif calib != SELF_CALIB and not Path(calib).is_file():
        raise ConversionError(f"calib {calib}: expected a text file or '{SELF_CALIB}', found nothing")
    check_output(Path(src), Path(out), force)
    remove_stale_temp_files(Path(out))
    start = time.perf_counter()
    model = open_source(Path(src))
    parameters = sum(math.prod(tensor.dims) for _, tensor in model.tensors)
    calibration = sensitivities = format_costs = None
    if recipe in ("bfp-search", "quik") and calib is not None and (calib_method == "sequential" or (
            calib_method == "auto" and runtime_hessian_bytes(model.hparams) > RUNTIME_HESSIAN_LIMIT)):
        raise ConversionError(f"{recipe}: needs the runtime calibration method, whose Hessians of every "
                              f"layer must fit in memory (models up to ~1B parameters)")
    if calib is not None:
        # A budget the plan cannot meet is refused now, not after calibrating.
        plan_storage(model, recipe, embed_dtype, DEFAULT_BITS if bits is None else bits, outlier_frac,
                     clip_search)
        ctx = min(DEFAULT_CALIB_CTX, model.hparams.context_length)
        calibration = calibrate(Path(src), Path(out), calib, calib_tokens, ctx,
                                calib_method, model.hparams, progress)
        if recipe == "mix":
            sensitivities = calibration.sensitivities(model, progress)
        elif recipe == "bfp-search":
            format_costs = calibration.format_costs(model, SEARCH_FORMATS, progress)
    storage, recipe_keys = plan_storage(model, recipe, embed_dtype,
                                        DEFAULT_BITS if bits is None else bits, outlier_frac,
                                        clip_search, sensitivities, format_costs,
                                        outlier_cols=outlier_cols, down_proj=down_proj,
                                        calibrated=calibration is not None)
    if calibration is not None:
        recipe_keys.update({"mixrt.recipe.calib_file": SELF_CALIB if calib == SELF_CALIB else Path(calib).name,
                            "mixrt.recipe.calib_tokens": int(calibration.n_tokens),
                            "mixrt.recipe.fisher_tokens": int(calibration.fisher_tokens),
                            "mixrt.recipe.calib_method": calibration.method})
        if calibration.method == "sequential" and recipe == "mix":
            calibration.quantize_all(model, storage, progress)
    with MixrtWriter(out) as writer:
        try:
            writer.add_metadata({**_file_metadata(model, recipe), **recipe_keys})
            for name, tensor in model.tensors:
                writer.declare_tensor(name, storage[name].dtype, tensor.dims, storage[name].k4,
                                      storage[name].nnz, storage[name].out_cols)
        except FormatError as error:  # a value of the source the format cannot hold
            raise ConversionError(f"{src}: {error}") from error
        with tqdm(total=parameters, unit="param", unit_scale=True, desc=Path(out).name,
                  disable=not progress) as bar:
            for name, tensor in model.tensors:
                with naming(tensor.file or src):  # refusals of its values name the file it is in
                    try:
                        writer.write_tensor(name, _stored(name, storage[name], tensor.load(),
                                                          clip_search, calibration))
                    except FormatError as error:
                        raise ConversionError(str(error)) from error
                bar.update(math.prod(tensor.dims))
    size = os.path.getsize(out)
    return {"tensors": len(model.tensors), "parameters": parameters, "bytes": size,
            "seconds": time.perf_counter() - start, "recipe": recipe,
            "linear_bits": recipe_keys.get("mixrt.recipe.linear_bits"),
            "file_bits": 8 * size / parameters}
