"""quant_table.py: converts one checkpoint with several recipes and measures each: decoder-linear
bits per weight, whole-file bits per parameter, file size, conversion time and peak memory, and
perplexity on one or more texts (BENCHMARKS.md protocol, via `mixrt perplexity`), with the ratio
to the f16 file. Prints a markdown table and writes JSON lines. The converted files go to
--out-dir, replacing those of an earlier run.

    python tools/quant_table.py GGUF_OR_HF_DIR --calib CALIB.txt --text WIKI_EVAL.txt \\
        --text SHAKESPEARE.txt --recipes f16 q8 q4 mix:2.9 mix:2.9:calib mix:2.5:calib mix:3.3:calib
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path


def run_timed(cmd: list) -> tuple[float, float]:
    """Runs cmd under GNU time; returns (seconds, peak resident MiB)."""
    r = subprocess.run(["/usr/bin/time", "-f", "%e %M", *cmd], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"quant_table: {' '.join(cmd)} failed:\n{r.stderr}")
    seconds, kib = r.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kib) / 1024


def convert_cmd(src: str, out: Path, recipe: str, calib: str | None, extra: list) -> list:
    name, *rest = recipe.split(":")
    cmd = ["mixrt-convert", src, "-o", str(out), "--force", "--recipe", name, "--quiet", *extra]
    if rest:
        cmd += ["--bits", rest[0]]
    if "calib" in rest:
        if not calib:
            sys.exit("quant_table: a :calib recipe needs --calib")
        cmd += ["--calib", calib]
    return cmd


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("--recipes", nargs="+", default=["f16", "q8", "q4", "mix:2.9"])
    p.add_argument("--calib")
    p.add_argument("--text", action="append", required=True)
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-dir", type=Path, default=Path("models/quant_table"))
    p.add_argument("--convert-arg", action="append", default=[], help="extra mixrt-convert argument")
    args = p.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()} {platform.processor()}, {args.threads} threads; "
          f"perplexity: first {args.tokens} tokens, windows of {args.ctx}, no BOS", flush=True)

    rows = []
    for recipe in args.recipes:
        out = args.out_dir / (recipe.replace(":", "-") + ".mixrt")
        seconds, peak = run_timed(convert_cmd(args.src, out, recipe, args.calib, args.convert_arg))
        info = json.loads(subprocess.run(["mixrt", "info", str(out), "--json"], capture_output=True,
                                         text=True, check=True).stdout)
        row = {"recipe": recipe, "linear_bits": info["bits_per_weight_decoder_linear"],
               "file_bits": info["bits_per_param_file"], "file_mb": info["file_bytes"] / 1e6,
               "convert_s": seconds, "convert_peak_mib": peak}
        for text in args.text:
            r = json.loads(subprocess.run(
                ["mixrt", "perplexity", str(out), text, "--ctx", str(args.ctx), "--tokens", str(args.tokens),
                 "-t", str(args.threads), "--json"], capture_output=True, text=True, check=True).stdout)
            row[f"ppl:{Path(text).name}"] = r["ppl"]
            row["tokens_scored"] = r["tokens_scored"]
        rows.append(row)
        print(json.dumps(row), flush=True)

    base = next((r for r in rows if r["recipe"] == "f16"), None)
    texts = [Path(t).name for t in args.text]
    head = "| recipe | linear bits | file bits/param | file MB | " + " | ".join(
        f"ppl {t} | ratio" for t in texts) + " | convert s | peak MiB |"
    print("\n" + head + "\n" + "|---" * (head.count("|") - 1) + "|")
    for r in rows:
        cells = [r["recipe"], f"{r['linear_bits']:.3f}", f"{r['file_bits']:.2f}", f"{r['file_mb']:.1f}"]
        for t in texts:
            ppl = r[f"ppl:{t}"]
            ratio = ppl / base[f"ppl:{t}"] if base else float("nan")
            cells += [f"{ppl:.2f}", f"{ratio:.3f}"]
        cells += [f"{r['convert_s']:.1f}", f"{r['convert_peak_mib']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
