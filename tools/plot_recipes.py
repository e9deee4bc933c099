"""plot_recipes.py: draws perplexity ratio to f16 against whole-file bits per parameter, from the
JSON lines of tools/quant_table.py (mixrt's recipes, one series per measured text) beside
llama.cpp's types from a markdown table of published figures (../shared/docs/BENCHMARKS.md: its
"llama.cpp type | file MB | bits/param | ppl | ratio" rows), into a small PNG.

    python tools/plot_recipes.py table.jsonl --peers ../shared/docs/BENCHMARKS.md -o docs/recipes.png
Needs matplotlib (pip install '.[plot]')."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

PEER_ROW = re.compile(r"^\| ([^|]+?) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$")


def peer_rows(markdown: Path) -> list[tuple[str, float, float]]:
    """(type, bits per parameter, ratio) of each row of the llama.cpp table in markdown."""
    rows, inside = [], False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if line.startswith("| llama.cpp type |"):
            inside = True
        elif inside and (m := PEER_ROW.match(line)):
            rows.append((m[1].split(" (")[0], float(m[3]), float(m[5])))
        elif inside and not line.startswith("|"):
            break
    return rows


def describe(recipe: str) -> str:
    """quant_table's recipe names in words: mix:2.9 (own text), mix:2.9:calib, mix:2.9:rtn, a
    :head-q4 suffix, bfp:6 (bfp6) and an :aW suffix (W-bit activations: bfp:6:a6 is W6A6)."""
    name, *rest = recipe.split(":")
    head = [f"{part[5:]} head" for part in rest if part.startswith("head-")]
    acts = [f"A{part[1:]}" for part in rest if part[:1] == "a" and part[1:].isdigit()]
    if name == "bfp":
        return f"bfp{rest[0] if rest and rest[0].isdigit() else 6}" + "".join(acts)
    if name != "mix":
        return " ".join([name + "".join(acts)] + head)
    how = "calibration text" if "calib" in rest else "no calibration" if "rtn" in rest else "own text"
    bits = rest[0] if rest and rest[0] not in ("calib", "rtn") and not rest[0].startswith("head-") else ""
    return f"mix {bits} ({', '.join([how] + head)})".replace("mix  (", "mix (")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table", type=Path, help="JSON lines written by tools/quant_table.py --json")
    p.add_argument("--peers", type=Path, help="markdown with the llama.cpp table (../shared/docs/BENCHMARKS.md)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")
    p.add_argument("--title", default="SmolLM2-135M-Instruct: size vs quality", help="the chart's title")
    args = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = [json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]
    base = next(r for r in rows if r["recipe"] == "f16")
    texts = [key.split(":", 1)[1] for key in base if key.startswith("ppl:")]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for text, marker in zip(texts, "os^D"):
        xs = [r["file_bits"] for r in rows]
        ys = [r[f"ppl:{text}"] / base[f"ppl:{text}"] for r in rows]
        ax.scatter(xs, ys, marker=marker, label=f"mixrt, {text}")
        for r, x, y in zip(rows, xs, ys):
            if marker == "o":
                ax.annotate(describe(r["recipe"]), (x, y), textcoords="offset points", xytext=(5, 2), fontsize=7)
    if args.peers:
        peers = peer_rows(args.peers)
        ax.scatter([b for _, b, _ in peers], [r for _, _, r in peers], marker="x", color="gray",
                   label="llama.cpp (published, wiki)")
        for name, bits, ratio in peers:
            ax.annotate(name, (bits, ratio), textcoords="offset points", xytext=(4, -9), fontsize=6,
                        color="gray")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks([1, 1.25, 1.5, 2, 3, 5, 8])
    ax.set_xlabel("bits per parameter, whole file")
    ax.set_ylabel("perplexity / f16 perplexity (log)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
