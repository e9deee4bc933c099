# app.py: the OpenAI-compatible HTTP API over a Scheduler (FastAPI): /v1/models,
# /v1/completions, /v1/chat/completions (the model's chat template; stream=true as server-sent
# events exactly as OpenAI sends them, ending with "data: [DONE]"), /health and Prometheus-style
# /metrics. Errors have OpenAI's shape ({"error": {"message", "type", "param", "code"}}): 400 for a
# bad parameter or a prompt too long (naming the field), 401 for a wrong or missing API key (when
# the server has one), 429 with Retry-After when the queue is full, 504 when a request times out.
# A client that disconnects mid-stream cancels its request. Tested by tests/test_serve.py.
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from ..api import Model, _stop_arg
from .scheduler import Job, QueueFull, Scheduler

# What a request may set, with OpenAI's ranges.
LIMITS = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0)}
UNSUPPORTED = ("logprobs", "echo", "best_of", "suffix", "logit_bias", "tools", "functions", "response_format")
RETRY_AFTER_SECONDS = 1


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: Optional[str] = None, kind: str = "invalid_request_error",
                 headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.headers = status, message, param, kind, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


def _number(body: dict, name: str, default: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"{name}: expected a number, found {value!r}", name)
    low, high = LIMITS[name]
    if not low <= value <= high or (name == "top_p" and value == 0):
        raise ApiError(400, f"{name}: expected a number in {'(' if name == 'top_p' else '['}{low}, {high}], "
                            f"found {value}", name)
    return float(value)


def _integer(body: dict, name: str, default, minimum: int):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value >= 2**63:
        raise ApiError(400, f"{name}: expected an integer >= {minimum}, found {value!r}", name)
    return value


def sampling_options(body: dict) -> dict:
    """The request's sampling settings as Model.sampler takes them (OpenAI's defaults: temperature
    1, top_p 1; no top-k, min-p or repetition penalty)."""
    for name in UNSUPPORTED:
        if body.get(name):
            raise ApiError(400, f"{name}: not supported by this server", name)
    if _integer(body, "n", 1, 1) != 1:
        raise ApiError(400, f"n: only 1 choice per request is supported, found {body['n']}", "n")
    return {"temperature": _number(body, "temperature", 1.0), "top_p": _number(body, "top_p", 1.0), "top_k": 0,
            "min_p": 0.0, "repeat_penalty": 1.0, "seed": _integer(body, "seed", None, -(2**63))}


def stop_strings(body: dict) -> list:
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4
                                                           and all(isinstance(s, str) for s in stop))):
        raise ApiError(400, f"stop: expected a string or a list of at most 4 strings, found {stop!r:.80}", "stop")
    return _stop_arg(stop)


