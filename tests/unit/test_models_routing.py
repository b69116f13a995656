"""Rendezvous routing: stickiness, spread, minimal remapping, failover on connection errors, make_routed_model."""

import asyncio
import pickle
from collections import Counter

import pytest

from engine.config import ModelConfig
from engine.errors import ConfigError, ModelError
from engine.models import OpenAIChatModel
from engine.testing.scripted import ScriptedModel
from engine.models.routing import (
    RoutedChatModel,
    is_connection_failure,
    make_routed_model,
    rendezvous_order,
    routing_key,
)
from engine.protocols import ChatModel, Completion, SampleKey, SamplingParams

SERVERS = [f"http://10.0.0.{i}:8000/v1" for i in range(1, 5)]
EPISODES = [f"task-{i % 7}:episode-{i}" for i in range(1000)]


class EchoServer:
    """A real ChatModel that answers with its own name, records the episodes it saw, and can go away."""

    name = "student"

    def __init__(self, url):
        self.url = url
        self.seen = []
        self.unreachable = False

    def complete(self, messages, params):
        if self.unreachable:
            raise ModelError(f"{self.url}: connection refused") from ConnectionRefusedError(111, "Connection refused")
        self.seen.append(params.sample_key.episode_id if params.sample_key else None)
        return Completion(text=self.url, model=self.name)

    async def acomplete(self, messages, params):
        return self.complete(messages, params)


def params(episode, step=0):
    return SamplingParams(sample_key=SampleKey(episode_id=episode, step=step))


def router_over(urls, **kw):
    return RoutedChatModel({u: EchoServer(u) for u in urls}, **kw)


def test_same_episode_same_server_across_steps_and_routers():
    a, b = router_over(SERVERS), router_over(list(reversed(SERVERS)))
    for ep in EPISODES:
        first = a.choose(ep)
        assert b.choose(ep) == first
        assert {a.complete([], params(ep, step)).text for step in range(3)} == {first}


def test_load_spreads_evenly_over_four_servers():
    counts = Counter(rendezvous_order(ep, SERVERS)[0] for ep in EPISODES)
    assert set(counts) == set(SERVERS)
    # 250 expected each; a binomial(1000, 1/4) stays within ±60 with overwhelming probability (4.4 sigma)
    assert all(190 <= c <= 310 for c in counts.values()), counts


def test_removing_a_server_moves_only_its_episodes():
    before = {ep: rendezvous_order(ep, SERVERS)[0] for ep in EPISODES}
    gone = SERVERS[2]
    after = {ep: rendezvous_order(ep, [s for s in SERVERS if s != gone])[0] for ep in EPISODES}
    moved = {ep for ep in EPISODES if before[ep] != after[ep]}
    assert moved == {ep for ep in EPISODES if before[ep] == gone}
    assert moved  # the removed server did hold episodes
    # each moved episode goes to its second choice
    assert all(after[ep] == rendezvous_order(ep, SERVERS)[1] for ep in moved)


def test_adding_a_server_takes_episodes_only_onto_itself():
    before = {ep: rendezvous_order(ep, SERVERS[:3])[0] for ep in EPISODES}
    after = {ep: rendezvous_order(ep, SERVERS)[0] for ep in EPISODES}
    assert {after[ep] for ep in EPISODES if before[ep] != after[ep]} == {SERVERS[3]}


def test_routing_key_without_sample_key_uses_the_prompt_prefix():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "task"}]
    longer = [*msgs, {"role": "assistant", "content": "x"}, {"role": "user", "content": "obs"}]
    assert routing_key(msgs, SamplingParams()) == routing_key(longer, SamplingParams())
    assert routing_key(msgs, SamplingParams()) != routing_key([msgs[0]], SamplingParams())
    assert routing_key(msgs, params("ep-9")) == "ep-9"


def test_connection_failure_marks_down_and_reroutes_only_that_servers_episodes():
    clock = [0.0]
    router = router_over(SERVERS, revive_after_s=30.0, clock=lambda: clock[0])
    home = {ep: router.choose(ep) for ep in EPISODES[:200]}
    dead = SERVERS[1]
    router.servers[dead].unreachable = True
    for ep in EPISODES[:200]:
        reply = router.complete([], params(ep, 1)).text
        expected = home[ep] if home[ep] != dead else rendezvous_order(ep, SERVERS)[1]
        assert reply == expected
    assert router.up_servers() == [s for s in SERVERS if s != dead]
    assert router.servers[dead].seen == []
    # after revive_after_s the server is tried again; it answers now, so its episodes come back
    router.servers[dead].unreachable = False
    clock[0] = 30.0
    back = next(ep for ep in EPISODES[:200] if home[ep] == dead)
    assert router.complete([], params(back, 2)).text == dead


