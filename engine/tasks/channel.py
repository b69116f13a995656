"""The narrow channel between a grader and the agent's submitted code (Python-submission tasks): moves in, moves out.

The agent's module never runs in the grader's process. The grader imports a *stand-in* module of the same name
(`stand_in_source`), whose functions send each call as one JSON line into a pipe and read the answer from
another (`CHANNEL_DIR/calls`, `CHANNEL_DIR/answers`: FIFOs). The agent's module runs in a process of its own, as
the agent's uid, behind a small *server* (`server_source`) reading the calls and writing the answers; the
grader's files are unreadable to that uid (a private sandbox), and the grader's output — where the metrics are
read from — is the grader's process's alone. So agent code can neither print the metrics nor reach the grader's
functions, files or modules. The stand-in bounds each answer in time and size.

The one piece of state the two processes share, as they would in one process, is the seed of the `random` module:
the stand-in wraps the grader's `random.seed`, so that seeding there (a grader seeding each match, say) seeds the
submission's `random` the same way (a reserved call, `__seed__`). A submission that draws from `random` after
the grader seeded it then plays as it would have imported into the grader.

Values cross as JSON, with tuples, dicts and numpy arrays tagged so that each side gets back what was sent. A call
that fails on the agent's side (its exception, a malformed answer, no answer in time) raises `SubmissionError`
in the grader, whose harness reports it as the submission's own error.

Wire format: a call is `{"fn": name, "args": [...], "kwargs": {...}}` (`fn` "__seed__": seed `random`); an answer is `{"result": v}` or
`{"error": "text"}`; the server first says `{"ready": true}` or `{"error": "importing … raised …"}`.
"""

from __future__ import annotations

CHANNEL_DIR = "/tmp/synthscale-channel"
MAX_LINE_BYTES = 1 << 20  # one answer
CALL_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 120.0
"""How long the submission's process may take to start (an interpreter, then the agent's module and what it
imports: numpy, torch…), on a machine that may be busy; each call then gets `CALL_TIMEOUT_S`."""

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
import random
import select
import time
{codec}

class SubmissionError(Exception):
    """The submitted code failed (raised, answered wrongly, or did not answer in time)."""


_DIR = {channel_dir!r}
_TIMEOUT_S = {call_timeout_s!r}
_READY_TIMEOUT_S = {ready_timeout_s!r}
_MAX_BYTES = {max_bytes!r}
_pipes = []
_pending = [b""]
_broken = []  # after one failure the channel may be out of step: every later call fails at once


def _open():
    if not _pipes:  # read-write opens never wait for the other side; a missing answer times out instead
        _pipes.append(os.open(os.path.join(_DIR, "calls"), os.O_RDWR))
        _pipes.append(os.open(os.path.join(_DIR, "answers"), os.O_RDWR | os.O_NONBLOCK))
    return _pipes


