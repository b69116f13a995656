"""Model clients behind the ChatModel seam, and `make_model`, which builds one from a ModelConfig."""

from __future__ import annotations

from engine.config import ModelConfig
from engine.errors import ConfigError
from engine.models.cache import ResponseCache, cache_key
from engine.models.openai_client import OpenAIChatModel
from engine.models.pricing import cost_usd, find_price
from engine.models.server import ChatCompletionsServer, serve
from engine.models.wire import request_kwargs
from engine.protocols import ChatModel

__all__ = [
    "ChatCompletionsServer",
    "OpenAIChatModel",
    "ResponseCache",
    "cache_key",
    "cost_usd",
    "find_price",
    "make_model",
    "request_kwargs",
    "serve",
]


def make_model(cfg: ModelConfig, *, cache: ResponseCache | None = None) -> ChatModel:
    """The endpoint client that `cfg` names: an OpenAIChatModel (with `cache`, else a cache at cfg.cache_dir when
    set). The offline heuristic policy is not an endpoint: rollouts build it with the tasks it plays
    (`engine.models.factory.make_policy_model`); anywhere else it is a configuration error."""
    if cfg.provider == "openai":
        return OpenAIChatModel(cfg, cache)
    if cfg.provider == "heuristic":
        raise ConfigError("model.provider 'heuristic' is the offline policy, which only plays rollout episodes; "
                          "here an endpoint is needed: set provider: openai with a base_url")
    raise ConfigError(f"model.provider {cfg.provider!r} is not known; use 'openai' or 'heuristic'")
