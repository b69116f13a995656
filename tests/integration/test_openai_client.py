"""OpenAIChatModel against a loopback HTTP server speaking the chat-completions protocol (pytest-httpserver)."""

import asyncio
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from engine.config import ModelConfig
from engine.errors import ModelError
from engine.models import OpenAIChatModel
from engine.protocols import SampleKey, SamplingParams

SECRET = "sk-integration-9d2b7c-secret"
ENV = "SYNTHSCALE_IT_KEY"
PATH = "/v1/chat/completions"
MSGS = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def server():
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.start()
    yield srv
    srv.clear()
    srv.stop()


@pytest.fixture
def http(server):
    server.clear()
    yield server
    server.check_assertions()
    server.clear()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(ENV, SECRET)


class Sleeps(list):
    """Records the waits the client asks for instead of waiting."""

    def __call__(self, seconds):
        self.append(seconds)

    async def asleep(self, seconds):
        self.append(seconds)


class CeilingRng:
    def uniform(self, a, b):
        return b


def make(http, sleeps=None, **kw):
    base = {
        "provider": "openai", "name": "gpt-5", "api_key_env": ENV, "base_url": http.url_for("/v1"),
        "max_retries": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.04, "timeout_s": 10.0,
    }
    base.update(kw)
    sleeps = sleeps if sleeps is not None else Sleeps()
    return OpenAIChatModel(ModelConfig(**base), sleep=sleeps, async_sleep=sleeps.asleep, rng=CeilingRng())


def reply(content="ok", reasoning=None, usage=None):
    message = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-5",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    body["usage"] = usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    return body


def sent(http, i=-1):
    return json.loads(http.log[i][0].get_data())


def test_normal_reply_with_usage_and_cost(http):
    usage = {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
             "completion_tokens_details": {"reasoning_tokens": 50}, "prompt_tokens_details": {"cached_tokens": 400}}
    http.expect_ordered_request(PATH, method="POST").respond_with_json(reply("hi there", usage=usage))
    model = make(http)
    params = SamplingParams(temperature=1.0, max_tokens=64, seed=5, sample_key=SampleKey(episode_id="ep", step=0))
    c = model.complete(MSGS, params)
    assert (c.text, c.reasoning, c.finish_reason, c.model, c.cached) == ("hi there", None, "stop", "gpt-5", False)
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.reasoning_tokens) == (1000, 200, 50)
    assert c.cost_usd == pytest.approx((600 * 1.25 + 400 * 0.125 + 200 * 10.0) / 1e6, abs=1e-15)
    assert c.latency_s > 0
    request = http.log[0][0]
    assert json.loads(request.get_data()) == {"model": "gpt-5", "messages": MSGS, "max_completion_tokens": 64, "seed": 5}
    assert request.headers["Authorization"] == f"Bearer {SECRET}"
    assert request.headers["X-Synthscale-Sample-Key"] == '{"attempt":0,"episode_id":"ep","step":0}'


def test_429_honours_retry_after_then_succeeds(http):
    http.expect_ordered_request(PATH).respond_with_json({"error": {"message": "slow down"}}, status=429,
                                                        headers={"Retry-After": "2"})
    http.expect_ordered_request(PATH).respond_with_json({"error": {"message": "slow down"}}, status=429,
                                                        headers={"retry-after-ms": "250"})
    http.expect_ordered_request(PATH).respond_with_json(reply("done"))
    sleeps = Sleeps()
    assert make(http, sleeps).complete(MSGS, SamplingParams()).text == "done"
    assert sleeps == [2.0, 0.25]
    assert len(http.log) == 3


def test_500_then_success_backs_off_exponentially(http):
    for _ in range(2):
        http.expect_ordered_request(PATH).respond_with_json({"error": {"message": "oops"}}, status=500)
    http.expect_ordered_request(PATH).respond_with_json(reply("fine"))
    sleeps = Sleeps()
    assert make(http, sleeps).complete(MSGS, SamplingParams()).text == "fine"
    assert sleeps == [0.01, 0.02]  # the ceilings of full jitter: base, then twice base


