# scheduler.py: continuous batching over one model. Requests wait in a bounded queue; a worker
# thread gives each a sequence of one batched context (mixrt_context_decode) when one is free,
# prefills its prompt in chunks while the running sequences keep decoding, samples each sequence's
# row with its own sampler and history, turns the tokens into text with a TextStream each (what
# generate does: EOS, stop strings, max_tokens), and hands the pieces to the request's consumer.
# A sequence's text is exactly what Model.generate gives for the same prompt and settings.
# Cancelled (client gone) and timed-out requests free their sequence at the next step.
# Tested by tests/test_serve.py.
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np

from .. import _core
from ..api import FINISH_REASONS, Model

# Prompt tokens a joining sequence may feed per step, so that running sequences keep getting a
# token every step while a long prompt is prefilled.
PREFILL_CHUNK = 128


class QueueFull(Exception):
    """The request queue is full (the server answers 429 with Retry-After)."""


@dataclass
class Job:
    """One request: its prompt ids and sampling, and where its pieces go. on_event(kind, value)
    is called from the worker thread: ("piece", str), then ("done", finish_reason) or
    ("error", message)."""

    prompt: List[int]
    max_tokens: int
    stop: List[str]
    sampling: dict
    on_event: Callable[[str, object], None]
    deadline: float = float("inf")  # time.monotonic() after which it ends with an error
    cancelled: threading.Event = field(default_factory=threading.Event)
    completion_tokens: int = 0
    # worker state
    seq: int = -1
    fed: int = 0  # prompt tokens fed so far
    history: List[int] = field(default_factory=list)
    sampler: Optional[_core.Sampler] = None
    text: Optional[_core.TextStream] = None

    def cancel(self) -> None:
        self.cancelled.set()


class Scheduler:
    """Runs jobs on `parallel` sequences of one context of n_ctx positions each."""

    def __init__(self, model: Model, parallel: int, n_ctx: int, max_queue: int):
        self.model = model
        self.parallel, self.n_ctx = parallel, n_ctx
        self.context = _core.Context(model._model, n_ctx, model.threads, model.kv_cache, "", parallel)
        self._waiting: "queue.Queue[Job]" = queue.Queue(maxsize=max_queue)
        self._running: List[Job] = []
        self._free = list(range(parallel))
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.stats = {"requests_total": 0, "requests_rejected_total": 0, "tokens_generated_total": 0,
                      "decode_steps_total": 0, "tokens_per_second": 0.0}
        self._worker = threading.Thread(target=self._run, name="mixrt-scheduler", daemon=True)
        self._worker.start()

    # ---- the caller's side -------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        """Queues job (QueueFull when the queue is full); its events follow on the worker."""
        if len(job.prompt) + job.max_tokens > self.n_ctx:
            raise ValueError(f"the prompt ({len(job.prompt)} tokens) plus max_tokens ({job.max_tokens}) exceed "
                             f"the context of {self.n_ctx} tokens")
        try:
            self._waiting.put_nowait(job)
        except queue.Full:
            self.stats["requests_rejected_total"] += 1
            raise QueueFull from None
        self.stats["requests_total"] += 1
        self._wake.set()
        return job

    @property
    def queue_length(self) -> int:
        return self._waiting.qsize()

    @property
    def running(self) -> int:
        return len(self._running)

    def shutdown(self, drain_seconds: float = 0.0) -> None:
        """Lets running jobs finish for up to drain_seconds, then ends the rest with an error."""
        end = time.monotonic() + drain_seconds
        while (self._running or self.queue_length) and time.monotonic() < end:
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self._worker.join()

    # ---- the worker --------------------------------------------------------------------------
    def _admit(self) -> None:
        while self._free:
            try:
                job = self._waiting.get_nowait()
            except queue.Empty:
                return
            if job.cancelled.is_set():
                continue
            job.seq = self._free.pop()
            job.history = list(job.prompt)
            job.sampler = self.model.sampler(**job.sampling)
            job.text = _core.TextStream(self.model._model, job.max_tokens, job.stop)
            self._running.append(job)

    @staticmethod
    def _emit(job: Job, kind: str, value) -> None:
        """Hands an event to the job's consumer; a consumer that is gone (its event loop closed)
        cancels the job instead of stopping the worker."""
        try:
            job.on_event(kind, value)
        except Exception:
            job.cancel()

    def _end(self, job: Job, kind: str, value) -> None:
        self._running.remove(job)
        self.context.seq_clear(job.seq)
        self._free.append(job.seq)
        self._emit(job, kind, value)

    def _step(self) -> None:
        now = time.monotonic()
        for job in list(self._running):
            if job.cancelled.is_set():
                self._end(job, "error", "cancelled")
            elif now > job.deadline:
                self._end(job, "error", "the request timed out")
        batch, sampled = [], []
        for job in self._running:
            if job.fed < len(job.prompt):  # prefill, a chunk at a time
                chunk = job.prompt[job.fed:job.fed + PREFILL_CHUNK]
                last = job.fed + len(chunk) == len(job.prompt)
                batch += [(job.seq, t, job.fed + i, int(last and i == len(chunk) - 1)) for i, t in enumerate(chunk)]
                job.fed += len(chunk)
                if last:
                    sampled.append(job)
            else:
                batch.append((job.seq, job.history[-1], len(job.history) - 1, 1))
                sampled.append(job)
        if not batch:
            return
        start = time.perf_counter()
        self.context.decode(np.asarray(batch, np.int32))
        rows = self.context.logits()
        for row, job in zip(rows, sampled):
            token = job.sampler.sample_logits(row, job.history)
            piece, reason = job.text.push(token)
            job.completion_tokens = job.text.n_generated
            if piece:
                self._emit(job, "piece", piece)
            if reason:
                self._end(job, "done", FINISH_REASONS[reason])
            else:
                job.history.append(token)
        seconds = time.perf_counter() - start
        self.stats["decode_steps_total"] += 1
        self.stats["tokens_generated_total"] += len(sampled)
        rate = len(sampled) / max(seconds, 1e-9)
        self.stats["tokens_per_second"] = 0.9 * self.stats["tokens_per_second"] + 0.1 * rate

    def _run(self) -> None:
        while not self._stop.is_set():
            self._admit()
            if not self._running:
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            try:
                self._step()
            except Exception as error:  # a failure of the core ends the running jobs, not the server
                for job in list(self._running):
                    self._end(job, "error", f"{type(error).__name__}: {error}")
        for job in list(self._running):
            self._end(job, "error", "the server is shutting down")
        while True:
            try:
                self._emit(self._waiting.get_nowait(), "error", "the server is shutting down")
            except queue.Empty:
                break