def test_async_path_fails_over_too():
    router = router_over(SERVERS[:2], revive_after_s=None)
    ep = next(e for e in EPISODES if router.choose(e) == SERVERS[0])
    router.servers[SERVERS[0]].unreachable = True
    assert asyncio.run(router.acomplete([], params(ep))).text == SERVERS[1]
    assert router.up_servers() == [SERVERS[1]]
    router.mark_up(SERVERS[0])
    router.servers[SERVERS[0]].unreachable = False
    assert asyncio.run(router.acomplete([], params(ep))).text == SERVERS[0]


def test_all_servers_unreachable_is_a_model_error_naming_them():
    router = router_over(SERVERS[:2], revive_after_s=None)
    for s in router.servers.values():
        s.unreachable = True
    with pytest.raises(ModelError, match="no server could be connected") as err:
        router.complete([], params("ep-1"))
    assert SERVERS[0] in str(err.value) and isinstance(err.value.__cause__, ModelError)
    with pytest.raises(ModelError, match="marked down"):
        router.complete([], params("ep-2"))


def test_other_errors_propagate_without_marking_down():
    model = ScriptedModel([], name="student")
    router = RoutedChatModel({"only": model})
    with pytest.raises(ModelError, match="no reply left"):
        router.complete([], params("ep"))
    assert router.up_servers() == ["only"]


def test_is_connection_failure_reads_the_cause_chain():
    import httpx2
    import openai

    request = httpx2.Request("POST", "http://10.0.0.1/v1/chat/completions")
    conn = openai.APIConnectionError(request=request)
    timeout = openai.APITimeoutError(request=request)
    wrapped = ModelError("gave up")
    wrapped.__cause__ = conn
    assert is_connection_failure(wrapped) and is_connection_failure(ConnectionResetError())
    assert not is_connection_failure(timeout) and not is_connection_failure(ModelError("429"))


def test_a_client_that_reaches_nothing_says_unreachable_so_a_router_fails_over(monkeypatch):
    from engine.errors import ModelUnreachableError
    from engine.protocols import Message
    from engine.serving.launch import free_port

    monkeypatch.delenv("SYNTHSCALE_UNSET_KEY", raising=False)
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}/v1"  # nothing listens there
    cfg = ModelConfig(provider="openai", name="student", base_url=dead, api_key_env="SYNTHSCALE_UNSET_KEY", max_retries=1, unknown_price="zero",
                      backoff_base_s=0.01, backoff_max_s=0.01)
    client = OpenAIChatModel(cfg)
    with pytest.raises(ModelUnreachableError, match="gave up after 2 attempts") as caught:
        client.complete([Message(role="user", content="hi")], SamplingParams())
    assert is_connection_failure(caught.value) and caught.value.__cause__ is None  # no SDK error chained
    live = EchoServer("live")
    router = RoutedChatModel({dead: client, "live": live})
    params = SamplingParams(sample_key=SampleKey(episode_id=next(
        e for e in EPISODES if rendezvous_order(e, [dead, "live"])[0] == dead), step=0))
    assert router.complete([Message(role="user", content="hi")], params).text == "live"
    assert router.up_servers() == ["live"]


def test_router_rejects_bad_server_sets():
    with pytest.raises(ConfigError, match="at least one server"):
        RoutedChatModel({})
    with pytest.raises(ConfigError, match="one model name"):
        RoutedChatModel({"a": ScriptedModel([], name="x"), "b": ScriptedModel([], name="y")})
    with pytest.raises(ConfigError, match="revive_after_s"):
        router_over(SERVERS, revive_after_s=0)


def test_make_routed_model_builds_one_client_per_url(monkeypatch, tmp_path):
    monkeypatch.delenv("SYNTHSCALE_UNSET_KEY", raising=False)
    cfg = ModelConfig(provider="openai", name="student", api_key_env="SYNTHSCALE_UNSET_KEY", unknown_price="zero",
                      cache_dir=tmp_path / "cache")
    router = make_routed_model(cfg, SERVERS[:2])
    assert isinstance(router, ChatModel) and router.name == "student"
    clients = list(router.servers.values())
    assert all(isinstance(c, OpenAIChatModel) for c in clients)
    assert [c.base_url for c in clients] == SERVERS[:2]
    assert clients[0]._cache is clients[1]._cache is not None
    again = pickle.loads(pickle.dumps(router))
    assert sorted(again.servers) == sorted(SERVERS[:2]) and again.choose("ep-3") == router.choose("ep-3")
    router.close()


@pytest.mark.parametrize(
    ("urls", "cfg", "words"),
    [
        ([], ModelConfig(provider="openai", name="s", unknown_price="zero"), "no base URLs"),
        (SERVERS[:1] * 2, ModelConfig(provider="openai", name="s", unknown_price="zero"), "duplicate"),
        (SERVERS[:1], ModelConfig(), "provider 'openai'"),
    ],
)
def test_make_routed_model_rejects(urls, cfg, words):
    with pytest.raises(ConfigError, match=words):
        make_routed_model(cfg, urls)
