"""ChatCompletionsServer serving a ChatModel, driven by the production client and by the raw openai SDK."""

import asyncio
import json
import urllib.error
import urllib.request

import openai
import pytest

from engine.config import ModelConfig
from engine.errors import ModelError
from engine.models import ChatCompletionsServer, OpenAIChatModel
from engine.testing.scripted import ScriptedModel
from engine.protocols import Completion, SampleKey, SamplingParams, Usage

MSGS = [{"role": "system", "content": "you are a test"}, {"role": "user", "content": "go"}]


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)

    async def asleep(self, seconds):
        self.append(seconds)


class ReasoningModel:
    """A real ChatModel that thinks out loud and counts tokens, to check the fields cross the wire."""

    name = "thinker"

    def complete(self, messages, params):
        return Completion(text=f"answer to {messages[-1]['content']}", reasoning="let me think", finish_reason="stop",
                          usage=Usage(prompt_tokens=12, completion_tokens=7, reasoning_tokens=3), model=self.name)

    async def acomplete(self, messages, params):
        return self.complete(messages, params)


def client_for(srv, name, sleeps=None, **kw):
    cfg = ModelConfig(provider="openai", name=name, base_url=srv.base_url, api_key_env="SYNTHSCALE_UNSET_KEY",
                      unknown_price="zero", backoff_base_s=0.01, **kw)
    sleeps = sleeps if sleeps is not None else Sleeps()
    return OpenAIChatModel(cfg, sleep=sleeps, async_sleep=sleeps.asleep)


def post(url, payload):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_round_trip_rebuilds_sampling_params(monkeypatch):
    monkeypatch.delenv("SYNTHSCALE_UNSET_KEY", raising=False)
    scripted = ScriptedModel(["first", "second"], name="scripted")
    with ChatCompletionsServer(scripted) as srv:
        assert srv.base_url.startswith("http://127.0.0.1:") and srv.base_url.endswith("/v1")
        model = client_for(srv, "scripted")
        params = SamplingParams(temperature=0.3, top_p=0.8, max_tokens=99, seed=42, stop=("STOP", "END"),
                                sample_key=SampleKey(episode_id="ep-7", step=3, attempt=1))
        a = model.complete(MSGS, params)
        b = asyncio.run(model.acomplete(MSGS, SamplingParams()))
    assert (a.text, a.finish_reason, a.model, b.text) == ("first", "stop", "scripted", "second")
    assert scripted.calls == [(MSGS, params), (MSGS, SamplingParams())]


def test_reasoning_model_settings_and_reasoning_cross_the_wire():
    thinker = ReasoningModel()
    with ChatCompletionsServer(thinker) as srv:
        model = client_for(srv, "thinker", reasoning_model=True)
        c = model.complete(MSGS, SamplingParams(temperature=1.0, max_tokens=10, reasoning_effort="minimal"))
    assert (c.text, c.reasoning) == ("answer to go", "let me think")
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.reasoning_tokens) == (12, 7, 3)


def test_raw_sdk_with_extra_body_sample_key_and_model_list():
    scripted = ScriptedModel(["x"], name="served")
    with ChatCompletionsServer(scripted) as srv:
        sdk = openai.OpenAI(api_key="EMPTY", base_url=srv.base_url, max_retries=0)
        assert [m.id for m in sdk.models.list()] == ["served"]
        out = sdk.chat.completions.create(
            model="served", messages=MSGS, max_tokens=5, seed=1,
            extra_body={"sample_key": {"episode_id": "e", "step": 2}},
        )
        sdk.close()
    assert out.choices[0].message.content == "x" and out.object == "chat.completion" and out.model == "served"
    assert out.usage.total_tokens == sum(len(m["content"]) for m in MSGS) // 4  # the scripted estimate
    assert scripted.calls[0][1] == SamplingParams(max_tokens=5, seed=1, sample_key=SampleKey(episode_id="e", step=2))


def test_wrong_model_name_is_refused_at_once():
    with ChatCompletionsServer(ScriptedModel(["x"], name="served")) as srv:
        sleeps = Sleeps()
        with pytest.raises(ModelError, match="HTTP 404: the model 'other' does not exist; this server serves 'served'"):
            client_for(srv, "other", sleeps).complete(MSGS, SamplingParams())
    assert sleeps == []


def test_failing_served_model_is_a_retried_server_error():
    scripted = ScriptedModel(["only"], name="scripted")
    with ChatCompletionsServer(scripted) as srv:
        sleeps = Sleeps()
        model = client_for(srv, "scripted", sleeps, max_retries=1)
        assert model.complete(MSGS, SamplingParams()).text == "only"
        with pytest.raises(ModelError, match="gave up after 2 attempts; last error: HTTP 500: ModelError: scripted"):
            model.complete(MSGS, SamplingParams())
    assert len(sleeps) == 1


def test_protocol_errors_over_http():
    with ChatCompletionsServer(ScriptedModel(["x"], name="m")) as srv:
        url = srv.base_url + "/chat/completions"
        status, body = post(url, {"model": "m", "messages": MSGS, "stream": True})
        assert (status, body["error"]["param"], body["error"]["type"]) == (400, "stream", "invalid_request_error")
        status, body = post(url, {"model": "m", "messages": []})
        assert (status, body["error"]["param"]) == (400, "messages")
        status, body = post(srv.base_url + "/completions", {"model": "m"})
        assert status == 404
        req = urllib.request.Request(url, data=b"{not json", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 400
        status, body = post(url, {"model": "m", "messages": MSGS})
        assert status == 200 and body["choices"][0]["message"] == {"role": "assistant", "content": "x"}


def test_stop_then_restart_on_a_new_port():
    srv = ChatCompletionsServer(ScriptedModel(["a", "b"], name="m"))
    with pytest.raises(RuntimeError, match="not started"):
        _ = srv.base_url
    with srv:
        model = client_for(srv, "m", max_retries=0)
        assert model.complete(MSGS, SamplingParams()).text == "a"
    # the client's pooled keep-alive connection was closed with the server: nothing answers any more
    with pytest.raises(ModelError, match="gave up after 1 attempt; last error: connection error"):
        model.complete(MSGS, SamplingParams())
    with srv:
        assert client_for(srv, "m").complete(MSGS, SamplingParams()).text == "b"
