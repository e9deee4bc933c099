"""The Python API of mixrt: load(), Model (tokenizer, generation, chat, perplexity) and generate(),
a thin layer over the C API binding mixrt._core. Arguments are checked here, so that a bad one
names itself. Tested by tests/test_generation.py, tests/test_api.py and tests/test_chat.py."""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

import numpy as np

from . import _core
from .chat import ChatTemplate, ChatTemplateError

MixrtError = _core.MixrtError

# The core's stop reasons (mixrt_stop_reason) as OpenAI's finish_reason: the end-of-sequence token
# and a stop string both "stop", max_tokens or the end of the context "length".
FINISH_REASONS = {1: "stop", 2: "stop", 3: "length"}
BACKENDS = ("auto", "cpu", "cuda")
KV_CACHES = ("f16", "f32")  # how a context's KV cache stores keys and values
# How every matmul input may be rounded first: block floating point of 8..3 bits (CPU only).
ACTIVATIONS = ("bfp8", "bfp6", "bfp5", "bfp4", "bfp3", "token4")
UNTIL_END = -1  # max_tokens: until the end-of-sequence token or the end of the context


def _sampler_defaults() -> dict:
    """The C API's sampler defaults (mixrt_sampler_default_params), each float as the shortest
    decimal that rounds to the same float32 (0.8, not 0.800000011920929)."""
    return {name: float(str(np.float32(value))) if isinstance(value, float) else value
            for name, value in _core.sampler_default_params().items()}


# temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n (and seed, which the API draws
# afresh instead): the defaults of every sampling argument here and in the mixrt command.
SAMPLER_DEFAULTS = _sampler_defaults()
_D = SAMPLER_DEFAULTS


# ---- argument checks ---------------------------------------------------------------------------

INT32_MAX = 2**31 - 1  # counts and ids cross the C API as int32


