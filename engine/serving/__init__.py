"""Serving student models: launch an OpenAI-compatible server (vLLM or `transformers serve`) and wait for it.

The Ray actor that owns a server's GPUs is `actors.model_server.ModelServer`; clients reach several servers
through `engine.models.routing.RoutedChatModel`.
"""

from engine.serving.launch import (
    ServeConfig,
    ServerProcess,
    ServerStartError,
    choose_backend,
    resolve_backend,
    server_command,
)

__all__ = ["ServeConfig", "ServerProcess", "ServerStartError", "choose_backend", "resolve_backend", "server_command"]
