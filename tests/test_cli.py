# test_cli.py: the `mixrt` command line (run, info, perplexity, bench) on the generated random
# model, run as a subprocess exactly as a user would, plus its error output for a bad file.
import json
import subprocess
import sys

import mixrt


def mixrt_cli(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "mixrt.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_run_streams_the_same_text_as_the_api(random_llama2_model):
    r = mixrt_cli("run", random_llama2_model, "Once upon a time", "-n", 12, "--temp", 0, "-t", 2)
    expected = mixrt.load(random_llama2_model).generate("Once upon a time", max_tokens=12, temperature=0)
    assert r.stdout == expected + "\n"


def test_info_json_lists_hyperparameters_tensors_and_bits(random_llama2_model):
    info = json.loads(mixrt_cli("info", random_llama2_model, "--json").stdout)
    meta = info["metadata"]
    assert meta["general.architecture"] == "llama" and meta["llama.n_layers"] == 2
    names = {t["name"]: t for t in info["tensors"]}
    q = names["blk.0.attn_q.weight"]
    assert q["dtype"] == "f16" and q["bits_per_weight"] == 16.0
    assert names["blk.0.attn_norm.weight"]["dtype"] == "f32"
    assert info["bits_per_weight_decoder_linear"] == 16.0
    # The whole file also holds the 32000-token vocabulary, so it is above 16 bits per parameter.
    params = sum(t["n_elements"] for t in info["tensors"])
    assert info["bits_per_param_file"] == 8 * info["file_bytes"] / params > 16.0
    text = mixrt_cli("info", random_llama2_model).stdout
    assert "blk.1.ffn_down.weight" in text and "bits per weight (decoder linear layers): 16.000" in text


def test_perplexity_json(random_llama2_model, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    out = json.loads(mixrt_cli("perplexity", random_llama2_model, text, "--ctx", 64, "--tokens", 200, "--json").stdout)
    # 200 tokens in windows of 64: 64 + 64 + 64 + 8, each scoring all but its first token.
    assert out["tokens_scored"] == 63 * 3 + 7 and out["ctx"] == 64
    assert out["ppl"] > 1.0
    api = mixrt.load(random_llama2_model).perplexity(text.read_text(), ctx=64, max_tokens=200)
    assert abs(api["ppl"] - out["ppl"]) <= 1e-9 * api["ppl"]


def test_bench_json(random_llama2_model):
    out = json.loads(mixrt_cli("bench", random_llama2_model, "-p", 16, "-n", 8, "-r", 2, "-t", 2, "--json").stdout)
    assert out["decode_tokens_per_s"] > 0 and out["prompt_tokens_per_s"] > 0
    assert out["decode"]["min"] <= out["decode_tokens_per_s"] <= out["decode"]["max"]
    assert out["read_bandwidth_GBps"] > 0 and out["threads"] == 2
    # Every matrix but the embedding is read once per token, plus the norms and one embedding row.
    info = json.loads(mixrt_cli("info", random_llama2_model, "--json").stdout)
    assert out["weight_bytes_per_token"] < info["tensor_bytes"]
    assert abs(out["decode_GBps"] - out["weight_bytes_per_token"] * out["decode_tokens_per_s"] / 1e9) < 1e-9
    skipped = json.loads(mixrt_cli("bench", random_llama2_model, "-p", 0, "-n", 4, "-r", 1, "--json").stdout)
    assert skipped["prompt_tokens_per_s"] is None and skipped["decode_tokens_per_s"] > 0


def test_bench_gemv_times_every_matrix_shape(random_llama2_model):
    out = json.loads(mixrt_cli("bench", random_llama2_model, "--gemv", "-r", 2, "--json").stdout)
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
