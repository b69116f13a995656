"""The narrow channel between a grader and the agent's submitted code (Python-submission tasks): moves in, moves out.

The agent's module never runs in the grader's process. The grader imports a *stand-in* module of the same name
(`stand_in_source`), whose functions send each call as one line on the grader's stdout and read the answer from
its stdin. The agent's module runs in a process of its own, in a sandbox of its own, behind a small *server*
(`server_source`) that answers one line per call. The host relays the lines (`Relay`), capped in size and time,
and keeps every other line of the grader's output as that output: so the metrics can only come from the grader,
and agent code can neither print them nor reach the grader's functions, files or modules.

Values cross as JSON, with tuples and numpy arrays tagged so that each side gets back what was sent. A call that
fails on the agent's side (its exception, a malformed answer, no answer in time) raises `SubmissionError` in the
grader, whose harness reports it as the submission's own error.

Wire format: a call is `CALL_PREFIX` + `{"fn": name, "args": [...], "kwargs": {...}}`; an answer is `{"result": v}`
or `{"error": "text"}`; the server first says `{"ready": true}` or `{"error": "importing … raised …"}`.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from dataclasses import dataclass, field
from typing import IO

CALL_PREFIX = "\x1esynthscale-call "
MAX_LINE_BYTES = 1 << 20  # one call or answer
MAX_OUTPUT_BYTES = 1 << 20  # the grader's own output kept

_CODEC = r'''
def _encode(value):
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if type(value).__module__ == "numpy":
        if hasattr(value, "tolist") and hasattr(value, "dtype") and getattr(value, "ndim", 0) > 0:
            return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot send a {type(value).__name__} across the channel")


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(_decode(v) for v in value["__tuple__"])
        if "__dict__" in value:
            return {_decode(k): _decode(v) for k, v in value["__dict__"]}
        if "__ndarray__" in value:
            import numpy
            return numpy.array(value["__ndarray__"], dtype=value["dtype"])
    return value
'''

_STAND_IN = '''"""Stand-in for the submitted {module}: each call goes to the agent's code, which runs in a process of its own."""
import json
import os
import sys
{codec}

class SubmissionError(Exception):
    """The submitted code failed (raised, answered wrongly, or did not answer in time)."""


_PREFIX = {prefix!r}


def _call(fn, args, kwargs):
    line = _PREFIX + json.dumps({{"fn": fn, "args": _encode(list(args)), "kwargs": _encode(dict(kwargs))}}) + "\\n"
    data = line.encode()
    while data:  # fd 1 itself: a harness that swaps sys.stdout must not swallow the call
        data = data[os.write(1, data):]
    answer = sys.stdin.buffer.readline()
    if not answer:
        raise SubmissionError("the submission's process went away")
    reply = json.loads(answer)
    if "error" in reply:
        raise SubmissionError(reply["error"])
    return _decode(reply["result"])

{functions}'''

_FUNCTION = '''
def {name}(*args, **kwargs):
    return _call({name!r}, args, kwargs)
'''

_SERVER = '''"""Serves the calls of a grader to the functions of the submitted module, one JSON line each."""
import importlib.util
import json
import os
import sys
import traceback
{codec}

channel = os.fdopen(os.dup(1), "w", buffering=1)  # answers go here; what the module prints goes to stderr
os.dup2(2, 1)
sys.stdout = sys.stderr
path, allowed = sys.argv[1], set(sys.argv[2].split(","))


def say(obj):
    channel.write(json.dumps(obj) + "\\n")
    channel.flush()


def brief(e):
    frames = traceback.extract_tb(e.__traceback__)
    where = next((f"{{f.filename.rsplit('/', 1)[-1]}}:{{f.lineno}}" for f in reversed(frames)
                  if f.filename.endswith(path.rsplit("/", 1)[-1])), "")
    return f"{{type(e).__name__}}: {{e}}" + (f" ({{where}})" if where else "")


