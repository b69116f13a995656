"""Sticky routing of episodes over several model servers: reads each call's sample key, sends the call to one
of several ChatModels (one OpenAIChatModel per server) and returns its Completion.

The server of a call is chosen by rendezvous (highest-random-weight) hashing of the episode id: every server
gets the weight blake2b(server key, episode id) and the heaviest wins. So:
- one episode always lands on the same server, whose prefix cache then holds its growing prompt;
- episodes spread evenly over servers (each is a uniform draw);
- removing a server moves only the episodes that were on it (each to its next-heaviest server), and adding
  one takes over only about 1/n of the episodes; no other episode changes server.
A call without a sample key is routed by its first two messages (system prompt and task), so calls that
share a prompt prefix still meet on one server.

Failover: when a call fails because its server cannot be connected to (openai.APIConnectionError other than
a timeout, or a ConnectionError, anywhere in the error's cause chain), that server is marked down, the call
is re-sent to the episode's next server in rendezvous order, and the rest of the episode stays there. A down
server is tried again after `revive_after_s` (None: only after `mark_up`). The backend's own retries come
first: OpenAIChatModel retries connection errors `model.max_retries` times with backoff before giving up,
so keep max_retries small for a pool of student servers if fast failover matters. Timeouts and HTTP errors
do not mark a server down: a slow or overloaded server is still the episode's server.

>>> rendezvous_order("episode-1", ["a", "b"]) == rendezvous_order("episode-1", ["b", "a"])
True
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import openai

from engine.config import ModelConfig
from engine.errors import ConfigError, ModelError, ModelUnreachableError
from engine.models.cache import ResponseCache
from engine.models.openai_client import OpenAIChatModel
from engine.protocols import ChatModel, Completion, Message, SamplingParams

log = logging.getLogger(__name__)


def rendezvous_weight(server: str, key: str) -> int:
    """The 64-bit weight of `server` for `key`; the same on every machine and Python process."""
    digest = hashlib.blake2b(f"{server}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_order(key: str, servers: Iterable[str]) -> list[str]:
    """`servers` from the one `key` prefers most to the one it prefers least (ties broken by name)."""
    return sorted(servers, key=lambda s: (rendezvous_weight(s, key), s), reverse=True)


def routing_key(messages: list[Message], params: SamplingParams) -> str:
    """The episode id of the call, or, without a sample key, a digest of its first two messages."""
    if params.sample_key is not None:
        return params.sample_key.episode_id
    prefix = json.dumps(messages[:2], sort_keys=True, ensure_ascii=True)
    return "prefix:" + hashlib.blake2b(prefix.encode(), digest_size=16).hexdigest()


def is_connection_failure(exc: BaseException) -> bool:
    """True when `exc` or one of its causes says the server could not be connected to (not a timeout)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, openai.APIConnectionError) and not isinstance(cur, openai.APITimeoutError):
            return True
        if isinstance(cur, (ConnectionError, ModelUnreachableError)):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


