"""Model clients behind the ChatModel seam, and `make_model`, which builds one from a ModelConfig."""

from __future__ import annotations

from collections.abc import Callable

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


def make_model(
    cfg: ModelConfig,
    *,
    cache: ResponseCache | None = None,
    heuristic_factory: Callable[[ModelConfig], ChatModel] | None = None,
) -> ChatModel:
    """The ChatModel that `cfg` names.

    provider "openai": OpenAIChatModel (with `cache`, else a cache at cfg.cache_dir when set).
    provider "heuristic": `heuristic_factory(cfg)`; the offline policy lives outside this package, so the
    caller that knows it passes its constructor here.
    """
    if cfg.provider == "openai":
        return OpenAIChatModel(cfg, cache)
    if cfg.provider == "heuristic":
        if heuristic_factory is None:
            raise ConfigError(
                "model.provider 'heuristic' needs the offline policy, but make_model got no heuristic_factory; "
                "build it through the pipeline runner, or set model.provider: openai with a base_url"
            )
        return heuristic_factory(cfg)
    raise ConfigError(f"model.provider {cfg.provider!r} is not known; use 'openai' or 'heuristic'")