try:
    spec = importlib.util.spec_from_file_location("submitted", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
except BaseException as e:
    say({{"error": f"importing {{path.rsplit('/', 1)[-1]}} raised {{brief(e)}}"}})
    sys.exit(0)
missing = sorted(name for name in allowed if not callable(getattr(module, name, None)))
if missing:
    say({{"error": f"{{path.rsplit('/', 1)[-1]}} defines no function {{', '.join(missing)}}"}})
    sys.exit(0)
say({{"ready": True}})
for line in sys.stdin:
    try:
        call = json.loads(line)
        if call["fn"] not in allowed:
            raise RuntimeError(f"no function {{call['fn']}}")
        result = getattr(module, call["fn"])(*_decode(call["args"]), **_decode(call["kwargs"]))
        say({{"result": _encode(result)}})
    except BaseException as e:
        say({{"error": f"{{call.get('fn', '?') if isinstance(call, dict) else '?'}} raised {{brief(e)}}"}})
'''


def stand_in_source(module_file: str, functions: list[str]) -> str:
    """The module the grader imports in place of the agent's `module_file`."""
    body = "".join(_FUNCTION.format(name=f) for f in functions)
    return _STAND_IN.format(module=module_file, codec=_CODEC, prefix=CALL_PREFIX, functions=body)


def server_source() -> str:
    """The program that runs the agent's module on its side: `python SERVER <module path> <fn,fn,...>`."""
    return _SERVER.format(codec=_CODEC)


class SubmissionProcessError(Exception):
    """Internal: the agent's side failed to answer (the relay turns it into an error answer)."""


@dataclass
class RelayResult:
    """What the grader printed (calls removed), how it ended, and the submission's error if it had one."""

    output: str
    exit_code: int
    timed_out: bool = False
    calls: int = 0
    submission_error: str | None = None
    notes: list[str] = field(default_factory=list)


class Relay:
    """Carries calls from a grader process to the agent's server process and answers back.

    Both are `subprocess.Popen`-like objects with binary `stdin`/`stdout` pipes (a sandboxed process, on either
    runtime). `call_timeout_s` bounds each answer; `timeout_s` the whole grading."""

    def __init__(self, grader: subprocess.Popen, agent: subprocess.Popen, *, call_timeout_s: float = 10.0):
        self.grader, self.agent = grader, agent
        self.call_timeout_s = call_timeout_s
        self._agent_buf = b""
        self._ready: dict | None = None

    def run(self, timeout_s: float) -> RelayResult:
        deadline = time.monotonic() + timeout_s
        out = bytearray()
        result = RelayResult(output="", exit_code=-1)
        buf = b""
        fd = self.grader.stdout.fileno()
        os.set_blocking(fd, False)
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    result.timed_out = True
                    break
                if not sel.select(timeout=min(remaining, 1.0)):
                    continue
                chunk = _read(fd)
                if chunk is None:
                    continue
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self._line(line, out, result)
                if len(buf) > MAX_LINE_BYTES:  # a line without end: the grader's own output, kept capped
                    _keep(out, buf)
                    buf = b""
        _keep(out, buf)
        result.exit_code = _finish(self.grader, result.timed_out)
        _finish(self.agent, True)
        result.output = out.decode("utf-8", errors="replace")
        return result

    def _line(self, line: bytes, out: bytearray, result: RelayResult) -> None:
        text = line.decode("utf-8", errors="replace")
        if not text.startswith(CALL_PREFIX):
            _keep(out, line + b"\n")
            return
        result.calls += 1
        answer = self._answer(text[len(CALL_PREFIX):])
        if "error" in answer and result.submission_error is None:
            result.submission_error = answer["error"]
        self._send(self.grader.stdin, answer)

    def _answer(self, call: str) -> dict:
        try:
            if self._ready is None:
                self._ready = self._receive()
            if "error" in self._ready:
                return self._ready
            self.agent.stdin.write(call.encode() + b"\n")
            self.agent.stdin.flush()
            return self._receive()
        except SubmissionProcessError as e:
            self._ready = {"error": str(e)}  # one failure ends the submission's side for the rest of the grading
            return self._ready
        except (BrokenPipeError, OSError):
            self._ready = {"error": "the submission's process ended while the grader called it"}
            return self._ready

    def _receive(self) -> dict:
        """One answer line from the agent's side, within the call timeout and the size cap."""
        fd = self.agent.stdout.fileno()
        os.set_blocking(fd, False)
        deadline = time.monotonic() + self.call_timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._agent_buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SubmissionProcessError(f"the submission did not answer within {self.call_timeout_s:g} s")
                if not sel.select(timeout=remaining):
                    continue
                chunk = _read(fd)
                if chunk is None:
                    continue
                if not chunk:
                    raise SubmissionProcessError("the submission's process ended while the grader called it")
                self._agent_buf += chunk
                if len(self._agent_buf) > MAX_LINE_BYTES:
                    raise SubmissionProcessError(f"the submission answered more than {MAX_LINE_BYTES} bytes")
        line, self._agent_buf = self._agent_buf.split(b"\n", 1)
        try:
            answer = json.loads(line)
        except json.JSONDecodeError:
            raise SubmissionProcessError("the submission's answer was not valid JSON") from None
        if not isinstance(answer, dict) or not ({"result", "error", "ready"} & answer.keys()):
            raise SubmissionProcessError("the submission's answer was not a result")
        if "error" in answer:
            answer = {"error": str(answer["error"])[:2000]}
        return answer

    @staticmethod
    def _send(stream: IO[bytes], answer: dict) -> None:
        try:
            stream.write(json.dumps(answer).encode() + b"\n")
            stream.flush()
        except (BrokenPipeError, OSError):
            pass  # the grader ended: its exit tells


def _read(fd: int) -> bytes | None:
    """What the pipe holds (b"" at its end), or None when it holds nothing yet."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None


def _keep(out: bytearray, data: bytes) -> None:
    room = MAX_OUTPUT_BYTES - len(out)
    if room > 0:
        out += data[:room]


def _finish(proc: subprocess.Popen, kill: bool) -> int:
    if kill and proc.poll() is None:
        proc.kill()
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)
