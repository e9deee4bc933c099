# mixrt.serve: the OpenAI-compatible server (`mixrt serve`, extra `mixrt[server]`): continuous
# batching of many requests over one model (scheduler.py) behind FastAPI routes (app.py).
from __future__ import annotations

from typing import Optional


def build_app(model_path: str, parallel: int = 4, n_ctx: Optional[int] = None, api_key: Optional[str] = None,
              max_queue: int = 64, timeout: float = 600.0, threads: Optional[int] = None):
    """(FastAPI app, Server) serving the model at model_path with `parallel` sequences of n_ctx
    tokens each (default: the model's default context), a queue of max_queue requests and a
    per-request timeout in seconds."""
    from pathlib import Path

    from ..api import load
    from .app import Server, create_app
    from .scheduler import Scheduler

    model = load(model_path, threads=threads, n_ctx=n_ctx, backend="cpu")
    scheduler = Scheduler(model, parallel, model.n_ctx, max_queue)
    server = Server(model, scheduler, Path(model_path).stem, api_key, timeout)
    return create_app(server), server
