"""quant_table.py: converts one checkpoint with several recipes and measures each: decoder-linear
bits per weight, whole-file bits per parameter, file size, conversion time and peak memory,
perplexity on one or more texts (the protocol of ../shared/docs/BENCHMARKS.md, via
`mixrt perplexity`) with the ratio to the f16 file, and against the f16 file's next-token
distributions on the same texts (`mixrt perplexity --kl-base`, as llama.cpp's --kl-divergence):
the mean KL divergence and the share of positions with the same top token; with --decode the
decode speed (`mixrt bench`, prompt skipped). Prints a markdown table and JSON lines (also written
to --json FILE); --plot PNG draws ratio against bits beside llama.cpp's types
(tools/plot_recipes.py). The converted files go to --out-dir, replacing those of an earlier run.

    python tools/quant_table.py GGUF_OR_HF_DIR --calib CALIB.txt --text WIKI_EVAL.txt \\
        --text SHAKESPEARE.txt --recipes f16 q8 q4 mix:2.9 mix:2.9:calib mix:2.9:rtn --decode \\
        --json table.jsonl --plot models/recipes.png --peers ../shared/docs/BENCHMARKS.md

A recipe is NAME[:BITS][:calib|:rtn][:head-DTYPE][:aW][:cols-F][:down-quik][:t4|:a16]: mix:2.9
calibrates on text the model writes itself (the converter's default), mix:2.9:calib on the --calib
text, mix:2.9:rtn not at all; :head-q4 stores the embedding and output head as q4 (--embed-dtype
q4) instead of q8; :aW runs the file with every matmul input rounded to W-bit block floating point
(--activations bfpW), so bfp:6:a6 is the W6A6 of arXiv 2310.05079 and f16:a6 its activations alone.
For quik (QUIK, arXiv 2310.09259): :cols-F keeps F of the input columns fp16 (--outlier-cols F),
:down-quik stores ffn_down as quik too (--down-proj quik), :t4 runs its inputs at 4 bits per token
(--activations token4: W4A4) instead of 8 (W4A8). :a16 (any recipe) measures the weights alone
(W*A16): after its sizes are read, the converted file is rewritten with every quantized tensor decoded
to f32, so no kernel rounds its inputs (quik:calib:a16 is W4A16, mix:2.9:calib:a16 the mix's weights
without the 8-bit rounding of their inputs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_timed(cmd: list) -> tuple[float, float]:
    """Runs cmd; returns (seconds, its peak resident MB, from the kernel's accounting of that child)."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"quant_table: {' '.join(cmd)} failed:\n{stderr}")
    return seconds, usage.ru_maxrss * 1024 / 1e6  # ru_maxrss is in KiB on Linux


def activations(recipe: str) -> list:
    """The --activations option of a recipe's :aW or :t4 part ([] without one)."""
    parts = recipe.split(":")[1:]
    return ([arg for part in parts if part[:1] == "a" and part[1:].isdigit() and part != "a16"
             for arg in ("--activations", f"bfp{part[1:]}")]
            + (["--activations", "token4"] if "t4" in parts else []))


def convert_cmd(src: str, out: Path, recipe: str, calib: str | None, extra: list) -> list:
    name, *rest = recipe.split(":")
    cmd = ["mixrt-convert", src, "-o", str(out), "--force", "--recipe", name, "--quiet", *extra]
    cmd += [arg for part in rest if part.startswith("cols-") for arg in ("--outlier-cols", part[5:])]
    cmd += ["--down-proj", "quik"] if "down-quik" in rest else []
    rest = [part for part in rest if not (part[:1] == "a" and part[1:].isdigit()) and part != "t4"
            and not part.startswith("cols-") and part != "down-quik"]
    if rest and rest[0] not in ("calib", "rtn") and not rest[0].startswith("head-"):
        cmd += ["--bits", rest[0]]
    if "calib" in rest:
        if not calib:
            sys.exit("quant_table: a :calib recipe needs --calib")
        cmd += ["--calib", calib]
    if "rtn" in rest:
        cmd += ["--no-calib"]
    cmd += [arg for part in rest if part.startswith("head-") for arg in ("--embed-dtype", part[5:])]
    return cmd


def decode_quantized(path: Path) -> None:
    """Rewrites the .mixrt file at path with every quantized tensor decoded to f32 (its weights as
    stored, without the rounding of the inputs that the integer kernels do)."""
    from mixrt.devtools.decoded_copy import decoded_copy
    from mixrt.format import read_mixrt

    quantized = {t.dtype_name for t in read_mixrt(path).tensors.values()} - {"f16", "f32"}
    os.replace(decoded_copy(path, path.with_name(path.name + ".f32"), quantized), path)


def text_name(path: str) -> str:
    """A text's name in the table: its directory and file name (input.txt alone says little)."""
    return f"{Path(path).parent.name}/{Path(path).name}"


def run_json(cmd: list) -> dict:
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="GGUF file or Hugging Face directory")
    p.add_argument("--recipes", nargs="+", default=["f16", "q8", "q4", "mix:2.9"],
                   help="recipes, NAME[:BITS][:calib|:rtn][:head-DTYPE][:aW][:cols-F][:down-quik][:t4|:a16] "
                        "(default: f16 q8 q4 mix:2.9)")
    p.add_argument("--calib", help="calibration text of the :calib recipes (never an evaluated text)")
    p.add_argument("--text", action="append", required=True, help="a text to measure perplexity on "
                   "(repeatable)")
    p.add_argument("--tokens", type=int, default=16384, help="perplexity over the first N tokens (16384)")
    p.add_argument("--ctx", type=int, default=512, help="perplexity window (512)")
    p.add_argument("--threads", type=int, default=2, help="threads of perplexity and decode (2)")
    p.add_argument("--decode", action="store_true", help="also measure decode tokens/s (mixrt bench -p 0)")
    p.add_argument("--out-dir", type=Path, default=Path("models/quant_table"), help="converted files go here")
    p.add_argument("--json", type=Path, help="write the rows here as JSON lines")
    p.add_argument("--convert-arg", action="append", default=[], help="extra mixrt-convert argument")
    p.add_argument("--plot", type=Path, help="also draw ratio vs bits into this PNG (tools/plot_recipes.py, "
                   "needs matplotlib)")
    p.add_argument("--peers", type=Path, help="with --plot: markdown with llama.cpp's published table "
                   "(../shared/docs/BENCHMARKS.md)")
    args = p.parse_args()
    # f16 first: it is the reference of the ratios and of the KL divergence of the others.
    args.recipes.sort(key=lambda recipe: recipe != "f16")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    from mixrt.cli import cpu_description

    machine = f"{cpu_description()}, {args.threads} threads"
    print(f"machine: {machine}; perplexity: first {args.tokens} tokens, windows of {args.ctx}, no BOS",
          flush=True)

    rows = []
    base_file = None
    for recipe in args.recipes:
        out = args.out_dir / (recipe.replace(":", "-") + ".mixrt")
        seconds, peak = run_timed(convert_cmd(args.src, out, recipe, args.calib, args.convert_arg))
        info = run_json(["mixrt", "info", str(out), "--json"])
        if "a16" in recipe.split(":")[1:]:
            decode_quantized(out)
        row = {"recipe": recipe, "machine": machine, "linear_bits": info["bits_per_weight_decoder_linear"],
               "file_bits": info["bits_per_param_file"], "file_mb": info["file_bytes"] / 1e6,
               "convert_s": seconds, "convert_peak_mb": peak}
        if recipe == "f16":
            base_file = out
        for text in args.text:
            kl = ["--kl-base", str(base_file)] if base_file and base_file != out else []
            r = run_json(["mixrt", "perplexity", str(out), text, "--ctx", str(args.ctx), "--tokens",
                          str(args.tokens), "-t", str(args.threads), "--no-progress", "--json", *kl,
                          *activations(recipe)])
            row[f"ppl:{text_name(text)}"] = r["ppl"]
            if base_file == out:  # the base against itself
                row[f"kl:{text_name(text)}"], row[f"top1:{text_name(text)}"] = 0.0, 1.0
            elif kl:
                row[f"kl:{text_name(text)}"], row[f"top1:{text_name(text)}"] = r["kl_mean"], r["top1_agreement"]
            row["tokens_scored"] = r["tokens_scored"]
        if args.decode:
            bench = run_json(["mixrt", "bench", str(out), "-p", "0", "-n", "128", "-r", "3", "-t",
                              str(args.threads), "--json", *activations(recipe)])
            row["decode_tokens_per_s"] = bench["decode_tokens_per_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if args.plot:
        plot(rows, args.plot, args.peers)

    base = next((r for r in rows if r["recipe"] == "f16"), None)
    texts = [text_name(t) for t in args.text]
    decode = " decode tok/s |" if args.decode else ""
    kl = base_file is not None
    head = "| recipe | linear bits | file bits/param | file MB | " + " | ".join(
        f"ppl {t} | ratio" + (" | KL | same top-1" if kl else "") for t in texts) + f" |{decode} convert s | peak MB |"
    print("\n" + head + "\n" + "|---" * (head.count("|") - 1) + "|")
    for r in rows:
        cells = [r["recipe"], f"{r['linear_bits']:.3f}", f"{r['file_bits']:.2f}", f"{r['file_mb']:.1f}"]
        for t in texts:
            ppl = r[f"ppl:{t}"]
            ratio = ppl / base[f"ppl:{t}"] if base else float("nan")
            cells += [f"{ppl:.2f}", f"{ratio:.3f}"]
            if kl:
                cells += [f"{r[f'kl:{t}']:.4f}", f"{100 * r[f'top1:{t}']:.1f}%"]
        if args.decode:
            cells.append(f"{r['decode_tokens_per_s']:.1f}")
        cells += [f"{r['convert_s']:.1f}", f"{r['convert_peak_mb']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    return 0


def plot(rows: list, png: Path, peers: Path | None) -> None:
    """Draws rows (this run's JSON lines) with tools/plot_recipes.py into png."""
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "table.jsonl"
        table.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cmd = [sys.executable, str(Path(__file__).with_name("plot_recipes.py")), str(table), "-o", str(png)]
        subprocess.run(cmd + (["--peers", str(peers)] if peers else []), check=True)


if __name__ == "__main__":
    sys.exit(main())