def test_real_sleeps_are_the_requested_ones(http):
    """With the default sleep the client really waits; we record what it asked for, not the clock."""
    http.expect_ordered_request(PATH).respond_with_json({"error": {"message": "busy"}}, status=503)
    http.expect_ordered_request(PATH).respond_with_json(reply("after wait"))
    asked = []

    def sleep(seconds):
        asked.append(seconds)
        time.sleep(seconds)

    cfg = ModelConfig(provider="openai", name="gpt-5", api_key_env=ENV, base_url=http.url_for("/v1"),
                      backoff_base_s=0.05, backoff_max_s=0.05)
    model = OpenAIChatModel(cfg, sleep=sleep)
    assert model.complete(MSGS, SamplingParams()).text == "after wait"
    assert len(asked) == 1 and 0.0 <= asked[0] <= 0.05


def test_slow_reply_beyond_timeout_is_retried(http):
    release = threading.Event()
    count = []

    def handler(request: Request) -> Response:
        count.append(1)
        if len(count) == 1:
            release.wait(10)  # held until the retry arrives, i.e. after the client gave up on this one
            return Response(json.dumps(reply("too late")), content_type="application/json")
        release.set()
        return Response(json.dumps(reply("second")), content_type="application/json")

    http.expect_request(PATH).respond_with_handler(handler)
    sleeps = Sleeps()
    c = make(http, sleeps, timeout_s=0.3).complete(MSGS, SamplingParams())
    assert c.text == "second"
    assert len(count) == 2 and len(sleeps) == 1


@pytest.mark.parametrize(
    "bad",
    [
        Response("<html>502 bad gateway</html>", status=200, content_type="text/html"),
        Response(json.dumps({"id": "x", "choices": []}), status=200, content_type="application/json"),
        Response(json.dumps(reply(content=None)), status=200, content_type="application/json"),
    ],
    ids=["not-json", "no-choices", "null-content"],
)
def test_malformed_reply_then_success(http, bad):
    http.expect_ordered_request(PATH).respond_with_response(bad)
    http.expect_ordered_request(PATH).respond_with_json(reply("good"))
    sleeps = Sleeps()
    assert make(http, sleeps).complete(MSGS, SamplingParams()).text == "good"
    assert len(sleeps) == 1


def test_persistent_500_gives_up_with_attempt_count(http):
    http.expect_request(PATH).respond_with_json({"error": {"message": "engine overloaded"}}, status=500)
    sleeps = Sleeps()
    with pytest.raises(ModelError) as e:
        make(http, sleeps, max_retries=2).complete(MSGS, SamplingParams())
    assert "gave up after 3 attempts" in str(e.value)
    assert "HTTP 500: engine overloaded" in str(e.value)
    assert len(http.log) == 3 and sleeps == [0.01, 0.02]


def test_persistent_malformed_gives_up(http):
    http.expect_request(PATH).respond_with_data("nope", content_type="text/plain")
    with pytest.raises(ModelError, match="gave up after 2 attempts; last error: malformed reply: body is not JSON"):
        make(http, max_retries=1).complete(MSGS, SamplingParams())


def test_400_fails_at_once(http):
    http.expect_request(PATH).respond_with_json(
        {"error": {"message": "messages[1].content is too long", "type": "invalid_request_error"}}, status=400)
    sleeps = Sleeps()
    with pytest.raises(ModelError) as e:
        make(http, sleeps).complete(MSGS, SamplingParams())
    assert "HTTP 400: messages[1].content is too long" in str(e.value) and "not retried" in str(e.value)
    assert len(http.log) == 1 and sleeps == []


def test_401_hints_at_the_key_variable(http):
    http.expect_request(PATH).respond_with_json({"error": {"message": "Incorrect API key provided"}}, status=401)
    with pytest.raises(ModelError, match=f"HTTP 401: Incorrect API key provided \\(is {ENV} the right key\\?\\)"):
        make(http).complete(MSGS, SamplingParams())


