# test_serve.py: `mixrt serve` started on loopback with the official openai client: completions,
# chat, streaming, the errors (400 naming the field, 401, 429 with Retry-After), a client that
# disconnects mid-stream freeing its slot, 8 concurrent greedy requests giving exactly the text
# each gives alone, a bounded load test where every request is answered or refused properly, and
# SIGTERM ending the server cleanly. Runs on the tiny random chat model.
import concurrent.futures
import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi", reason="the server extra (pip install 'mixrt[server]') is not installed")
openai = pytest.importorskip("openai", reason="the openai client (pip install openai) is not installed")
import httpx  # noqa: E402

import mixrt  # noqa: E402

KEY = "test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, model, *options):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "mixrt", "serve", str(model), "--port", str(self.port),
                                         "-t", "1", *options], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.process.stderr.read()}")
        raise RuntimeError("the server did not start within 60 s")

    def client(self, key=KEY, **options):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, **options)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)


@pytest.fixture(scope="module")
def server(random_chat_model):
    served = Served(random_chat_model, "--parallel", "4", "--api-key", KEY, "-c", "128")
    yield served
    served.stop()


@pytest.fixture(scope="module")
def model(random_chat_model):
    return mixrt.load(random_chat_model, n_ctx=128)


def test_completion_is_generate(server, model):
    out = server.client().completions.create(model="m", prompt="The history of", max_tokens=12, temperature=0)
    want = model.generate("The history of", max_tokens=12, temperature=0)
    assert out.choices[0].text == want and out.choices[0].finish_reason == want.finish_reason
    assert out.usage.prompt_tokens == want.prompt_tokens and out.usage.completion_tokens == want.completion_tokens
    assert out.object == "text_completion"


def test_chat_is_model_chat(server, model):
    messages = [{"role": "user", "content": "Hello there"}]
    out = server.client().chat.completions.create(model="m", messages=messages, max_tokens=10, temperature=0)
    want = model.chat(messages, max_tokens=10, temperature=0)
    assert out.choices[0].message.content == want and out.choices[0].message.role == "assistant"
    assert out.choices[0].finish_reason == want.finish_reason and out.object == "chat.completion"


