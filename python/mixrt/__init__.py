"""mixrt: run Llama-family models from one .mixrt file with a native C++ core.

    import mixrt
    m = mixrt.load("model.mixrt")
    print(m.generate("The capital of France is", max_tokens=16, temperature=0))

The runtime API (load, Model, generate, MixrtError) lives in mixrt.api and is imported on first
use, so the converter (mixrt.convert) and the format writer (mixrt.format) work on their own.
"""

# The one place of the version: CMakeLists.txt (project version, C mixrt_version(), SONAME) and
# pip (the package metadata, pyproject.toml) read this line.
__version__ = "0.1.0"
__all__ = ["load", "generate", "Model", "MixrtError", "__version__"]


def __getattr__(name):
    if name in ("load", "generate", "Model", "MixrtError"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'mixrt' has no attribute {name!r}")
