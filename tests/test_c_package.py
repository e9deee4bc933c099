# test_c_package.py: the C package that a plain CMake build installs (no Python in the build):
# builds libmixrt, `cmake --install`s it into a temporary prefix, then builds cpp/apps/mixrt_example.c
# against that prefix twice, through find_package(mixrt) (tests/c_consumer) and through
# `pkg-config --cflags --libs mixrt`, and runs both on a model and on a bad file.
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mixrt

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "cpp" / "apps" / "mixrt_example.c"
MAJOR, MINOR, _ = mixrt.__version__.split(".")
SONAME = f"libmixrt.so.{MAJOR}.{MINOR}"

pytestmark = pytest.mark.slow  # the CMake build of libmixrt: 7-8 s of the module's 9 s on 2 idle cores


def tool(name: str) -> str:
    """`name` from this interpreter's environment (the test extra installs cmake there) or PATH."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not found:
        pytest.fail(f"{name} is not installed (pip install '.[test]' brings cmake; binutils brings readelf)")
    return found


def sh(*cmd, **kwargs) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}"
    return r


def dynamic_section(elf: Path) -> str:
    return sh(tool("readelf"), "-d", elf).stdout


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    """The library built with plain CMake (CPU only, Release) and installed into a fresh prefix."""
    cmake = tool("cmake")
    tmp = tmp_path_factory.mktemp("c_package")
    build, prefix = tmp / "build", tmp / "prefix"
    sh(cmake, "-S", REPO, "-B", build, "-DMIXRT_CUDA=OFF", "-DCMAKE_BUILD_TYPE=Release")
    sh(cmake, "--build", build, "--target", "mixrt", "--parallel", "2")
    sh(cmake, "--install", build, "--prefix", prefix)
    return prefix


def configure_cmake_consumer(prefix: Path, build: Path, required_version: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("cmake"), "-S", str(REPO / "tests" / "c_consumer"), "-B", str(build),
                           f"-DCMAKE_PREFIX_PATH={prefix}", f"-DMIXRT_REQUIRED_VERSION={required_version}",
                           f"-DMIXRT_EXAMPLE_SOURCE={EXAMPLE}", "-DCMAKE_BUILD_TYPE=Release"],
                          capture_output=True, text=True)


def build_with_cmake(prefix: Path, out: Path) -> Path:
    configured = configure_cmake_consumer(prefix, out, f"{MAJOR}.{MINOR}")
    assert configured.returncode == 0, configured.stdout + configured.stderr
    assert f"found mixrt {mixrt.__version__} in {prefix / 'lib' / 'cmake' / 'mixrt'}" in configured.stdout
    sh(tool("cmake"), "--build", out)
    return out / "mixrt_example"


def build_with_pkg_config(prefix: Path, out: Path) -> Path:
    pkg_config = shutil.which("pkg-config")
    if not pkg_config:
        pytest.skip("pkg-config is not installed (Debian: apt-get install pkg-config)")
    env = {**os.environ, "PKG_CONFIG_PATH": str(prefix / "lib" / "pkgconfig")}
    assert sh(pkg_config, "--modversion", "mixrt", env=env).stdout.strip() == mixrt.__version__
    flags = sh(pkg_config, "--cflags", "--libs", "mixrt", env=env).stdout.split()
    libdir = sh(pkg_config, "--variable=libdir", "mixrt", env=env).stdout.strip()
    assert Path(libdir).resolve() == (prefix / "lib").resolve()
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to build the C example"
    exe = out / "mixrt_example"
    out.mkdir()
    sh(cc, "-std=c99", "-Wall", "-Wextra", "-Werror", EXAMPLE, *flags, f"-Wl,-rpath,{libdir}", "-o", exe)
    return exe


@pytest.fixture(scope="module", params=["find_package", "pkg-config"])
def consumer(request, prefix, tmp_path_factory) -> Path:
    """mixrt_example.c built against the installed prefix, as a CMake or a pkg-config user does."""
    out = tmp_path_factory.mktemp("consumer") / request.param
    build = build_with_cmake if request.param == "find_package" else build_with_pkg_config
    return build(prefix, out)


def test_install_layout(prefix):
    # The library, its header and the package files; the C example is not installed.
    installed = {str(p.relative_to(prefix)) for p in prefix.rglob("*") if not p.is_dir()}
    assert installed == {
        "include/mixrt/mixrt.h",
        "lib/libmixrt.so", f"lib/{SONAME}", f"lib/libmixrt.so.{mixrt.__version__}",
        "lib/cmake/mixrt/mixrtConfig.cmake", "lib/cmake/mixrt/mixrtConfigVersion.cmake",
        "lib/cmake/mixrt/mixrtTargets.cmake", "lib/cmake/mixrt/mixrtTargets-release.cmake",
        "lib/pkgconfig/mixrt.pc",
    }
    lib = prefix / "lib"
    assert (prefix / "include/mixrt/mixrt.h").read_bytes() == (REPO / "cpp/include/mixrt/mixrt.h").read_bytes()
    assert os.readlink(lib / "libmixrt.so") == SONAME
    assert os.readlink(lib / SONAME) == f"libmixrt.so.{mixrt.__version__}"
    assert f"Library soname: [{SONAME}]" in dynamic_section(lib / "libmixrt.so")
    assert f"Version: {mixrt.__version__}\n" in (lib / "pkgconfig" / "mixrt.pc").read_text()


def test_find_package_refuses_another_minor_version(prefix, tmp_path):
    next_minor = f"{MAJOR}.{int(MINOR) + 1}"
    r = configure_cmake_consumer(prefix, tmp_path / "build", next_minor)
    assert r.returncode != 0
    message = " ".join(r.stderr.split())  # CMake wraps its messages
    assert f'compatible with requested version "{next_minor}"' in message
    assert f"mixrtConfig.cmake, version: {mixrt.__version__}" in message


def test_consumer_generates_text(consumer, random_model):
    assert f"Shared library: [{SONAME}]" in dynamic_section(consumer)
    r = subprocess.run([str(consumer), str(random_model), "Hello world", "12"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"mixrt {mixrt.__version__}: vocab {mixrt.load(random_model).n_vocab}" in r.stderr
    assert "[12 tokens, stop reason 3]" in r.stderr  # MIXRT_STOP_MAX_TOKENS
    assert r.stdout.strip(), "no text was generated"


def test_consumer_reports_a_bad_file(consumer, tmp_path):
    bad = tmp_path / "bad.mixrt"
    bad.write_bytes(b"not a model at all" * 10)
    r = subprocess.run([str(consumer), str(bad), "Hi"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "mixrt_model_load failed (status 2)" in r.stderr and "wrong magic" in r.stderr
