"""mixrt: run Llama-family models from one .mixrt file with a native C++ core.

    import mixrt
    m = mixrt.load("model.mixrt")
    print(m.generate("The capital of France is", max_tokens=16, temperature=0))
    print(m.chat([{"role": "user", "content": "Hi!"}]))

The runtime API (load, Model, generate, ...) lives in mixrt.api and is imported on first use, so
the converter (mixrt.convert) and the format writer (mixrt.format) work on their own.
"""

# The one place of the version: CMakeLists.txt (project version, C mixrt_version(), SONAME) and
# pip (the package metadata, pyproject.toml) read this line.
__version__ = "0.1.0"
_API = ("load", "generate", "Model", "MixrtError", "Completion", "CompletionStream")
__all__ = [*_API, "__version__"]


def __getattr__(name):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'mixrt' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
