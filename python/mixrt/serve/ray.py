# ray.py: scale-out on Ray Serve (extra `mixrt[ray]`): N replicas of the OpenAI-compatible server
# (app.py), each a process with the model and its own batched context, behind Ray Serve's HTTP
# proxy, with the same routes; Ray places the replicas on the cluster's machines and, with an
# autoscaling config, adds and removes them with the load. Tested by tests/test_serve_ray.py.
#
#   from ray import serve
#   from mixrt.serve.ray import application
#   serve.run(application("model.mixrt", num_replicas=2), route_prefix="/")
#   # or: serve run mixrt.serve.ray:default_application model_path=model.mixrt num_replicas=4
from __future__ import annotations

from typing import Optional


def application(model_path: str, num_replicas: Optional[int] = 1, autoscaling_config: Optional[dict] = None,
                parallel: int = 4, n_ctx: Optional[int] = None, api_key: Optional[str] = None, max_queue: int = 64,
                timeout: float = 600.0, threads: Optional[int] = None, num_cpus: Optional[float] = None):
    """A Ray Serve application serving model_path (a path every node can read) with num_replicas
    replicas, or autoscaling_config (Ray Serve's: min_replicas, max_replicas,
    target_ongoing_requests, ...) instead; each replica runs the server of mixrt.serve.build_app
    with these options and reserves num_cpus CPUs (default: threads, or 1)."""
    from ray import serve

    def build():
        from . import build_app

        app, _ = build_app(model_path, parallel=parallel, n_ctx=n_ctx, api_key=api_key, max_queue=max_queue,
                           timeout=timeout, threads=threads)
        return app

    options = {"ray_actor_options": {"num_cpus": num_cpus if num_cpus is not None else (threads or 1)},
               "max_ongoing_requests": parallel + max_queue}
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
    else:
        options["num_replicas"] = num_replicas
    return serve.deployment(serve.ingress(build)(), name="mixrt", **options).bind()


def default_application(args: dict):
    """For `serve run mixrt.serve.ray:default_application key=value ...` (and Serve config files):
    application() with the arguments given as strings."""
    kinds = {"num_replicas": int, "parallel": int, "n_ctx": int, "max_queue": int, "threads": int,
             "timeout": float, "num_cpus": float}
    return application(**{key: kinds.get(key, str)(value) for key, value in args.items()})
