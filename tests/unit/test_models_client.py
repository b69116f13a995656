"""OpenAIChatModel construction (keys, pricing, repr, pickling) and make_model; no request is sent."""

import asyncio
import pickle

import pytest

from engine.config import ModelConfig
from engine.errors import ConfigError, ModelError, PricingError
from engine.models import OpenAIChatModel, ResponseCache, make_model
from engine.testing.scripted import ScriptedModel
from engine.protocols import ChatModel, Message, SamplingParams

SECRET = "sk-unit-4f1c0ffee-secret"
ENV = "SYNTHSCALE_TEST_KEY"


def cfg(**kw):
    base = {"provider": "openai", "name": "gpt-5", "api_key_env": ENV}
    base.update(kw)
    return ModelConfig(**base)


def test_missing_key_for_remote_endpoint_names_the_variable(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ConfigError) as e:
        OpenAIChatModel(cfg())
    assert ENV in str(e.value) and "https://api.openai.com/v1" in str(e.value)
    with pytest.raises(ConfigError, match=ENV):
        OpenAIChatModel(cfg(base_url="https://example.openai.azure.com/openai/v1"))


def test_key_from_a_mounted_secret_file_never_enters_repr_or_pickle(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    secret = tmp_path / "openai-key"
    secret.write_text(SECRET + "\n")
    model = OpenAIChatModel(cfg(api_key_file=secret))
    assert model._read_key() == SECRET
    assert SECRET not in repr(model) and SECRET.encode() not in pickle.dumps(model)
    with pytest.raises(ConfigError, match="api_key_file .*missing.*cannot read it"):
        OpenAIChatModel(cfg(api_key_file=tmp_path / "missing"))


def test_local_endpoint_and_replay_need_no_key(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    assert OpenAIChatModel(cfg(base_url="http://127.0.0.1:8000/v1")).name == "gpt-5"
    assert OpenAIChatModel(cfg(base_url="http://vllm:8000/v1")).base_url == "http://vllm:8000/v1"
    assert OpenAIChatModel(cfg(cache_dir=tmp_path, replay_only=True)).name == "gpt-5"


def test_key_not_in_repr_str_or_pickle(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, SECRET)
    model = OpenAIChatModel(cfg(cache_dir=tmp_path))
    assert SECRET not in repr(model) and SECRET not in str(model)
    assert repr(model) == "OpenAIChatModel(name='gpt-5', base_url='https://api.openai.com/v1', api_key_env='SYNTHSCALE_TEST_KEY')"
    data = pickle.dumps(model)
    assert SECRET.encode() not in data
    monkeypatch.setenv(ENV, "sk-other")
    clone = pickle.loads(data)  # re-reads the environment on the receiving side
    assert clone.name == "gpt-5" and clone.cfg == model.cfg


def test_unpriced_model_fails_before_any_call(monkeypatch):
    monkeypatch.setenv(ENV, SECRET)
    with pytest.raises(PricingError, match="'my-model'"):
        OpenAIChatModel(cfg(name="my-model"))
    assert OpenAIChatModel(cfg(name="my-model", unknown_price="zero")).name == "my-model"


def test_replay_miss_raises_without_a_request(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    # base_url points nowhere: a request would fail with a connection error, not a cache miss
    model = OpenAIChatModel(cfg(base_url="http://127.0.0.1:9/v1", cache_dir=tmp_path, replay_only=True))
    with pytest.raises(ModelError, match="cache miss in replay mode"):
        model.complete([{"role": "user", "content": "hi"}], SamplingParams())
    with pytest.raises(ModelError, match="cache miss in replay mode"):
        asyncio.run(model.acomplete([{"role": "user", "content": "hi"}], SamplingParams()))


def test_make_model_openai(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, SECRET)
    model = make_model(cfg(cache_dir=tmp_path))
    assert isinstance(model, OpenAIChatModel) and isinstance(model, ChatModel)
    cache = ResponseCache(tmp_path / "other")
    assert make_model(cfg(), cache=cache)._cache is cache


def test_make_model_refuses_the_offline_policy_where_an_endpoint_is_needed():
    with pytest.raises(ConfigError, match="only plays rollout episodes"):
        make_model(ModelConfig(provider="heuristic"))


def test_openai_client_refuses_other_providers():
    with pytest.raises(ConfigError, match="'heuristic'"):
        OpenAIChatModel(ModelConfig(provider="heuristic"))


def test_scripted_model_in_order_then_exhausted():
    model = ScriptedModel(["one", "two"], name="s")
    msgs: list[Message] = [{"role": "user", "content": "q"}]
    params = SamplingParams(seed=1)
    assert model.complete(msgs, params).text == "one"
    assert asyncio.run(model.acomplete(msgs, params)).text == "two"
    assert model.calls == [(msgs, params), (msgs, params)]
    assert model.remaining == 0
    with pytest.raises(ModelError, match="no reply left after 2 calls"):
        model.complete(msgs, params)
    assert isinstance(model, ChatModel)
