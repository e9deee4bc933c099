"""The Python API of mixrt: load(), Model and generate(), a thin layer over the C API binding
mixrt._core. Tested by tests/test_api.py (and by the real-model tests)."""

from __future__ import annotations

import math
import os
import secrets
import threading
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from . import _core

MixrtError = _core.MixrtError

STOP_REASONS = {1: "eos", 2: "stop", 3: "length"}
BACKENDS = ("auto", "cpu", "cuda")


class Model:
    """A loaded .mixrt model with one inference context (created on first use)."""

    def __init__(self, path: Union[str, os.PathLike], threads: Optional[int] = None,
                 n_ctx: Optional[int] = None, backend: str = "auto"):
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, found {backend!r}")
        self.path = str(path)
        self._model = _core.Model(self.path, backend)
        self.threads = threads or (os.cpu_count() or 1)
        self.n_ctx = n_ctx or self._model.context_length
        # Where the model runs ("cpu" or "cuda") and, when "auto" fell back to the CPU, why.
        self.backend = self._model.backend
        self.backend_note = self._model.backend_note
        self._ctx: Optional[_core.Context] = None
        self._lock = threading.Lock()
        self.last_stop_reason: Optional[str] = None

    # ---- facts about the model ---------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return self._model.n_vocab

    @property
    def context_length(self) -> int:
        return self._model.context_length

    @property
    def bos_id(self) -> int:
        return self._model.bos

    @property
    def eos_id(self) -> int:
        return self._model.eos

    def metadata(self) -> dict:
        """Scalar metadata of the file (arrays such as the vocabulary are left out)."""
        out = {}
        for key in self._model.meta_keys():
            value = self._model.meta(key)
            if value is not None:
                out[key] = value
        return out

    def tensors(self) -> list:
        """One dict per tensor: name, dtype, dims, n_elements, n_bytes."""
        return self._model.tensors()

    # ---- tokenizer --------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: Optional[bool] = None, special: bool = True) -> list:
        """Token ids of text. add_bos None follows the file; special=True recognises control
        tokens such as <|im_start|> written in the text."""
        flag = -1 if add_bos is None else int(bool(add_bos))
        return self._model.tokenize(text.encode("utf-8"), flag, special)

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        return self._model.detokenize(list(ids), special).decode("utf-8", errors="replace")

    # ---- evaluation ------------------------------------------------------------------------
    def _context(self) -> _core.Context:
        if self._ctx is None:
            self._ctx = _core.Context(self._model, self.n_ctx, self.threads)
        return self._ctx

    def eval_logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (len(ids), n_vocab) of a fresh context over ids, in one batched pass."""
        with self._lock:
            ctx = self._context()
            ctx.reset()
            ctx.feed(list(ids), True)
            return ctx.logits()

    def perplexity(self, text: str, ctx: int = 512, max_tokens: Optional[int] = None) -> dict:
        """Perplexity of text: tokenized whole without BOS, the first max_tokens tokens split in
        non-overlapping windows of ctx tokens, every token after the first of a window scored."""
        if ctx < 2:
            raise ValueError(f"ctx must be >= 2, got {ctx}")
        if ctx > self.n_ctx:
            raise ValueError(f"ctx {ctx} exceeds the context of {self.n_ctx} tokens")
        tokens = self.tokenize(text, add_bos=False, special=False)
        if max_tokens is not None:
            tokens = tokens[:max_tokens]
        nll, scored = 0.0, 0
        for start in range(0, len(tokens), ctx):
            window = tokens[start:start + ctx]
            if len(window) < 2:
                break
            logits = self.eval_logits(window).astype(np.float64)
            logits = logits[:-1]
            targets = np.asarray(window[1:])
            peak = logits.max(axis=1)
            log_z = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1))
            nll += float((log_z - logits[np.arange(len(targets)), targets]).sum())
            scored += len(targets)
        if scored == 0:
            raise ValueError("the text has fewer than 2 tokens: nothing to score")
        return {"ppl": math.exp(nll / scored), "nll": nll / scored, "tokens_scored": scored, "ctx": ctx,
                "tokens": len(tokens)}

    # ---- generation ------------------------------------------------------------------------
    def _sampler(self, temperature, top_k, top_p, min_p, repeat_penalty, seed) -> _core.Sampler:
        if seed is None:
            seed = secrets.randbits(64)
        return _core.Sampler(float(temperature), int(top_k), float(top_p), float(min_p),
                             float(repeat_penalty), 64, int(seed) & (2**64 - 1))

    def generate(self, prompt: str, max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
                 top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                 seed: Optional[int] = None, stop: Optional[Union[str, Sequence[str]]] = None,
                 stream: bool = False) -> Union[str, Iterator[str]]:
        """The continuation of prompt (not the prompt itself). temperature=0 is greedy. With
        stream=True, an iterator of text pieces, each valid UTF-8. Stops at the end-of-sequence
        token, at a stop string (not included) or after max_tokens."""
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        sampler = self._sampler(temperature, top_k, top_p, min_p, repeat_penalty, seed)
        pieces = self._stream(self.tokenize(prompt), sampler, max_tokens, stops)
        return pieces if stream else "".join(pieces)

    def _stream(self, prompt_ids, sampler, max_tokens, stops) -> Iterator[str]:
        with self._lock:
            ctx = self._context()
            ctx.reset()
            gen = _core.Generation(ctx, sampler, list(prompt_ids), int(max_tokens), stops)
            while True:
                piece, reason = gen.next()
                if piece:
                    yield piece
                if reason:
                    self.last_stop_reason = STOP_REASONS[reason]
                    return

    def generate_ids(self, prompt_ids: Sequence[int], max_tokens: int, temperature: float = 0.0,
                     seed: Optional[int] = None, **sampling) -> list:
        """Token ids generated after prompt_ids (stops at EOS or max_tokens)."""
        sampler = self._sampler(temperature, sampling.get("top_k", 40), sampling.get("top_p", 0.95),
                                sampling.get("min_p", 0.05), sampling.get("repeat_penalty", 1.0), seed)
        with self._lock:
            ctx = self._context()
            ctx.reset()
            if len(prompt_ids) + max_tokens > ctx.n_ctx:
                raise MixrtError(f"the prompt ({len(prompt_ids)} tokens) plus max_tokens ({max_tokens}) "
                                 f"exceed the context of {ctx.n_ctx} tokens")
            ctx.feed(list(prompt_ids), False)
            out = []
            for _ in range(max_tokens):
                token = sampler.sample(ctx)
                if token == self.eos_id:
                    break
                out.append(token)
                ctx.feed([token], False)
            return out


def load(path: Union[str, os.PathLike], threads: Optional[int] = None, n_ctx: Optional[int] = None,
         backend: str = "auto") -> Model:
    """Maps and validates a .mixrt file. threads: CPU threads (default: all cores); n_ctx: tokens
    the KV cache holds (default: the model's context length); backend: "cuda" (weights uploaded to
    the GPU once, here; an error if mixrt has no CUDA backend or there is no GPU), "cpu", or "auto"
    (CUDA when built and a GPU is present, else the CPU: Model.backend says which,
    Model.backend_note why it fell back)."""
    if not Path(path).exists():
        raise MixrtError(f"model file not found: {path}")
    return Model(path, threads=threads, n_ctx=n_ctx, backend=backend)


_cache: dict = {}


def generate(prompt: str, model: Optional[Union[str, os.PathLike]] = None, **kwargs) -> Union[str, Iterator[str]]:
    """Generates with a model loaded once and cached by path. Without model, uses the file named
    by the environment variable MIXRT_MODEL."""
    path = model if model is not None else os.environ.get("MIXRT_MODEL")
    if not path:
        raise MixrtError("no model given: pass model=PATH or set the environment variable MIXRT_MODEL "
                         "to a .mixrt file")
    key = str(Path(path).resolve())
    if key not in _cache:
        _cache[key] = load(path)
    return _cache[key].generate(prompt, **kwargs)
