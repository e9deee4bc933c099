# test_c_example.py: builds cpp/apps/mixrt_example.c with the system C compiler against the
# installed libmixrt and its header (exactly what an embedding app does) and runs it on models; the
# library's exports; and, through ctypes, the check of the context parameters.
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import mixrt

REPO = Path(__file__).resolve().parent.parent
PKG = Path(mixrt.__file__).resolve().parent


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to build the C example"
    libs = list(PKG.glob("libmixrt.so*")) + list(PKG.glob("libmixrt.dylib"))
    assert libs, f"libmixrt is not installed next to the Python package in {PKG}"
    header = PKG / "include" / "mixrt" / "mixrt.h"
    assert header.exists(), f"{header} is not installed"
    exe = tmp_path_factory.mktemp("c_example") / "mixrt_example"
    cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", str(REPO / "cpp" / "apps" / "mixrt_example.c"),
           f"-I{PKG / 'include'}", f"-L{PKG}", "-lmixrt", f"-Wl,-rpath,{PKG}", "-o", str(exe)]
    subprocess.run(cmd, check=True)
    return exe


def run(exe, *args):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_c_example_generates_on_the_random_model(example, random_model):
    r = run(example, random_model, "Hello world", 12)
    print(r.stderr)
    assert r.returncode == 0, r.stderr
    assert f"vocab {mixrt.load(random_model).n_vocab}" in r.stderr
    assert "[12 tokens, stop reason 3]" in r.stderr  # MIXRT_STOP_MAX_TOKENS
    assert r.stdout.strip(), "no text was generated"


def test_c_example_continues_the_real_model(example, smollm2_f16):
    r = run(example, smollm2_f16, "The capital of France is", 8)
    print(repr(r.stdout), r.stderr)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(" Paris")


def test_c_example_reports_a_bad_file(example, tmp_path):
    bad = tmp_path / "bad.mixrt"
    bad.write_bytes(b"not a model at all" * 10)
    r = run(example, bad, "Hi")
    assert r.returncode == 1
    assert "mixrt_model_load failed (status 2)" in r.stderr and "wrong magic" in r.stderr


def test_the_library_exports_the_c_api_and_nothing_else():
    """libmixrt's dynamic symbols are exactly the functions mixrt.h declares: internals (and the
    static CUDA runtime) stay hidden, so embedding apps and the tests see one interface."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    lib = next(PKG.glob("libmixrt.so*"))
    out = subprocess.run([nm, "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.strip()}
    header = (REPO / "cpp" / "include" / "mixrt" / "mixrt.h").read_text()
    declared = set(re.findall(r"MIXRT_API [^;(]*?\b(mixrt_\w+)\(", header))
    assert declared and exported == declared, (exported - declared, declared - exported)


def test_context_params_kv_type_is_checked(random_model):
    # The installed library through ctypes, as an app would call it: an unknown kv_type is refused
    # with its value named; f16 (the default) and f32 caches are made.
    import ctypes

    lib = ctypes.CDLL(str(next(iter(PKG.glob("libmixrt.so*")))))

    class ContextParams(ctypes.Structure):  # mixrt_context_params, field for field
        _fields_ = [("n_ctx", ctypes.c_int32), ("n_threads", ctypes.c_int32), ("kv_type", ctypes.c_int32),
                    ("activations", ctypes.c_int32), ("n_seq", ctypes.c_int32)]

    lib.mixrt_context_default_params.restype = ContextParams
    lib.mixrt_last_error.restype = ctypes.c_char_p
    model, ctx = ctypes.c_void_p(), ctypes.c_void_p()
    assert lib.mixrt_model_load(str(random_model).encode(), ctypes.byref(model)) == 0
    try:
        params = lib.mixrt_context_default_params()
        assert (params.n_ctx, params.n_threads, params.kv_type, params.activations, params.n_seq) == \
            (0, 0, 0, 0, 1)  # MIXRT_KV_F16, MIXRT_ACT_DEFAULT, one sequence
        for kv_type in (0, 1):
            params.kv_type = kv_type
            assert lib.mixrt_context_create(model, ctypes.byref(params), ctypes.byref(ctx)) == 0
            lib.mixrt_context_free(ctx)
        params.kv_type = 7
        assert lib.mixrt_context_create(model, ctypes.byref(params), ctypes.byref(ctx)) != 0
        assert ctx.value is None
        assert b"kv_type is 7, expected MIXRT_KV_F16 (0) or MIXRT_KV_F32 (1)" in lib.mixrt_last_error()
    finally:
        lib.mixrt_model_free(model)
