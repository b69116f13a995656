"""Serves any ChatModel over HTTP as an OpenAI-compatible endpoint (POST /v1/chat/completions, GET /v1/models).

It lets a local ChatModel (the offline heuristic policy, a scripted model) be driven by the production
client exactly as vLLM or OpenAI would be. The sample key arrives in the X-Synthscale-Sample-Key header
(what OpenAIChatModel sends) or in a `sample_key` body field (`extra_body={"sample_key": {...}}`), and is
rebuilt into SamplingParams together with temperature, top_p, max_completion_tokens / max_tokens,
reasoning_effort, seed and stop, so that a deterministic policy can key its randomness on it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import ValidationError

from engine.errors import EngineError
from engine.models.wire import SAMPLE_KEY_HEADER
from engine.protocols import ChatModel, Completion, Message, SampleKey, SamplingParams

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
_ROLES = frozenset({"system", "developer", "user", "assistant"})


class BadRequest(Exception):
    """The request does not follow the chat-completions protocol; answered with 400 and this message."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def parse_request(body: object, headers: dict[str, str]) -> tuple[list[Message], SamplingParams]:
    """Messages and sampling settings of one chat-completions request body (headers: lower-cased names)."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if body.get("stream"):
        raise BadRequest("streaming is not supported by this server; send stream: false", "stream")
    if body.get("n", 1) != 1:
        raise BadRequest(f"n={body.get('n')!r}: this server returns one choice; send n: 1", "n")
    messages = _parse_messages(body.get("messages"))
    stop = body.get("stop")
    stop_list = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop_list, list) or not all(isinstance(s, str) for s in stop_list):
        raise BadRequest(f"stop={stop!r}: expected a string or a list of strings", "stop")
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    try:
        params = SamplingParams(
            temperature=body.get("temperature"),
            top_p=body.get("top_p"),
            max_tokens=max_tokens,
            reasoning_effort=body.get("reasoning_effort"),
            seed=body.get("seed"),
            stop=tuple(stop_list),
            sample_key=_parse_sample_key(body.get("sample_key"), headers.get(SAMPLE_KEY_HEADER.lower())),
        )
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise BadRequest(f"{param}: {err['msg']} (got {err.get('input')!r})", param) from None
    return messages, params


def _parse_messages(raw: object) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise BadRequest("messages must be a non-empty list", "messages")
    messages: list[Message] = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise BadRequest(f"messages[{i}]: expected an object with role one of {sorted(_ROLES)}", f"messages[{i}]")
        content = m.get("content")
        if isinstance(content, list):  # content parts: keep the text ones, in order
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise BadRequest(f"messages[{i}].content: only text parts are supported", f"messages[{i}].content")
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be text", f"messages[{i}].content")
        messages.append({"role": m["role"], "content": content})
    return messages


def _parse_sample_key(from_body: object, from_header: str | None) -> SampleKey | None:
    raw: object = from_body if from_body is not None else from_header
    if raw is None:
        return None
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
        return SampleKey.model_validate(data)
    except (ValueError, ValidationError) as e:
        raise BadRequest(f"sample_key {str(raw)[:200]!r} is not a valid sample key ({e})", "sample_key") from None


def completion_body(completion: Completion, model_name: str) -> dict[str, Any]:
    """The chat.completion JSON object for one Completion."""
    message: dict[str, Any] = {"role": "assistant", "content": completion.text}
    if completion.reasoning is not None:
        message["reasoning_content"] = completion.reasoning
    usage = completion.usage
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [{"index": 0, "message": message, "finish_reason": completion.finish_reason or "stop", "logprobs": None}],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        },
    }


def _error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _make_handler(model: ChatModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK expects
        server_version = "synthscale-chat"
        timeout = 300

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            log.debug("%s %s", self.address_string(), format % args)

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/v1/models":
                return self._send(404, _error_body(f"no route GET {self.path}", "invalid_request_error"))
            data = [{"id": model.name, "object": "model", "created": 0, "owned_by": "synthscale"}]
            self._send(200, {"object": "list", "data": data})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self.close_connection = True
                return self._send(413, _error_body(f"body of {length} bytes is over {MAX_BODY_BYTES}", "invalid_request_error"))
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, _error_body(f"no route POST {self.path}", "invalid_request_error"))
            try:
                body = json.loads(raw)
                if isinstance(body, dict) and body.get("model") != model.name:
                    return self._send(404, _error_body(
                        f"the model {body.get('model')!r} does not exist; this server serves {model.name!r}",
                        "invalid_request_error", "model", "model_not_found"))
                messages, params = parse_request(body, {k.lower(): v for k, v in self.headers.items()})
            except ValueError:
                return self._send(400, _error_body("the request body is not JSON", "invalid_request_error"))
            except BadRequest as e:
                return self._send(400, _error_body(str(e), "invalid_request_error", e.param))
            try:
                completion = model.complete(messages, params)
            except EngineError as e:
                log.warning("served model %r failed: %s", model.name, e)
                return self._send(500, _error_body(f"{type(e).__name__}: {e}", "server_error"))
            except Exception as e:
                log.exception("served model %r crashed", model.name)
                return self._send(500, _error_body(f"{type(e).__name__}: {e}", "server_error"))
            self._send(200, completion_body(completion, model.name))

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class _HTTPServer(ThreadingHTTPServer):
    """Tracks open connections, so that stopping also ends keep-alive connections a client still holds."""

    daemon_threads = True
    request_queue_size = 256  # the listen backlog: many workers connect at once (socketserver's default is 5)

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client


class ChatCompletionsServer:
    """A loopback OpenAI-compatible server in a background thread; use it as a context manager.

    >>> from engine.testing.scripted import ScriptedModel
    >>> with ChatCompletionsServer(ScriptedModel(["hi"])) as srv:
    ...     srv.base_url.startswith("http://127.0.0.1:")
    True
    """

    def __init__(self, model: ChatModel, host: str = "127.0.0.1", port: int = 0) -> None:
        self.model = model
        self.host = host
        self.port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not started; use it as a context manager or call start()")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self._httpd.server_address[1]}/v1"

    def start(self) -> ChatCompletionsServer:
        self._httpd = _HTTPServer((self.host, self.port), _make_handler(self.model))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="chat-completions-server", daemon=True
        )
        self._thread.start()
        log.info("serving model %r at %s", self.model.name, self.base_url)
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        if self._thread is not None:
            self._thread.join()
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ChatCompletionsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(model: ChatModel, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `model` until interrupted (Ctrl-C), in the calling thread."""
    httpd = _HTTPServer((host, port), _make_handler(model))
    log.info("serving model %r at http://%s:%d/v1", model.name, host, httpd.server_address[1])
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping the server of model %r", model.name)
    finally:
        httpd.server_close()