def _answer(fd, timeout_s=_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while b"\\n" not in _pending[0]:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise SubmissionError(f"the submission did not answer within {{timeout_s:g}} s")
        try:
            _pending[0] += os.read(fd, 65536)
        except BlockingIOError:
            continue
        if len(_pending[0]) > _MAX_BYTES:
            raise SubmissionError(f"the submission answered more than {{_MAX_BYTES}} bytes")
    line, _pending[0] = _pending[0].split(b"\\n", 1)
    try:
        reply = json.loads(line)
    except ValueError:
        raise SubmissionError("the submission's answer was not valid JSON") from None
    if not isinstance(reply, dict):
        raise SubmissionError("the submission's answer was not a result")
    return reply


def _call(fn, args, kwargs):
    if _broken:
        raise SubmissionError(_broken[0])
    try:
        return _exchange(fn, args, kwargs)
    except SubmissionError as e:
        _broken.append(str(e))
        raise


def _exchange(fn, args, kwargs):
    calls, answers = _open()
    if not hasattr(_call, "ready"):
        ready = _answer(answers, _READY_TIMEOUT_S)
        if "error" in ready:
            raise SubmissionError(str(ready["error"]))
        _call.ready = True
    data = (json.dumps({{"fn": fn, "args": _encode(list(args)), "kwargs": _encode(dict(kwargs))}}) + "\\n").encode()
    while data:
        data = data[os.write(calls, data):]
    reply = _answer(answers)
    if "error" in reply:
        raise SubmissionError(str(reply["error"])[:2000])
    if "result" not in reply:
        raise SubmissionError("the submission's answer was not a result")
    return _decode(reply["result"])


_grader_seed = random.seed


def _seed(a=None, version=2):
    """random.seed in the grader's process, and the same seed for the submission's `random`."""
    _grader_seed(a, version)
    if a is None or isinstance(a, (int, float, str)):
        _call("__seed__", (a, version), {{}})


random.seed = _seed
{functions}'''

_FUNCTION = '''
def {name}(*args, **kwargs):
    return _call({name!r}, args, kwargs)
'''

_ANY_FUNCTION = '''
def __getattr__(name):  # any public function of the submission, looked up on its side at the first call
    if name.startswith("_"):
        raise AttributeError(name)
    return lambda *args, **kwargs: _call(name, args, kwargs)
'''

_SERVER = '''"""Serves the calls of a grader to the functions of the submitted module, one JSON line each."""
import importlib.util
import json
import os
import random
import sys
import traceback
{codec}

channel = os.fdopen(os.dup(1), "w", buffering=1)  # answers go here; what the module prints goes to stderr
os.dup2(2, 1)
sys.stdout = sys.stderr
path, allowed = sys.argv[1], set(sys.argv[2].split(","))
sys.path.insert(0, os.path.dirname(os.path.abspath(path)))  # the submission's own folder, for its own imports


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
missing = sorted(name for name in allowed - {{"*"}} if not callable(getattr(module, name, None)))
if missing:
    say({{"error": f"{{path.rsplit('/', 1)[-1]}} defines no function {{', '.join(missing)}}"}})
    sys.exit(0)
say({{"ready": True}})
for line in sys.stdin:
    try:
        call = json.loads(line)
        if call["fn"] == "__seed__":  # the grader seeded its random module: the submission's gets the same seed
            random.seed(*_decode(call["args"]))
            say({{"result": None}})
            continue
        if call["fn"] not in allowed and ("*" not in allowed or call["fn"].startswith("_")):
            raise RuntimeError(f"no function {{call['fn']}}")
        if not callable(getattr(module, call["fn"], None)):
            raise RuntimeError(f"{{path.rsplit('/', 1)[-1]}} defines no function {{call['fn']}}")
        result = getattr(module, call["fn"])(*_decode(call["args"]), **_decode(call["kwargs"]))
        say({{"result": _encode(result)}})
    except BaseException as e:
        say({{"error": f"{{call.get('fn', '?') if isinstance(call, dict) else '?'}} raised {{brief(e)}}"}})
'''


def stand_in_source(module_file: str, functions: list[str] | None = None, channel_dir: str = CHANNEL_DIR, *,
                    call_timeout_s: float = CALL_TIMEOUT_S) -> str:
    """The module the grader imports in place of the agent's `module_file`: `functions`, or (None) any public
    name the grader asks for."""
    body = _ANY_FUNCTION if functions is None else "".join(_FUNCTION.format(name=f) for f in functions)
    return _STAND_IN.format(module=module_file, codec=_CODEC, channel_dir=channel_dir, functions=body,
                            call_timeout_s=call_timeout_s, ready_timeout_s=READY_TIMEOUT_S,
                            max_bytes=MAX_LINE_BYTES)


def server_source() -> str:
    """The program that runs the agent's module on its side: `python SERVER <module path> <fn,fn,...>`."""
    return _SERVER.format(codec=_CODEC)