class RoutedChatModel:
    """A ChatModel over several servers of one model, keyed by a stable server name (its base URL)."""

    def __init__(
        self,
        servers: Mapping[str, ChatModel],
        *,
        revive_after_s: float | None = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not servers:
            raise ConfigError("RoutedChatModel needs at least one server; pass {base_url: ChatModel, …}")
        if revive_after_s is not None and revive_after_s <= 0:
            raise ConfigError(f"revive_after_s {revive_after_s}: must be > 0, or None to revive only by mark_up")
        names = {m.name for m in servers.values()}
        if len(names) != 1:
            raise ConfigError(f"routed servers must serve one model name, got {sorted(names)}; serve one checkpoint")
        self.name = names.pop()
        self.servers = dict(servers)
        self.revive_after_s = revive_after_s
        self._clock = clock
        self._down: dict[str, float] = {}  # server -> when it was marked down
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RoutedChatModel(name={self.name!r}, servers={sorted(self.servers)!r}, down={sorted(self._down)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # The lock does not pickle; down marks are local knowledge and start fresh on the other side.
        return (_rebuild, (self.servers, self.revive_after_s))

    # -- choosing ---------------------------------------------------------------------------------------

    def up_servers(self) -> list[str]:
        """Servers not marked down (a down server whose revive time has passed counts as up again)."""
        now = self._clock()
        with self._lock:
            for server, since in list(self._down.items()):
                if self.revive_after_s is not None and now - since >= self.revive_after_s:
                    del self._down[server]
                    log.info("model server %s: trying it again after %gs down", server, self.revive_after_s)
            return [s for s in self.servers if s not in self._down]

    def choose(self, key: str) -> str:
        """The server that calls keyed `key` go to now (ModelError when every server is down)."""
        up = self.up_servers()
        if not up:
            raise ModelError(
                f"all {len(self.servers)} servers of model {self.name!r} are marked down ({sorted(self.servers)}); "
                "restart them (ModelServer) and call mark_up, or wait for revive_after_s"
            )
        return rendezvous_order(key, up)[0]

    def mark_down(self, server: str) -> None:
        with self._lock:
            self._down[server] = self._clock()

    def mark_up(self, server: str) -> None:
        with self._lock:
            self._down.pop(server, None)

    # -- the ChatModel seam -------------------------------------------------------------------------------

    def complete(self, messages: list[Message], params: SamplingParams) -> Completion:
        key = routing_key(messages, params)
        last: Exception | None = None
        for _ in self.servers:  # each failed try marks one server down, so this bounds the tries
            server = self.choose(key)
            try:
                return self.servers[server].complete(messages, params)
            except Exception as exc:
                self._fail_over(server, key, exc)
                last = exc
        raise self._no_server_left(key, last)

    async def acomplete(self, messages: list[Message], params: SamplingParams) -> Completion:
        key = routing_key(messages, params)
        last: Exception | None = None
        for _ in self.servers:  # each failed try marks one server down, so this bounds the tries
            server = self.choose(key)
            try:
                return await self.servers[server].acomplete(messages, params)
            except Exception as exc:
                self._fail_over(server, key, exc)
                last = exc
        raise self._no_server_left(key, last)

    def _no_server_left(self, key: str, last: Exception | None) -> ModelError:
        error = ModelError(
            f"model {self.name!r}: no server could be connected to for {key} (servers {sorted(self.servers)}, "
            f"last error: {last}); check that the model servers run, then call mark_up"
        )
        error.__cause__ = last
        return error

    def _fail_over(self, server: str, key: str, exc: Exception) -> None:
        """Mark `server` down and return (so the caller re-routes) on a connection failure; else re-raise."""
        if not is_connection_failure(exc):
            raise exc
        self.mark_down(server)
        log.warning("model server %s is unreachable (%s); marked down, re-routing %s", server, exc, key)

    def close(self) -> None:
        for model in self.servers.values():
            close = getattr(model, "close", None)
            if close is not None:
                close()

    async def aclose(self) -> None:
        for model in self.servers.values():
            aclose = getattr(model, "aclose", None)
            if aclose is not None:
                await aclose()


def _rebuild(servers: dict[str, ChatModel], revive_after_s: float | None) -> RoutedChatModel:
    return RoutedChatModel(servers, revive_after_s=revive_after_s)


def make_routed_model(
    model_cfg: ModelConfig, base_urls: list[str], *, revive_after_s: float | None = 60.0
) -> RoutedChatModel:
    """A RoutedChatModel with one OpenAIChatModel per base URL, all sharing `model_cfg` (its name is the served
    model name) and one response cache (the cache key holds no URL, so a replay finds a sample wherever it
    was served)."""
    if model_cfg.provider != "openai":
        raise ConfigError(f"make_routed_model needs model.provider 'openai', got {model_cfg.provider!r}")
    if not base_urls:
        raise ConfigError("make_routed_model got no base URLs; start the model servers first")
    if len(set(base_urls)) != len(base_urls):
        raise ConfigError(f"make_routed_model got duplicate base URLs {base_urls}; each server once")
    cache = ResponseCache(model_cfg.cache_dir) if model_cfg.cache_dir else None
    servers: dict[str, ChatModel] = {
        url: OpenAIChatModel(model_cfg.model_copy(update={"base_url": url}), cache) for url in base_urls
    }
    return RoutedChatModel(servers, revive_after_s=revive_after_s)
