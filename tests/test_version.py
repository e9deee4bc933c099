# test_version.py: the version is written once (__version__ in python/mixrt/__init__.py) and every
# place that reports it agrees: mixrt.__version__, the package metadata that pip installed and the
# C library's mixrt_version(), which CMake compiles in from its project version.
import importlib.metadata
import subprocess
import sys

import mixrt
from mixrt import _core


def test_python_metadata_and_c_versions_agree():
    assert mixrt.__version__ == importlib.metadata.version("mixrt") == _core.version()


def test_version_does_not_load_the_compiled_core():
    code = "import sys, mixrt; print(mixrt.__version__); print('mixrt._core' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split() == [mixrt.__version__, "False"]