def test_max_completion_tokens_rejected_falls_back_to_max_tokens(http):
    http.expect_ordered_request(PATH).respond_with_json(
        {"error": {"message": "Unrecognized request argument: max_completion_tokens"}}, status=400)
    http.expect_ordered_request(PATH).respond_with_json(reply("one"))
    http.expect_ordered_request(PATH).respond_with_json(reply("two"))
    sleeps = Sleeps()
    model = make(http, sleeps, name="Qwen/Qwen3-8B", unknown_price="zero", max_retries=0)
    params = SamplingParams(temperature=0.0, max_tokens=32)
    assert model.complete(MSGS, params).text == "one"
    assert model.complete(MSGS, params).text == "two"
    assert [sent(http, i).get("max_completion_tokens") for i in range(3)] == [32, None, None]
    assert [sent(http, i).get("max_tokens") for i in range(3)] == [None, 32, 32]
    assert sent(http, 2)["temperature"] == 0.0 and sleeps == []


def test_connection_refused_is_retried_then_fails():
    with socket.socket() as s:  # a port that was free a moment ago and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ModelConfig(provider="openai", name="gpt-5", api_key_env=ENV, base_url=f"http://127.0.0.1:{port}/v1",
                      max_retries=2, backoff_base_s=0.01)
    sleeps = Sleeps()
    with pytest.raises(ModelError, match="gave up after 3 attempts; last error: connection error"):
        OpenAIChatModel(cfg, sleep=sleeps).complete(MSGS, SamplingParams())
    assert len(sleeps) == 2


def test_reasoning_content_is_separated(http):
    http.expect_ordered_request(PATH).respond_with_json(reply("final answer", reasoning="step 1, step 2"))
    body = reply("x")
    body["choices"][0]["message"]["reasoning"] = "other field"
    http.expect_ordered_request(PATH).respond_with_json(body)
    model = make(http, name="Qwen/Qwen3-8B", unknown_price="zero")
    first = model.complete(MSGS, SamplingParams())
    assert (first.text, first.reasoning) == ("final answer", "step 1, step 2")
    assert model.complete(MSGS, SamplingParams()).reasoning == "other field"


def in_flight_counter():
    """A handler that records how many requests the server holds at once, and answers with the episode id."""
    lock = threading.Condition()
    state = {"now": 0, "max": 0}

    def handler(request: Request) -> Response:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            lock.notify_all()
            lock.wait_for(lambda: state["now"] >= 2, timeout=5)  # let the second slot fill
            lock.wait_for(lambda: state["now"] >= 3, timeout=0.2)  # a third would mean the limit leaked
            state["now"] -= 1
            lock.notify_all()
        episode = json.loads(request.headers["X-Synthscale-Sample-Key"])["episode_id"]
        return Response(json.dumps(reply(episode)), content_type="application/json")

    return handler, state


def test_sync_calls_respect_the_concurrency_limit(http):
    handler, state = in_flight_counter()
    http.expect_request(PATH).respond_with_handler(handler)
    model = make(http, max_concurrency=2)
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(model.complete, MSGS, SamplingParams(sample_key=SampleKey(episode_id=f"e{i}", step=0)))
                   for i in range(6)]
        texts = [f.result().text for f in futures]
    assert texts == [f"e{i}" for i in range(6)]
    assert state["max"] == 2 and len(http.log) == 6


def test_async_twin_respects_the_concurrency_limit(http):
    handler, state = in_flight_counter()
    http.expect_request(PATH).respond_with_handler(handler)
    model = make(http, max_concurrency=2)

    async def main():
        calls = [model.acomplete(MSGS, SamplingParams(sample_key=SampleKey(episode_id=f"e{i}", step=0))) for i in range(6)]
        return await asyncio.gather(*calls)

    results = asyncio.run(main())
    assert [c.text for c in results] == [f"e{i}" for i in range(6)]
    assert state["max"] == 2 and len(http.log) == 6