class Server:
    """The routes' logic, independent of the web framework; create_app wires it to FastAPI."""

    def __init__(self, model: Model, scheduler: Scheduler, model_id: str, api_key: Optional[str],
                 timeout: float):
        self.model, self.scheduler, self.model_id = model, scheduler, model_id
        self.api_key, self.timeout = api_key, timeout
        self.started = time.time()

    def check_key(self, authorization: Optional[str]) -> None:
        if self.api_key is None:
            return
        if authorization != f"Bearer {self.api_key}":
            raise ApiError(401, "invalid or missing API key (Authorization: Bearer KEY)", kind="authentication_error")

    def prompt_ids(self, body: dict, chat: bool) -> list:
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in messages):
                raise ApiError(400, "messages: expected a non-empty list of {role, content} objects", "messages")
            try:
                return self.model.chat_prompt_ids(messages)
            except Exception as error:  # no template, or one that refuses these messages
                raise ApiError(400, f"messages: {error}", "messages") from error
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise ApiError(400, f"prompt: expected a string, found {type(prompt).__name__}", "prompt")
        return self.model.tokenize(prompt)

    def job(self, body: dict, chat: bool, on_event) -> Job:
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        ids = self.prompt_ids(body, chat)
        room = self.scheduler.n_ctx - len(ids)
        if room <= 0:
            raise ApiError(400, f"the prompt is {len(ids)} tokens, the context holds {self.scheduler.n_ctx}",
                           "messages" if chat else "prompt")
        key = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
        max_tokens = _integer(body, key, room if chat else 16, 1)
        if max_tokens > room:
            raise ApiError(400, f"{key}: the prompt ({len(ids)} tokens) plus {key} ({max_tokens}) exceed the context "
                                f"of {self.scheduler.n_ctx} tokens", key)
        job = Job(prompt=ids, max_tokens=max_tokens, stop=stop_strings(body), sampling=sampling_options(body),
                  on_event=on_event, deadline=time.monotonic() + self.timeout)
        try:
            return self.scheduler.submit(job)
        except QueueFull:
            raise ApiError(429, "the server is busy (the request queue is full); retry later", kind="rate_limit_error",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None

    def health(self) -> dict:
        return {"status": "ok", "model": self.model_id, "backend": self.model.backend,
                "replica": f"{socket.gethostname()}:{os.getpid()}",
                "batching": "CPU backend (the CUDA engine serves one sequence at a time, so the server runs "
                            "its batches on the CPU)",
                "parallel": self.scheduler.parallel, "running": self.scheduler.running,
                "queue_length": self.scheduler.queue_length, "n_ctx": self.scheduler.n_ctx}

    def metrics(self) -> str:
        s = self.scheduler.stats
        lines = [("mixrt_requests_total", "counter", s["requests_total"]),
                 ("mixrt_requests_rejected_total", "counter", s["requests_rejected_total"]),
                 ("mixrt_tokens_generated_total", "counter", s["tokens_generated_total"]),
                 ("mixrt_decode_steps_total", "counter", s["decode_steps_total"]),
                 ("mixrt_requests_running", "gauge", self.scheduler.running),
                 ("mixrt_queue_length", "gauge", self.scheduler.queue_length),
                 ("mixrt_tokens_per_second", "gauge", round(s["tokens_per_second"], 3))]
        return "".join(f"# TYPE {name} {kind}\n{name} {value}\n" for name, kind, value in lines)


def completion_body(chat: bool, head: dict, text: str, finish_reason: str, usage: dict) -> dict:
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish_reason}
        return {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    return {**head, "object": "text_completion", "choices": [choice], "usage": usage}


def chunk_body(chat: bool, head: dict, piece: Optional[str], finish_reason: Optional[str] = None,
               first: bool = False) -> dict:
    if chat:
        delta = {"role": "assistant", "content": ""} if first else ({"content": piece} if piece is not None else {})
        return {**head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    return {**head, "object": "text_completion",
            "choices": [{"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish_reason}]}


# Seconds running requests get to finish when the server shuts down (SIGTERM); the rest end with
# an error event (and "data: [DONE]").
DRAIN_SECONDS = 5.0


def create_app(server: Server) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await asyncio.get_running_loop().run_in_executor(None, server.scheduler.shutdown, DRAIN_SECONDS)

    app = FastAPI(title="mixrt", docs_url=None, redoc_url=None, lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception):  # never a traceback to the client, never a dead server
        return JSONResponse(ApiError(500, f"{type(error).__name__}: {error}", kind="server_error").body(),
                            status_code=500)

    @app.get("/health")
    async def health():
        return server.health()

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(server.metrics())

    @app.get("/v1/models")
    async def models(request: Request):
        server.check_key(request.headers.get("authorization"))
        return {"object": "list", "data": [{"id": server.model_id, "object": "model", "created": int(server.started),
                                            "owned_by": "mixrt"}]}

    async def complete(request: Request, chat: bool):
        server.check_key(request.headers.get("authorization"))
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "the request body is not valid JSON") from None
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = server.job(body, chat, lambda kind, value: loop.call_soon_threadsafe(events.put_nowait, (kind, value)))
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": server.model_id}

        def usage() -> dict:
            return {"prompt_tokens": len(job.prompt), "completion_tokens": job.completion_tokens,
                    "total_tokens": len(job.prompt) + job.completion_tokens}

        if not body.get("stream"):
            pieces = []
            try:
                while True:
                    kind, value = await events.get()
                    if kind == "piece":
                        pieces.append(value)
                    elif kind == "done":
                        return completion_body(chat, head, "".join(pieces), value, usage())
                    else:
                        raise ApiError(504 if "timed out" in value else 500, value, kind="server_error")
            finally:
                job.cancel()  # a client gone before the end frees the sequence

        async def stream():
            try:
                if chat:
                    yield f"data: {json.dumps(chunk_body(True, head, None, first=True))}\n\n"
                while True:
                    kind, value = await events.get()
                    if kind == "piece":
                        yield f"data: {json.dumps(chunk_body(chat, head, value))}\n\n"
                    elif kind == "done":
                        final = chunk_body(chat, head, None, value)
                        if body.get("stream_options", {}) and body["stream_options"].get("include_usage"):
                            final["usage"] = usage()
                        yield f"data: {json.dumps(final)}\n\n"
                        break
                    else:
                        yield f"data: {json.dumps(ApiError(500, value, kind='server_error').body())}\n\n"
                        break
                yield "data: [DONE]\n\n"
            finally:
                job.cancel()  # ended, or the client disconnected: the sequence is freed

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, chat=True)

    return app