def _int_arg(name: str, value, minimum: int, allowed=(), maximum: int = INT32_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, found {type(value).__name__} {value!r}")
    if value < minimum and value not in allowed:
        extra = "".join(f" or {a}" for a in allowed)
        raise ValueError(f"{name}: expected an integer >= {minimum}{extra}, found {value}")
    if value > maximum:
        raise ValueError(f"{name}: expected an integer <= {maximum}, found {value}")
    return int(value)


def _ids_arg(name: str, ids, n_vocab: int, allow_empty: bool = True) -> list:
    """ids as a list of ints in 0..n_vocab-1, or an error naming the argument and the entry."""
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise TypeError(f"{name}: expected a sequence of token ids, found {type(ids).__name__}")
    out = list(ids)
    if not out and not allow_empty:
        raise ValueError(f"{name}: expected at least one token id, found none")
    for i, token in enumerate(out):
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < n_vocab:
            raise ValueError(f"{name}: expected token ids in 0..{n_vocab - 1}, found {token!r} at index {i}")
    return [int(t) for t in out]


def _float_arg(name: str, value, low: float, high: float = math.inf, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, found {type(value).__name__} {value!r}")
    above_low = value > low if low_open else value >= low
    if not (math.isfinite(value) and above_low and value <= high):
        bound = f"{'>' if low_open else '>='} {low}" + ("" if high == math.inf else f" and <= {high}")
        raise ValueError(f"{name}: expected a finite number {bound}, found {value}")
    return float(value)


def _text_arg(name: str, value) -> bytes:
    """value as UTF-8, or an error naming the argument (bytes, None, lone surrogates)."""
    if not isinstance(value, str):
        hint = " (decode it first, e.g. data.decode('utf-8'))" if isinstance(value, (bytes, bytearray)) else ""
        raise TypeError(f"{name}: expected a str, found {type(value).__name__}{hint}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name}: expected text that UTF-8 can encode, found the lone surrogate "
                         f"U+{ord(value[e.start]):04X} at index {e.start}") from None


def _stop_arg(stop) -> List[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    for i, s in enumerate(stops):
        _text_arg(f"stop[{i}]", s)
    return stops


# ---- results -----------------------------------------------------------------------------------

class Completion(str):
    """Generated text (a str) that also carries finish_reason ("stop": end-of-sequence token or a
    stop string; "length": max_tokens or the end of the context), prompt_tokens and
    completion_tokens."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class CompletionStream:
    """An iterator of text pieces (each valid UTF-8). finish_reason is None until it ends, then as
    for Completion; prompt_tokens and completion_tokens count as it goes. It holds an inference
    context of its model until it ends; close() (or leaving a `with` block, or dropping it) ends
    it early and hands the context back."""

    def __init__(self, model: "Model", ctx: _core.Context, sampler: _core.Sampler, prompt_ids: list,
                 max_tokens: int, stops: List[str]):
        self._owner = model
        self._ctx: Optional[_core.Context] = ctx
        self._gen = None
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.finish_reason: Optional[str] = None
        try:
            self._gen = _core.Generation(ctx, sampler, prompt_ids, max_tokens, stops)  # feeds the prompt
        except BaseException:
            self.close()
            raise

    def __iter__(self):
        return self

    def __next__(self) -> str:
        while self._gen is not None:
            if self._owner.closed:
                self.close()
                raise MixrtError(f"{self._owner.path}: the model is closed")
            piece, reason = self._gen.next()
            self.completion_tokens = self._gen.n_generated
            if reason:
                self.finish_reason = FINISH_REASONS[reason]
                self.close()
            if piece:
                return piece
        raise StopIteration

    def close(self) -> None:
        """Ends the generation (finish_reason stays None if it had not finished) and hands the
        context back to the model."""
        self._gen = None
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            self._owner._release(ctx)

    def __enter__(self) -> "CompletionStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Rows of float32 log-probabilities (each row's normaliser summed in float64)."""
    x = logits - logits.max(axis=1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=1, keepdims=True, dtype=np.float64)).astype(np.float32)
    return x


class Model:
    """A loaded .mixrt model. Each call runs on an inference context (KV cache) of its own for as
    long as it runs: a stream holds one until it ends, is closed or is dropped, and calls made
    meanwhile (from this or another thread) get another context."""

    def __init__(self, path: Union[str, os.PathLike], threads: Optional[int] = None,
                 n_ctx: Optional[int] = None, backend: str = "auto", kv_cache: str = "f16",
                 activations: Optional[str] = None):
        if threads is not None:
            _int_arg("threads", threads, 1)
        if n_ctx is not None:
            _int_arg("n_ctx", n_ctx, 1)
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, found {backend!r}")
        if kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache: expected one of {', '.join(KV_CACHES)}, found {kv_cache!r}")
        if activations is not None and activations not in ACTIVATIONS:
            raise ValueError(f"activations: expected None or one of {', '.join(ACTIVATIONS)}, "
                             f"found {activations!r}")
        kv_note = ""
        if kv_cache == "f32":  # the CUDA backend keeps its KV cache in f16
            if backend == "cuda":
                raise ValueError("kv_cache: 'f32' runs on the CPU backend only (the CUDA backend keeps its KV "
                                 "cache in f16): use backend='cpu' or kv_cache='f16'")
            if backend == "auto":
                backend, kv_note = "cpu", "kv_cache f32 runs on the CPU backend only"
        if activations is not None:  # the CUDA backend does not round activations
            if backend == "cuda":
                raise ValueError(f"activations: {activations!r} runs on the CPU backend only: use "
                                 f"backend='cpu' or activations=None")
            if backend == "auto":
                backend, kv_note = "cpu", f"activations {activations} run on the CPU backend only"
        self.path = str(path)
        self._core_model: Optional[_core.Model] = _core.Model(self.path, backend)
        self.threads = threads or (os.cpu_count() or 1)
        self.n_ctx = n_ctx or min(self._model.context_length, _core.DEFAULT_N_CTX)
        self.kv_cache = kv_cache
        self.activations = activations
        # Where the model runs ("cpu" or "cuda") and, when "auto" fell back to the CPU, why.
        self.backend = self._model.backend
        self.backend_note = self._model.backend_note or kv_note
        self._idle: List[_core.Context] = []  # contexts no call is using (at most one is kept)
        self._pool_lock = threading.Lock()
        self._chat_template: Optional[ChatTemplate] = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"backend={self.backend!r} threads={self.threads} n_vocab={self.n_vocab}"
        return f"<mixrt.Model {self.path!r} {state} n_ctx={self.n_ctx}>"

    # ---- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Frees the model's contexts now and the weights once no running stream needs them;
        later calls raise MixrtError. Streams still running end with an error at their next piece."""
        with self._pool_lock:
            self._idle.clear()
            self._core_model = None

    @property
    def _model(self) -> _core.Model:
        """The binding's model handle (MixrtError once closed)."""
        self._check_open()
        return self._core_model

    @property
    def closed(self) -> bool:
        return self._core_model is None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._core_model is None:
            raise MixrtError(f"{self.path}: the model is closed")

    def _acquire(self) -> _core.Context:
        """An inference context for the caller alone, reset; give it back with _release."""
        with self._pool_lock:
            self._check_open()
            ctx = self._idle.pop() if self._idle else None
        if ctx is None:
            ctx = _core.Context(self._model, self.n_ctx, self.threads, self.kv_cache, self.activations or "")
        ctx.reset()
        return ctx

    def _release(self, ctx: _core.Context) -> None:
        with self._pool_lock:
            if not self.closed and not self._idle:
                self._idle.append(ctx)

    @contextlib.contextmanager
    def context(self) -> Iterator[_core.Context]:
        """An inference context (KV cache of n_ctx tokens) for the caller alone, reset, for as
        long as the `with` block runs; then it goes back to the model's pool, so holding one never
        blocks other calls. It is the C API's context: feed(tokens, all_logits) runs the model
        over tokens after those already fed; logits() copies the last feed's logits, (rows,
        n_vocab) float32 (one row, or one per token with all_logits); reset() empties it; n_past
        and n_ctx count tokens; backend names where it runs; set_capture(fn) calls fn(layer,
        site, x) with the input rows of each decoder linear layer during feeds (CPU only; None
        stops it). Model.sampler(...).sample(ctx) picks a next token from it.

            with model.context() as ctx:
                ctx.feed(model.tokenize("Once upon a time"), False)
                token = model.sampler(temperature=0).sample(ctx)
        """
        ctx = self._acquire()
        try:
            yield ctx
        finally:
            self._release(ctx)

    # ---- facts about the model ---------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return self._model.n_vocab

    @property
    def context_length(self) -> int:
        return self._model.context_length

    @property
    def kv_cache_bytes(self) -> int:
        """Bytes of the KV cache of each inference context: keys and values of n_ctx tokens in
        every layer, f16 or f32 (kv_cache)."""
        meta = self.metadata()
        width = meta["llama.n_kv_heads"] * meta["llama.head_dim"]
        return 2 * meta["llama.n_layers"] * self.n_ctx * width * (4 if self.kv_cache == "f32" else 2)

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
        """One dict per tensor: name, dtype, dims, n_elements, n_bytes, n_cols_4bit, n_outliers."""
        return self._model.tensors()

    # ---- tokenizer --------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: Optional[bool] = None, special: bool = False) -> list:
        """Token ids of text. add_bos None follows the file. special=True recognises control
        tokens such as <|im_start|> written in the text; by default they are plain text."""
        flag = -1 if add_bos is None else int(bool(add_bos))
        return self._model.tokenize(_text_arg("text", text), flag, bool(special))

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        """The text of ids; control tokens are left out unless special=True."""
        return self._model.detokenize(_ids_arg("ids", ids, self.n_vocab), special).decode("utf-8", errors="replace")

    # ---- evaluation ------------------------------------------------------------------------
    def eval_logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (len(ids), n_vocab) of a fresh context over ids, in one batched pass."""
        ids = _ids_arg("ids", ids, self.n_vocab, allow_empty=False)
        with self.context() as ctx:
            ctx.feed(ids, True)
            return ctx.logits()

    def perplexity(self, text: str, ctx: int = 512, max_tokens: Optional[int] = None,
                   progress: bool = False, base: Optional["Model"] = None) -> dict:
        """Perplexity of text: tokenized whole without BOS, the first max_tokens tokens split in
        non-overlapping windows of ctx tokens, every token after the first of a window scored.
        progress=True shows a progress bar on stderr. With base (a model of the same vocabulary,
        e.g. the f16 file this one was quantized from), also how far this model's next-token
        distributions are from base's at the same positions, as llama.cpp's --kl-divergence
        reports it: the mean and 99th percentile of KL(base || this), the share of positions where
        both put the same token first, and base's perplexity."""
        _int_arg("ctx", ctx, 2)
        if ctx > self.n_ctx:
            raise ValueError(f"ctx: expected at most the context of {self.n_ctx} tokens, found {ctx}")
        if max_tokens is not None:
            _int_arg("max_tokens", max_tokens, 2)
        if base is not None:
            if not isinstance(base, Model):
                raise TypeError(f"base: expected a mixrt.Model, found {type(base).__name__}")
            if base.n_vocab != self.n_vocab:
                raise ValueError(f"base: expected a model of this one's vocabulary ({self.n_vocab} tokens), "
                                 f"found {base.n_vocab}")
            if ctx > base.n_ctx:
                raise ValueError(f"ctx: expected at most base's context of {base.n_ctx} tokens, found {ctx}")
        tokens = self.tokenize(text, add_bos=False, special=False)[:max_tokens]
        windows = [tokens[start:start + ctx] for start in range(0, len(tokens), ctx)]
        windows = [w for w in windows if len(w) >= 2]
        if not windows:
            raise ValueError("text: has fewer than 2 tokens, nothing to score")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=sum(map(len, windows)), unit="tok", desc="perplexity", leave=False)
        nll, base_nll, scored, kl, same_top1 = 0.0, 0.0, 0, [], 0
        try:
            for window in windows:
                targets = np.asarray(window[1:])
                log_p = _log_softmax(self.eval_logits(window)[:-1])
                nll -= float(log_p[np.arange(len(targets)), targets].sum())
                if base is not None:
                    log_q = _log_softmax(base.eval_logits(window)[:-1])
                    base_nll -= float(log_q[np.arange(len(targets)), targets].sum())
                    kl.append((np.exp(log_q) * (log_q - log_p)).sum(axis=1, dtype=np.float64))
                    same_top1 += int((log_p.argmax(axis=1) == log_q.argmax(axis=1)).sum())
                scored += len(targets)
                if bar is not None:
                    bar.update(len(window))
        finally:
            if bar is not None:
                bar.close()
        result = {"ppl": math.exp(nll / scored), "nll": nll / scored, "tokens_scored": scored, "ctx": ctx,
                  "tokens": len(tokens)}
        if base is not None:
            kl_all = np.concatenate(kl)
            result.update({"ppl_base": math.exp(base_nll / scored), "kl_mean": float(kl_all.mean()),
                           "kl_p99": float(np.percentile(kl_all, 99)), "top1_agreement": same_top1 / scored})
        return result

    # ---- generation ------------------------------------------------------------------------
    def generate(self, prompt: str, max_tokens: int = 128, temperature: float = _D["temperature"],
                 top_k: int = _D["top_k"], top_p: float = _D["top_p"], min_p: float = _D["min_p"],
                 repeat_penalty: float = _D["repeat_penalty"], seed: Optional[int] = None,
                 stop: Optional[Union[str, Sequence[str]]] = None, stream: bool = False,
                 special: bool = False) -> Union[Completion, CompletionStream]:
        """The continuation of prompt (not the prompt itself): a Completion (a str with
        finish_reason and token counts), or with stream=True a CompletionStream of text pieces.
        temperature=0 is greedy. Stops at the end-of-sequence token, at a stop string (not
        included) or after max_tokens (-1: at the end of the context). Control tokens written in
        the prompt are plain text unless special=True."""
        _text_arg("prompt", prompt)
        ids = self.tokenize(prompt, special=special)
        return self._generate(ids, max_tokens, stream, stop, temperature=temperature, top_k=top_k,
                              top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty, seed=seed)

    def sampler(self, temperature: float = _D["temperature"], top_k: int = _D["top_k"],
                top_p: float = _D["top_p"], min_p: float = _D["min_p"],
                repeat_penalty: float = _D["repeat_penalty"], seed: Optional[int] = None) -> _core.Sampler:
        """A sampler with generate()'s settings (seed None: a fresh one), whose sample(ctx) picks
        the next token from the last logits of a context (Model.context()) and the tokens fed to
        it. temperature=0 is greedy (argmax)."""
        temperature = _float_arg("temperature", temperature, 0.0)
        top_k = _int_arg("top_k", top_k, 0)
        top_p = _float_arg("top_p", top_p, 0.0, 1.0, low_open=True)
        min_p = _float_arg("min_p", min_p, 0.0, 1.0)
        repeat_penalty = _float_arg("repeat_penalty", repeat_penalty, 0.0, low_open=True)
        if seed is None:
            seed = secrets.randbits(64)
        seed = _int_arg("seed", seed, -(2**63), maximum=2**64 - 1)
        return _core.Sampler(temperature, top_k, top_p, min_p, repeat_penalty, _D["repeat_last_n"],
                             seed & (2**64 - 1))

    def _generate(self, prompt_ids: list, max_tokens, stream: bool, stop, **sampling):
        max_tokens = _int_arg("max_tokens", max_tokens, 0, allowed=(UNTIL_END,))
        if max_tokens == UNTIL_END:
            max_tokens = max(0, self.n_ctx - len(prompt_ids))
        stops = _stop_arg(stop)
        sampler = self.sampler(**sampling)
        pieces = CompletionStream(self, self._acquire(), sampler, list(prompt_ids), max_tokens, stops)
        if stream:
            return pieces
        text = Completion("".join(pieces))
        text.finish_reason, text.prompt_tokens = pieces.finish_reason, pieces.prompt_tokens
        text.completion_tokens = pieces.completion_tokens
        return text

    def generate_ids(self, prompt_ids: Sequence[int], max_tokens: int, temperature: float = 0.0,
                     seed: Optional[int] = None, **sampling) -> list:
        """Token ids generated after prompt_ids (stops at EOS or max_tokens)."""
        max_tokens = _int_arg("max_tokens", max_tokens, 0)
        sampler = self.sampler(temperature=temperature, seed=seed, **sampling)
        with self.context() as ctx:
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

    # ---- chat ------------------------------------------------------------------------------
    def chat_template(self) -> ChatTemplate:
        """The file's chat template (tokenizer.chat_template), compiled once."""
        if self._chat_template is None:
            source = self._model.meta("tokenizer.chat_template")
            if not source:
                raise MixrtError(f"{self.path} has no chat template (tokenizer.chat_template): use "
                                 "generate() with a prompt, or convert from a checkpoint that has one")
            special = {name: self.detokenize([i], special=True) if i >= 0 else ""
                       for name, i in (("bos", self.bos_id), ("eos", self.eos_id))}
            self._chat_template = ChatTemplate(source, special["bos"], special["eos"])
        return self._chat_template

    def chat_prompt_ids(self, messages, add_generation_prompt: bool = True, special: bool = False,
                        **variables) -> list:
        """Token ids of messages rendered with the model's chat template (extra template variables,
        such as tools, as keyword arguments). Control tokens inside message contents stay plain
        text unless special=True."""
        try:
            return self.chat_template().tokenize(
                lambda text, parse: self.tokenize(text, add_bos=False, special=parse), messages,
                add_generation_prompt, special, **variables)
        except ChatTemplateError as e:
            raise MixrtError(str(e)) from None

    def chat(self, messages, max_tokens: int = 512, stream: bool = False, special: bool = False,
             stop: Optional[Union[str, Sequence[str]]] = None, **sampling) -> Union[Completion, CompletionStream]:
        """The assistant's answer to messages ([{"role": "user", "content": "..."}, ...]), as a
        Completion or, with stream=True, a CompletionStream; sampling options as for generate()."""
        ids = self.chat_prompt_ids(messages, special=special)
        return self._generate(ids, max_tokens, stream, stop, **sampling)

    def create_chat_completion(self, messages, max_tokens: Optional[int] = None,
                               temperature: float = _D["temperature"], top_p: float = _D["top_p"],
                               top_k: int = _D["top_k"], min_p: float = _D["min_p"],
                               repeat_penalty: float = _D["repeat_penalty"], seed: Optional[int] = None,
                               stop: Optional[Union[str, Sequence[str]]] = None, stream: bool = False):
        """An OpenAI-shaped chat completion, as llama-cpp-python returns it: a dict with id,
        object "chat.completion", created, model, choices[0].message {role, content},
        choices[0].finish_reason and usage; with stream=True an iterator of "chat.completion.chunk"
        dicts (a role delta, content deltas, then the finish_reason). max_tokens None: until the
        end of the answer or of the context."""
        result = self.chat(messages, max_tokens=UNTIL_END if max_tokens is None else max_tokens,
                           stream=stream, stop=stop, temperature=temperature, top_p=top_p, top_k=top_k,
                           min_p=min_p, repeat_penalty=repeat_penalty, seed=seed)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": Path(self.path).name}
        if stream:
            return self._completion_chunks(head, result)
        return {**head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": str(result)},
                             "finish_reason": result.finish_reason}],
                "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                          "total_tokens": result.prompt_tokens + result.completion_tokens}}

    @staticmethod
    def _completion_chunks(head: dict, pieces: CompletionStream) -> Iterator[dict]:
        def chunk(delta, finish_reason=None):
            return {**head, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

        with pieces:
            yield chunk({"role": "assistant"})
            for piece in pieces:
                yield chunk({"content": piece})
            yield chunk({}, pieces.finish_reason)


def load(path: Union[str, os.PathLike], threads: Optional[int] = None, n_ctx: Optional[int] = None,
         backend: str = "auto", kv_cache: str = "f16", activations: Optional[str] = None) -> Model:
    """Maps and validates a .mixrt file. threads: CPU threads (default: all cores); n_ctx: tokens
    the KV cache holds (default: the model's context length, at most 4096 (_core.DEFAULT_N_CTX):
    models that advertise 128k tokens would otherwise reserve gigabytes; a cache larger than the
    memory available is refused with MixrtError when a context is created); backend: "cuda" (weights uploaded to
    the GPU once, here; an error if mixrt has no CUDA backend or there is no GPU), "cpu", or "auto"
    (CUDA when built and a GPU is present, else the CPU: Model.backend says which,
    Model.backend_note why it fell back); kv_cache: "f16" (keys and values stored as f16: half the
    memory and attention reads) or "f32" (CPU only; "auto" then picks the CPU); activations: None
    (matmul inputs as the kernels round them) or "bfp8", "bfp6", "bfp5", "bfp4", "bfp3" (every
    matmul input first rounded to block floating point of that many bits, 16 values per shared
    exponent, as arXiv 2310.05079 runs W6A6 and W4A4) or "token4" (the inputs of quik weights
    rounded to 4 bits per token instead of 8: QUIK's W4A4); CPU only, "auto" then picks the CPU)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, found {type(path).__name__}")
    _check_model_path(Path(path))
    return Model(path, threads=threads, n_ctx=n_ctx, backend=backend, kv_cache=kv_cache,
                 activations=activations)


def _check_model_path(path: Path) -> None:
    """A clear error for what is not a .mixrt file but often given as one."""
    if not path.exists():
        raise MixrtError(f"model file not found: {path}")
    if path.is_dir():
        if (path / "config.json").exists():
            raise MixrtError(f"{path} is a Hugging Face checkpoint directory, not a .mixrt file: convert "
                             f"it first: mixrt-convert {path} -o {path.name}.mixrt")
        raise MixrtError(f"{path} is a directory, expected a .mixrt file")
    with open(path, "rb") as f:
        if f.read(4) == b"GGUF":
            out = path.with_suffix(".mixrt").name if path.suffix != ".mixrt" else "OUT.mixrt"
            raise MixrtError(f"{path} is a GGUF file, not a .mixrt file: convert it first: "
                             f"mixrt-convert {path} -o {out}")


_cache: dict = {}
_cache_lock = threading.Lock()


def generate(prompt: str, model: Optional[Union[str, os.PathLike]] = None, max_tokens: int = 128,
             temperature: float = _D["temperature"], top_k: int = _D["top_k"], top_p: float = _D["top_p"],
             min_p: float = _D["min_p"], repeat_penalty: float = _D["repeat_penalty"],
             seed: Optional[int] = None, stop: Optional[Union[str, Sequence[str]]] = None,
             stream: bool = False, special: bool = False) -> Union[Completion, CompletionStream]:
    """Model.generate with a model loaded once and cached by path. Without model, uses the file
    named by the environment variable MIXRT_MODEL."""
    path = model if model is not None else os.environ.get("MIXRT_MODEL")
    if not path:
        raise MixrtError("no model given: pass model=PATH or set the environment variable MIXRT_MODEL "
                         "to a .mixrt file")
    key = str(Path(path).resolve())
    with _cache_lock:
        if key not in _cache:
            _cache[key] = load(path)
        loaded = _cache[key]
    return loaded.generate(prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                           min_p=min_p, repeat_penalty=repeat_penalty, seed=seed, stop=stop, stream=stream,
                           special=special)
