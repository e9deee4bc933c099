# test_quant_table.py: tools/quant_table.py end to end on the tiny random checkpoint: every recipe
# converted and measured, perplexity ratios and the KL divergence / top-1 agreement against the f16
# file in the table and the JSON lines; block-format recipes and their activations suffix.
import json
import subprocess
import sys
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parent.parent


def test_quant_table_reports_ratios_and_kl_against_f16(random_model, tmp_path):
    hf = Path(random_model).parent / "hf"
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 30)
    table = tmp_path / "table.jsonl"
    r = subprocess.run([sys.executable, str(REPO / "tools" / "quant_table.py"), str(hf), "--text", str(text),
                        "--recipes", "q4", "f16", "q4:head-q4", "bfp:6", "bfp:6:a6", "--tokens", "256", "--ctx", "64", "--out-dir", str(tmp_path / "out"),
                        "--json", str(table)], capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    assert [row["recipe"] for row in rows] == ["f16", "q4", "q4:head-q4", "bfp:6", "bfp:6:a6"]  # f16 first
    f16, q4, q4_head, w6, w6a6 = rows
    # bfp:6 is bfp6 weights (6.5 bits, more with the padding of K to 32); :a6 runs the same file
    # with bfp6 activations
    assert w6["linear_bits"] == w6a6["linear_bits"] and 6.5 <= w6["linear_bits"] < 7
    assert w6a6[f"ppl:{text.parent.name}/{text.name}"] != w6[f"ppl:{text.parent.name}/{text.name}"]
    # the same decoder layers, a q4 instead of a q8 embedding/head
    assert q4_head["linear_bits"] == q4["linear_bits"] and q4_head["file_mb"] < q4["file_mb"]
    name = f"{text.parent.name}/{text.name}"  # how the tool names a text
    assert (f16[f"kl:{name}"], f16[f"top1:{name}"]) == (0.0, 1.0)
    assert q4[f"kl:{name}"] > 0 and 0.5 < q4[f"top1:{name}"] <= 1.0
    assert q4[f"ppl:{name}"] != f16[f"ppl:{name}"]
    assert all(row["convert_s"] > 0 and row["convert_peak_mb"] > 10 for row in rows)
    assert "| KL | same top-1 |" in r.stdout


def test_plot_names_recipes_in_words():
    from conftest import tool_module

    describe = tool_module("plot_recipes").describe
    assert describe("mix:2.9") == "mix 2.9 (own text)"
    assert describe("mix:2.5:calib:head-q4") == "mix 2.5 (calibration text, q4 head)"
    assert describe("mix:2.9:rtn") == "mix 2.9 (no calibration)"
    assert describe("q4:head-q4") == "q4 q4 head"
    assert describe("bfp:6:a6") == "bfp6A6" and describe("f16:a8") == "f16A8" and describe("mxfp4") == "mxfp4"


def test_quik_recipes_map_to_their_options():
    """quik's suffixes: :cols-F and :down-quik are converter options, :t4 the token4 activations,
    and :a16 neither (the file is rewritten with its quantized tensors decoded: test below)."""
    from conftest import tool_module

    qt = tool_module("quant_table")
    cmd = qt.convert_cmd("m.gguf", Path("o.mixrt"), "quik:calib:cols-0.125:down-quik:t4", "c.txt", [])
    assert cmd[cmd.index("--recipe") + 1] == "quik" and "--bits" not in cmd
    assert cmd[cmd.index("--outlier-cols") + 1] == "0.125" and cmd[cmd.index("--down-proj") + 1] == "quik"
    assert cmd[cmd.index("--calib") + 1] == "c.txt"
    assert qt.activations("quik:calib:t4") == ["--activations", "token4"]
    assert qt.activations("quik:calib:a16") == [] and qt.activations("bfp:6:a6") == ["--activations", "bfp6"]


@pytest.mark.parametrize("recipe", ["quik", "mix"])
def test_weights_alone_decode_to_f32(tiny_hf, tmp_path, recipe):
    """:a16 rewrites the converted file with every quantized tensor as the f32 values it decodes to
    (the weights' error alone), the f16/f32 tensors as they were."""
    from conftest import tool_module
    from mixrt.convert import convert
    from mixrt.format import read_mixrt

    path = tmp_path / "q.mixrt"
    options = {"outlier_cols": 0} if recipe == "quik" else {"bits": 4.0}
    convert(tiny_hf, path, recipe, calib=None, progress=False, **options)
    before = {name: (t.dtype_name, t.dequantize()) for name, t in read_mixrt(path).tensors.items()}
    assert any(dtype == recipe for dtype, _ in before.values())
    tool_module("quant_table").decode_quantized(path)
    after = read_mixrt(path)
    for name, (dtype, values) in before.items():
        t = after.tensors[name]
        assert t.dtype_name == (dtype if dtype in ("f16", "f32") else "f32")
        assert (t.dequantize() == values).all()
    assert list(tmp_path.iterdir()) == [path]
