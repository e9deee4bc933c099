# test_cli.py: the `mixrt` command line (run, info, perplexity with and without a KL base, bench) on
# the generated random model, run as a subprocess exactly as a user would, plus its error output for
# a bad file.
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mixrt


def mixrt_cli(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "mixrt.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_run_streams_the_same_text_as_the_api(random_model):
    r = mixrt_cli("run", random_model, "Once upon a time", "-n", 12, "--temp", 0, "-t", 2)
    expected = mixrt.load(random_model).generate("Once upon a time", max_tokens=12, temperature=0)
    assert r.stdout == expected + "\n"


def test_info_json_lists_hyperparameters_tensors_and_bits(random_model):
    info = json.loads(mixrt_cli("info", random_model, "--json").stdout)
    meta = info["metadata"]
    assert meta["general.architecture"] == "llama" and meta["llama.n_layers"] == 2
    names = {t["name"]: t for t in info["tensors"]}
    q = names["blk.0.attn_q.weight"]
    assert q["dtype"] == "f16" and q["bits_per_weight"] == 16.0
    assert names["blk.0.attn_norm.weight"]["dtype"] == "f32"
    assert info["bits_per_weight_decoder_linear"] == 16.0
    # The whole file also holds the vocabulary, so it is above 16 bits per parameter.
    params = sum(t["n_elements"] for t in info["tensors"])
    assert info["bits_per_param_file"] == 8 * info["file_bytes"] / params > 16.0
    text = mixrt_cli("info", random_model).stdout
    assert "decoder linear layers 16.000 bits per weight" in text and "blk.1.ffn_down.weight" not in text
    table = mixrt_cli("info", random_model, "--tensors").stdout
    assert re.search(r"blk\.1\.ffn_down\.weight +f16 +64x172 ", table)


def test_perplexity_json(random_model, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    out = json.loads(mixrt_cli("perplexity", random_model, text, "--ctx", 64, "--tokens", 200, "--json").stdout)
    # 200 tokens in windows of 64: 64 + 64 + 64 + 8, each scoring all but its first token.
    assert out["tokens_scored"] == 63 * 3 + 7 and out["ctx"] == 64
    assert out["ppl"] > 1.0
    api = mixrt.load(random_model).perplexity(text.read_text(), ctx=64, max_tokens=200)
    assert abs(api["ppl"] - out["ppl"]) <= 1e-9 * api["ppl"]


def test_perplexity_against_a_base_model(random_model, tmp_path):
    # KL(base || model) per scored position, its mean and 99th percentile, the share of positions with
    # the same top token and base's perplexity, checked against float64 numpy on the same logits: a
    # q4 conversion of the random model against the model itself (f16).
    from mixrt.convert import convert

    quantized = tmp_path / "q4.mixrt"
    convert(Path(random_model).parent / "hf", quantized, dtype="q4", progress=False)
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    out = json.loads(mixrt_cli("perplexity", quantized, text, "--ctx", 64, "--tokens", 200, "--kl-base",
                               random_model, "--json").stdout)
    model, base = mixrt.load(quantized), mixrt.load(random_model)
    tokens = model.tokenize(text.read_text(), add_bos=False, special=False)[:200]
    kl, same, base_nll = [], 0, 0.0
    for start in range(0, len(tokens), 64):
        window = tokens[start:start + 64]
        p = model.eval_logits(window)[:-1].astype(np.float64)
        q = base.eval_logits(window)[:-1].astype(np.float64)
        log_p = p - p.max(1, keepdims=True) - np.log(np.exp(p - p.max(1, keepdims=True)).sum(1, keepdims=True))
        log_q = q - q.max(1, keepdims=True) - np.log(np.exp(q - q.max(1, keepdims=True)).sum(1, keepdims=True))
        kl.extend((np.exp(log_q) * (log_q - log_p)).sum(1))
        same += int((p.argmax(1) == q.argmax(1)).sum())
        base_nll -= log_q[np.arange(len(window) - 1), window[1:]].sum()
    assert 0 < out["kl_mean"] == pytest.approx(np.mean(kl), rel=1e-4)
    assert out["kl_p99"] == pytest.approx(np.percentile(kl, 99), rel=1e-4)
    assert out["top1_agreement"] == same / out["tokens_scored"]
    assert out["ppl_base"] == pytest.approx(np.exp(base_nll / out["tokens_scored"]), rel=1e-5)
    same_model = mixrt.load(random_model).perplexity(text.read_text(), ctx=64, max_tokens=200, base=base)
    assert same_model["kl_mean"] == 0.0 and same_model["top1_agreement"] == 1.0
    assert same_model["ppl_base"] == same_model["ppl"]


def test_bench_json(random_model):
    out = json.loads(mixrt_cli("bench", random_model, "-p", 16, "-n", 8, "-r", 2, "-t", 2, "--json").stdout)
    assert out["decode_tokens_per_s"] > 0 and out["prompt_tokens_per_s"] > 0
    assert out["decode"]["min"] <= out["decode_tokens_per_s"] <= out["decode"]["max"]
    assert out["read_bandwidth_GBps"] > 0 and out["threads"] == 2
    # Every matrix but the embedding is read once per token, plus the norms and one embedding row.
    info = json.loads(mixrt_cli("info", random_model, "--json").stdout)
    assert out["weight_bytes_per_token"] < info["tensor_bytes"]
    assert abs(out["decode_GBps"] - out["weight_bytes_per_token"] * out["decode_tokens_per_s"] / 1e9) < 1e-9
    skipped = json.loads(mixrt_cli("bench", random_model, "-p", 0, "-n", 4, "-r", 1, "--json").stdout)
    assert skipped["prompt_tokens_per_s"] is None and skipped["decode_tokens_per_s"] > 0


def test_bench_gemv_times_every_matrix_shape(random_model):
    out = json.loads(mixrt_cli("bench", random_model, "--gemv", "-r", 2, "--json").stdout)
    matrices = {r["matrix"] for r in out["gemv"]}
    assert {"attn_q.weight", "ffn_down.weight", "output.weight"} <= matrices
    assert all(r["GBps"] > 0 and r["count"] >= 1 for r in out["gemv"])


def test_bad_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.mixrt"
    bad.write_bytes(b"\0" * 200)
    r = mixrt_cli("info", bad, check=False)
    assert r.returncode == 1
    assert r.stderr.startswith("mixrt: error: ") and "wrong magic" in r.stderr
    assert "Traceback" not in r.stderr


def test_prompt_from_stdin_or_a_file_equals_the_argument(random_model, tmp_path):
    args = ("run", random_model, "-n", 8, "--temp", 0, "-t", 1)
    direct = mixrt_cli(*args[:2], "Once upon a time", *args[2:]).stdout
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("Once upon a time")
    assert mixrt_cli(*args, "-f", prompt_file).stdout == direct
    r = subprocess.run([sys.executable, "-m", "mixrt", *map(str, args[:2]), "-", *map(str, args[2:])],
                       input="Once upon a time", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == direct
    both = mixrt_cli(*args[:2], "x", *args[2:], "-f", prompt_file, check=False)
    assert both.returncode == 1 and "not both" in both.stderr


def test_verbose_reports_speed_and_finish_reason(random_model):
    r = mixrt_cli("run", random_model, "Once upon a time", "-n", -1, "--temp", 0, "-c", 40, "-v")
    assert re.search(r"\[prompt \d+ tokens in [\d.]+ s \([\d.]+ tokens/s\), generated \d+ tokens in [\d.]+ s "
                     r"\([\d.]+ tokens/s\), finish: (stop|length)\]", r.stderr), r.stderr
    # -n -1 with a 40-token context: the prompt plus the answer fill it, unless EOS came first.
    generated = int(re.search(r"generated (\d+) tokens", r.stderr).group(1))
    prompt = int(re.search(r"prompt (\d+) tokens", r.stderr).group(1))
    assert prompt + generated == 40 or "finish: stop" in r.stderr


def test_piping_into_head_is_quiet(random_model):
    cmd = f"{sys.executable} -m mixrt run {random_model} 'Once upon a time' -n 200 --temp 0 | head -c 1"
    # errors="replace": the one byte kept may be the start of a multibyte character.
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, errors="replace", timeout=120)
    assert r.stderr == ""
    info = f"{sys.executable} -m mixrt info {random_model} --tensors --metadata | head -n 1"
    assert subprocess.run(["bash", "-c", info], capture_output=True, text=True, timeout=120).stderr == ""


def test_every_command_has_version_and_help_for_every_option():
    from mixrt.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"run", "chat", "info", "perplexity", "bench", "serve"}
    for name, sub in [("mixrt", parser), *commands.items()]:
        for action in sub._actions:
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help text"
    for command in ("", "run", "chat", "info", "perplexity", "bench"):
        r = mixrt_cli(*command.split(), "--version")
        assert r.stdout.strip() == f"mixrt {mixrt.__version__}"


def test_perplexity_shows_progress(random_model, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    r = mixrt_cli("perplexity", random_model, text, "--ctx", 64)
    assert "perplexity:" in r.stderr and "tok" in r.stderr and r.stdout.startswith("ppl ")
    assert mixrt_cli("perplexity", random_model, text, "--ctx", 64, "--no-progress").stderr == ""


def test_sources_are_sent_to_the_converter_and_bad_options_named(random_model, tmp_path):
    gguf_file = tmp_path / "model.gguf"
    gguf_file.write_bytes(b"GGUF" + bytes(60))
    r = mixrt_cli("run", gguf_file, "Hi", check=False)
    assert r.returncode == 1 and r.stderr.strip() == (
        f"mixrt: error: {gguf_file} is a GGUF file, not a .mixrt file: convert it first: "
        f"mixrt-convert {gguf_file} -o model.mixrt")
    r = mixrt_cli("run", random_model, "Hi", "-n", "-5", check=False)
    assert r.returncode == 2 and "argument -n: expected an integer >= 0 or -1, found -5" in r.stderr
    r = mixrt_cli("run", random_model, "Hi", "--top-p", "2", check=False)
    assert r.returncode == 1 and "top_p: expected a finite number > 0.0 and <= 1.0, found 2.0" in r.stderr
    assert "Traceback" not in r.stderr