def test_streams_as_openai_sends_them(server, model):
    client = server.client()
    chunks = list(client.completions.create(model="m", prompt="Once", max_tokens=15, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == model.generate("Once", max_tokens=15, temperature=0)
    assert chunks[-1].choices[0].finish_reason == "length"
    messages = [{"role": "user", "content": "Hi"}]
    chat = list(client.chat.completions.create(model="m", messages=messages, max_tokens=8, temperature=0, stream=True,
                                               stream_options={"include_usage": True}))
    assert chat[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chat) == model.chat(messages, max_tokens=8, temperature=0)
    assert chat[-1].usage.completion_tokens == 8
    raw = httpx.post(server.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                     json={"prompt": "x", "max_tokens": 3, "stream": True, "temperature": 0}).text
    events = [line for line in raw.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "text_completion"


@pytest.mark.parametrize("body, param, message", [
    ({"temperature": 3}, "temperature", r"temperature: expected a number in \[0.0, 2.0\], found 3"),
    ({"top_p": 0}, "top_p", "top_p: expected a number in"),
    ({"max_tokens": 0}, "max_tokens", "max_tokens: expected an integer >= 1, found 0"),
    ({"max_tokens": 1000}, "max_tokens", r"max_tokens: the prompt \(\d+ tokens\) plus max_tokens \(1000\) exceed"),
    ({"prompt": "word " * 200}, "prompt", r"the prompt is \d+ tokens, the context holds 128"),
    ({"prompt": 5}, "prompt", "prompt: expected a string, found int"),
    ({"n": 2}, "n", "n: only 1 choice per request is supported"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "stop: expected a string or a list of at most 4 strings"),
    ({"seed": "x"}, "seed", "seed: expected an integer"),
    ({"logprobs": 2}, "logprobs", "logprobs: not supported"),
])
def test_bad_parameters_are_400_naming_the_field(server, body, param, message):
    request = {"prompt": "Hi", "max_tokens": 4, **body}
    r = httpx.post(server.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, json=request)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert re.search(message, error["message"]), error["message"]


def test_bad_requests_do_not_kill_the_server(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    assert httpx.post(server.url + "/v1/completions", headers=headers, content=b"{not json").status_code == 400
    assert httpx.post(server.url + "/v1/chat/completions", headers=headers, json={"messages": "hi"}).status_code == 400
    assert httpx.post(server.url + "/v1/completions", headers=headers, json=[1, 2]).status_code == 400
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["backend"] == "cpu" and "one sequence at a time" in health["batching"]


def test_api_key(server):
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").completions.create(model="m", prompt="Hi", max_tokens=2)
    r = httpx.get(server.url + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert [m.id for m in server.client().models.list()] == ["model"]


def test_disconnect_frees_the_slot(server):
    with httpx.stream("POST", server.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"prompt": "Tell a long story", "max_tokens": 100, "stream": True}) as r:
        next(r.iter_lines())
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/health").json()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(server.url + "/health").json()["running"] == 0


def test_concurrent_greedy_requests_give_their_text_alone(server, model):
    prompts = [f"Request number {i} says" for i in range(8)]
    want = [model.generate(p, max_tokens=20, temperature=0) for p in prompts]
    client = server.client()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda p: client.completions.create(model="m", prompt=p, max_tokens=20, temperature=0)
                            .choices[0].text, prompts))
    assert got == [str(w) for w in want]
    metrics = httpx.get(server.url + "/metrics").text
    assert "mixrt_requests_total" in metrics and "mixrt_tokens_per_second" in metrics


def test_full_queue_is_429_and_load_loses_nothing(random_chat_model):
    """200 requests from 16 threads against 2 slots and a queue of 4: each is answered completely
    (finish_reason and the max_tokens tokens) or refused with 429 and Retry-After; none is lost."""
    served = Served(random_chat_model, "--parallel", "2", "--queue", "4", "-c", "64")
    try:
        def one(i):
            r = httpx.post(served.url + "/v1/completions", timeout=60,
                           json={"prompt": f"load {i}", "max_tokens": 8, "temperature": 0.7, "seed": i})
            if r.status_code == 200:
                body = r.json()
                complete = body["choices"][0]["finish_reason"] in ("stop", "length") and \
                    body["usage"]["completion_tokens"] <= 8
                return "answered" if complete else "broken"
            if r.status_code == 429 and r.headers.get("retry-after") == "1":
                return "refused"
            return f"status {r.status_code}"
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(one, range(200)))
        counts = {k: outcomes.count(k) for k in set(outcomes)}
        print(f"\nload test: 200 requests, 16 threads, {time.monotonic() - start:.1f} s: {counts}")
        assert set(counts) <= {"answered", "refused"} and counts.get("answered", 0) > 0
    finally:
        served.stop()


def test_sigterm_ends_the_server_cleanly(random_chat_model):
    served = Served(random_chat_model)
    with httpx.stream("POST", served.url + "/v1/completions",
                      json={"prompt": "Go on", "max_tokens": 40, "stream": True, "temperature": 0}) as r:
        lines = r.iter_lines()
        next(lines)
        served.process.send_signal(signal.SIGTERM)
        rest = [line for line in lines if line]
    # uvicorn shuts down gracefully, then ends the process by the signal it got, as servers do
    assert served.process.wait(30) in (0, -signal.SIGTERM)
    assert rest[-1] == "data: [DONE]"  # the running stream was finished, not cut
    want = mixrt.load(random_chat_model).generate("Go on", max_tokens=40, temperature=0)
    assert json.loads(rest[-2][6:])["choices"][0]["finish_reason"] == want.finish_reason
