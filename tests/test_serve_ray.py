# test_serve_ray.py: the Ray Serve deployment (mixrt.serve.ray) with 2 replicas under
# ray.init(num_cpus=2) on loopback: the OpenAI routes answer through Ray's HTTP proxy, and both
# replicas (different processes) serve requests.
import socket
import time

import pytest

ray = pytest.importorskip("ray", reason="Ray Serve (pip install 'mixrt[ray]') is not installed")
pytest.importorskip("fastapi", reason="the server extra (pip install 'mixrt[server]') is not installed")
import httpx  # noqa: E402
from ray import serve  # noqa: E402

import mixrt  # noqa: E402
from mixrt.serve.ray import application  # noqa: E402


def test_two_replicas_answer(random_chat_model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(application(str(random_chat_model), num_replicas=2, n_ctx=64, threads=1), route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        replicas = set()
        deadline = time.monotonic() + 60
        while len(replicas) < 2 and time.monotonic() < deadline:
            replicas.add(httpx.get(url + "/health", timeout=10).json()["replica"])
        assert len(replicas) == 2, replicas
        out = httpx.post(url + "/v1/completions", timeout=60,
                         json={"prompt": "The history of", "max_tokens": 8, "temperature": 0}).json()
        want = mixrt.load(random_chat_model, n_ctx=64).generate("The history of", max_tokens=8, temperature=0)
        assert out["choices"][0]["text"] == want
        print(f"\nRay Serve: 2 replicas answered: {sorted(replicas)}")
    finally:
        serve.shutdown()
        ray.shutdown()