def test_async_retry_uses_the_async_sleep(http):
    http.expect_ordered_request(PATH).respond_with_json({"error": {"message": "wait"}}, status=429,
                                                        headers={"Retry-After": "1"})
    http.expect_ordered_request(PATH).respond_with_json(reply("async ok"))
    sleeps = Sleeps()
    model = make(http, sleeps)
    assert asyncio.run(model.acomplete(MSGS, SamplingParams())).text == "async ok"
    assert sleeps == [1.0]
    # a second event loop gets its own client and semaphore
    http.expect_ordered_request(PATH).respond_with_json(reply("again"))
    assert asyncio.run(model.acomplete(MSGS, SamplingParams())).text == "again"


def test_cache_hits_skip_the_server_and_keep_episodes_apart(http, tmp_path):
    http.expect_request(PATH).respond_with_json(reply("sampled", usage={"prompt_tokens": 100, "completion_tokens": 10}))
    key = SampleKey(episode_id="ep-a", step=0)
    params = SamplingParams(temperature=1.0, sample_key=key)
    first = make(http, cache_dir=tmp_path).complete(MSGS, params)
    assert first.cached is False and first.cost_usd > 0 and len(http.log) == 1

    rerun = make(http, cache_dir=tmp_path)  # a fresh client on the same cache: the re-run of the episode
    hit = rerun.complete(MSGS, params)
    assert (hit.text, hit.cached, hit.cost_usd, hit.usage) == ("sampled", True, 0.0, first.usage)
    assert asyncio.run(rerun.acomplete(MSGS, params)).cached is True
    assert len(http.log) == 1  # the server saw no request for the hits

    rerun.complete(MSGS, params.model_copy(update={"sample_key": SampleKey(episode_id="ep-b", step=0)}))
    rerun.complete(MSGS, params.model_copy(update={"sample_key": SampleKey(episode_id="ep-a", step=1)}))
    assert len(http.log) == 3
    assert len(list(tmp_path.rglob("*.json"))) == 3


def test_replay_mode_serves_hits_and_refuses_misses(http, tmp_path):
    http.expect_request(PATH).respond_with_json(reply("recorded"))
    params = SamplingParams(sample_key=SampleKey(episode_id="ep", step=0))
    make(http, cache_dir=tmp_path).complete(MSGS, params)
    replay = make(http, cache_dir=tmp_path, replay_only=True)
    assert replay.complete(MSGS, params).text == "recorded"
    with pytest.raises(ModelError, match="cache miss in replay mode"):
        replay.complete(MSGS, params.model_copy(update={"sample_key": SampleKey(episode_id="ep", step=1)}))
    assert len(http.log) == 1


def test_api_key_never_reaches_logs_or_cache(http, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    http.expect_ordered_request(PATH).respond_with_json({"error": {"message": "busy"}}, status=503)
    http.expect_ordered_request(PATH).respond_with_json(reply("cached reply"))
    http.expect_ordered_request(PATH).respond_with_json({"error": {"message": "bad key"}}, status=401)
    model = make(http, cache_dir=tmp_path)
    model.complete(MSGS, SamplingParams(sample_key=SampleKey(episode_id="ep", step=0)))
    with pytest.raises(ModelError) as e:
        model.complete(MSGS, SamplingParams(sample_key=SampleKey(episode_id="ep", step=1)))
    assert http.log[0][0].headers["Authorization"] == f"Bearer {SECRET}"  # the key was really sent
    assert "attempt 1 of 4 failed" in caplog.text  # the retry was logged
    assert SECRET not in caplog.text and SECRET not in str(e.value) and SECRET not in repr(model)
    files = list(tmp_path.rglob("*"))
    assert any(f.suffix == ".json" for f in files)
    for f in files:
        if f.is_file():
            assert SECRET not in f.read_text()


def test_local_server_without_key_gets_a_placeholder(http, monkeypatch):
    monkeypatch.delenv(ENV)
    http.expect_request(PATH).respond_with_json(reply("keyless"))
    assert make(http).complete(MSGS, SamplingParams()).text == "keyless"
    assert http.log[0][0].headers["Authorization"] == "Bearer EMPTY"
