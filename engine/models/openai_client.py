"""ChatModel over any OpenAI-compatible endpoint: sends chat completions, reads replies, reads and writes the
response cache.

Endpoints (`model.base_url`, `model.name`, `model.api_key_env`):
- OpenAI: base_url None (https://api.openai.com/v1), name "gpt-5", key in OPENAI_API_KEY.
- Azure OpenAI: base_url "https://<resource>.openai.azure.com/openai/v1" (the v1 API of the resource),
  name = the deployment name, api_key_env "AZURE_OPENAI_API_KEY"; add the deployment to model.prices.
- vLLM / SGLang / `transformers serve`: base_url "http://<host>:<port>/v1", name = the served model name;
  no key needed on loopback or cluster-internal hosts (a placeholder is sent), unknown_price: zero.

The key is read from the environment once, handed to the SDK client, and kept nowhere else: not in
repr, logs, records, the cache, or pickles (unpickling re-reads the environment). A server's error text (which
may echo the request's Authorization header) is redacted (`engine.redact`) before it is logged or raised, and the
ModelError raised chains no SDK exception (whose body holds that text).

Retries are ours (the SDK's are off): 408/409/429/5xx, timeouts, connection errors and malformed replies
are retried up to model.max_retries times with exponential backoff and full jitter, or as long as the
server's Retry-After / retry-after-ms says; other 4xx fail at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import openai

from engine.config import ModelConfig
from engine.errors import ConfigError, ModelError, ModelUnreachableError
from engine.models.cache import ResponseCache, cache_key
from engine.models.pricing import check_priced, cost_usd
from engine.models.retry import MalformedReply, backoff_delay_s, classify, server_message
from engine.models.wire import OPENAI_BASE_URL, Reply, is_local_url, parse_reply, request_kwargs
from engine.protocols import Completion, Message, SamplingParams
from engine.redact import secret_values

__all__ = ["OpenAIChatModel", "request_kwargs"]

log = logging.getLogger(__name__)

LOCAL_PLACEHOLDER_KEY = "EMPTY"
"""Sent to keyless local servers (vLLM's convention); the SDK insists on some key."""


class OpenAIChatModel:
    """The production ChatModel: one sync and (per event loop) one async SDK client, a concurrency limit,
    an optional response cache.

    `sleep` / `async_sleep` / `rng` are injectable so that tests can record the waits they ask for.
    A Completion's latency_s is the wall time of the whole call, retries and backoff included.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        cache: ResponseCache | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if cfg.provider != "openai":
            raise ConfigError(f"OpenAIChatModel needs model.provider 'openai', got {cfg.provider!r}")
        check_priced(cfg.name, cfg.prices, cfg.unknown_price)
        self.cfg = cfg
        self.name = cfg.name
        self.base_url = cfg.base_url or OPENAI_BASE_URL
        self._cache = cache if cache is not None else (ResponseCache(cfg.cache_dir) if cfg.cache_dir else None)
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._rng = rng or random.Random()
        self._legacy_max_tokens = False
        self._slots = threading.BoundedSemaphore(cfg.max_concurrency)
        self._async_state: weakref.WeakKeyDictionary[Any, tuple[openai.AsyncOpenAI, asyncio.Semaphore]]
        self._async_state = weakref.WeakKeyDictionary()
        self._client_args = {
            "api_key": self._read_key(),
            "base_url": self.base_url,
            "timeout": cfg.timeout_s,
            "max_retries": 0,
        }
        self._client = openai.OpenAI(**self._client_args)

    def __repr__(self) -> str:
        return f"OpenAIChatModel(name={self.name!r}, base_url={self.base_url!r}, api_key_env={self.cfg.api_key_env!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the config on the other side, so the key never enters a pickle (Ray object store).
        return (OpenAIChatModel, (self.cfg, self._cache))

    def _read_key(self) -> str:
        key = os.environ.get(self.cfg.api_key_env)
        if key:
            return key
        if self.cfg.api_key_file is not None:  # a mounted secret (Kubernetes Secret volume, Docker secret)
            try:
                key = self.cfg.api_key_file.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise ConfigError(f"model.api_key_file {self.cfg.api_key_file}: cannot read it ({e.strerror}); mount "
                                  "the secret on every node or set the environment variable "
                                  f"{self.cfg.api_key_env}") from None
            if key:
                return key
        if is_local_url(self.cfg.base_url) or self.cfg.replay_only:
            return LOCAL_PLACEHOLDER_KEY
        raise ConfigError(
            f"environment variable {self.cfg.api_key_env} is not set, and {self.base_url} needs an API key; "
            f"export {self.cfg.api_key_env}=<key> or point model.api_key_env at the variable that holds it"
        )

    # -- the ChatModel seam -------------------------------------------------------------------------------

    def complete(self, messages: list[Message], params: SamplingParams) -> Completion:
        started = time.monotonic()
        key, hit = self._lookup(messages, params)
        if hit is not None:
            return hit
        kwargs = request_kwargs(self.cfg, messages, params, legacy_max_tokens=self._legacy_max_tokens)
        retry_index = 0
        while True:
            try:
                with self._slots:
                    raw = self._client.chat.completions.with_raw_response.create(**kwargs)
                reply = parse_reply(raw.text)
                break
            except (openai.APIError, MalformedReply) as exc:
                failed = exc
            # outside the handler: a ModelError raised here chains no SDK error (whose body may echo the key)
            kwargs, delay_s = self._after_failure(failed, kwargs, retry_index)
            if delay_s is not None:
                self._sleep(delay_s)
                retry_index += 1
        return self._finish(reply, key, started)

    async def acomplete(self, messages: list[Message], params: SamplingParams) -> Completion:
        started = time.monotonic()
        key, hit = self._lookup(messages, params)
        if hit is not None:
            return hit
        client, slots = self._loop_state()
        kwargs = request_kwargs(self.cfg, messages, params, legacy_max_tokens=self._legacy_max_tokens)
        retry_index = 0
        while True:
            try:
                async with slots:
                    raw = await client.chat.completions.with_raw_response.create(**kwargs)
                reply = parse_reply(raw.text)
                break
            except (openai.APIError, MalformedReply) as exc:
                failed = exc
            kwargs, delay_s = self._after_failure(failed, kwargs, retry_index)
            if delay_s is not None:
                await self._async_sleep(delay_s)
                retry_index += 1
        return self._finish(reply, key, started)

    def close(self) -> None:
        """Close the sync client's connections (async clients close with their event loop's `aclose`)."""
        self._client.close()

    async def aclose(self) -> None:
        state = self._async_state.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state[0].close()

    # -- pieces shared by the sync and async paths --------------------------------------------------------

    def _lookup(self, messages: list[Message], params: SamplingParams) -> tuple[str | None, Completion | None]:
        if self._cache is None:
            return None, None
        key = cache_key(self.name, messages, params)
        hit = self._cache.get(key)
        if hit is None and self.cfg.replay_only:
            raise ModelError(
                f"cache miss in replay mode for model {self.name!r} (key {key[:16]}…, sample key "
                f"{params.sample_key}) under {self._cache.root}; replay the run that filled this cache with the "
                f"same config, or turn off model.replay_only to call the endpoint"
            )
        return key, hit

    def _loop_state(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        # An AsyncOpenAI client and an asyncio.Semaphore belong to one event loop; keep one pair per loop.
        loop = asyncio.get_running_loop()
        state = self._async_state.get(loop)
        if state is None:
            state = (openai.AsyncOpenAI(**self._client_args), asyncio.Semaphore(self.cfg.max_concurrency))
            self._async_state[loop] = state
        return state

    def _after_failure(
        self, exc: BaseException, kwargs: dict[str, Any], retry_index: int
    ) -> tuple[dict[str, Any], float | None]:
        """Next request arguments and the wait before sending them (None: resend at once, no retry used);
        raises ModelError when the failure is permanent or the retries are spent."""
        if self._rejects_max_completion_tokens(exc, kwargs):
            log.warning("%s rejects max_completion_tokens; sending max_tokens from now on", self.base_url)
            self._legacy_max_tokens = True
            kwargs = dict(kwargs)
            kwargs["max_tokens"] = kwargs.pop("max_completion_tokens")
            return kwargs, None
        failure = classify(exc, secrets=self._secrets())
        where = f"model {self.name!r} at {self.base_url}"
        if not failure.retryable:
            hint = f" (is {self.cfg.api_key_env} the right key?)" if failure.status in (401, 403) else ""
            raise ModelError(f"{where}: {failure.description}{hint}; not retried, fix the request or the config")
        attempts = retry_index + 1
        if retry_index >= self.cfg.max_retries:
            raise (ModelUnreachableError if failure.unreachable else ModelError)(
                f"{where}: gave up after {attempts} attempt{'s' if attempts != 1 else ''}; last error: "
                f"{failure.description}; check the endpoint or raise model.max_retries"
            )
        if failure.retry_after_s is not None:
            delay_s = failure.retry_after_s
        else:
            delay_s = backoff_delay_s(retry_index, self.cfg.backoff_base_s, self.cfg.backoff_max_s, self._rng)
        log.warning(
            "%s: attempt %d of %d failed (%s); retrying in %.2fs",
            where, attempts, self.cfg.max_retries + 1, failure.description, delay_s,
        )
        return kwargs, delay_s

    def _secrets(self) -> list[str]:
        """What an error text must not show: the key this client sends, and the values of the variables that may
        hold keys (`engine.redact`)."""
        return [self._client_args["api_key"], *secret_values([self.cfg.api_key_env])]

    def _rejects_max_completion_tokens(self, exc: BaseException, kwargs: dict[str, Any]) -> bool:
        return (
            isinstance(exc, openai.BadRequestError)
            and "max_completion_tokens" in kwargs
            and "max_completion_tokens" in server_message(exc)
        )

    def _finish(self, reply: Reply, key: str | None, started: float) -> Completion:
        completion = Completion(
            text=reply.text,
            reasoning=reply.reasoning,
            finish_reason=reply.finish_reason,
            usage=reply.usage,
            cost_usd=cost_usd(
                self.name, reply.usage, self.cfg.prices, self.cfg.unknown_price,
                cached_prompt_tokens=reply.cached_prompt_tokens,
            ),
            latency_s=time.monotonic() - started,
            model=self.name,
        )
        if self._cache is not None and key is not None:
            self._cache.put(key, completion)
        return completion
