"""A persistent bash session over one started bash process's byte pipes, whatever runtime started it (a local
Popen, a Docker exec's attached socket): `ShellSession` satisfies `engine.protocols.Shell`. Reads the shell's
merged output; writes commands and host-function replies to its stdin.

Protocol (one stream each way). The session's first line keeps the pipes on fds 60 (replies from the host) and 61
(protocol out), so the agent's own redirections cannot reach them, and defines the host-side functions. Each
command is one line:

    { eval $'<command, every byte outside printable ASCII escaped>'; } </dev/null >&61 2>&1
    printf '\\036END-<nonce> %d %s\\036\\n' "$?" "$PWD" >&61

`eval` runs in the shell itself (cd, export, functions and an activated venv persist), a syntax error stays
inside it, the command never reads the protocol from stdin, the group's redirections are undone after it (an
`exec >file` lasts one command), and a fresh random nonce per command makes the end marker unforgeable by
accident. A host function writes `\\036CALL-<session secret> <id> <argc>\\0<pwd>\\0<name>\\0<args>\\0…` to fd 61 (NUL
framing: any argument survives) and reads `#R <id> <rc> <len>\\n#<text, newline-free escaped>\\n` from fd 60.
Both reply lines are bash comments, so a reply that nobody read (its caller was killed) is harmless when bash
later reads its next command; a caller skips replies with another id.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from engine.errors import SandboxError
from engine.protocols import ShellCall, ShellResult
from engine.sandbox.common import KILL_EXIT_CODE, OutputBuffer

logger = logging.getLogger(__name__)

IN_FD, OUT_FD = 60, 61
START_TIMEOUT_S = 60.0
INTERRUPT_SIGNAL = "URG"
"""Sent to the shell on a timeout: its trap breaks out of the command (ignored by default, so harmless if the agent
removed the trap). The shell runs it once its foreground process ends, which the interrupt kills."""
INTERRUPT_EVERY_S = 0.25
GRACE_S = 3.0
"""How long an interrupted command has to print its end marker before the session is restarted."""
READ_CHUNK_BYTES = 65536
MARK = b"\x1e"
FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESC = [chr(b) if 0x20 <= b < 0x7F and b not in b"\\'" else f"\\x{b:02x}" for b in range(256)]


class Channel(Protocol):
    """The started bash process, as the session sees it."""

    def send(self, data: bytes) -> None:
        """Write all of `data` to the shell's stdin; OSError when the shell is gone."""
        ...

    def recv(self, timeout_s: float) -> bytes | None:
        """Output as it comes: None when nothing came within `timeout_s`, b"" once the shell exited."""
        ...

    def exit_code(self) -> int | None:
        """The shell's exit status once it exited, else None."""
        ...

    def close(self) -> None:
        """Kill the shell (and what it started, where the channel can tell) and release the connection."""
        ...


def ansi_c_quote(text: str) -> str:
    """`text` as a bash $'…' word (NUL bytes, which no bash string can hold, are dropped).

    >>> ansi_c_quote("echo 'hi'\\n")
    "$'echo \\\\x27hi\\\\x27\\\\x0a'"
    """
    return "$'" + "".join(_ESC[b] for b in text.replace("\0", "").encode("utf-8", "surrogateescape")) + "'"


def escape_reply(text: str) -> bytes:
    """A reply's text for bash's `printf %b`, on one line.

    >>> escape_reply("a\\\\b\\nc\\0")
    b'a\\\\\\\\b\\\\nc\\\\0000'
    """
    return (text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\0", "\\0000")
            .encode("utf-8", "surrogateescape"))


REAP_FUNCTION = (
    "__ss_reap() { local d s r p q n k=1 i=0; local -A par; "
    "while [ \"$k\" = 1 ] && [ \"$i\" -lt 20 ]; do k=0; i=$((i+1)); par=(); "
    "for d in /proc/[0-9]*; do read -r s < \"$d/stat\" 2>/dev/null || continue; r=${s##*) }; r=${r#* }; "
    "par[${d#/proc/}]=${r%% *}; done; "
    "for p in \"${!par[@]}\"; do [ \"$p\" -gt 1 ] || continue; q=$p; n=0; "
    "while [ -n \"$q\" ] && [ \"$q\" != \"$$\" ] && [ \"$q\" -gt 1 ] && [ \"$n\" -lt 64 ]; do q=${par[$q]}; n=$((n+1)); done; "
    "[ \"$q\" = \"$$\" ] || { kill -KILL \"$p\" 2>/dev/null && k=1; }; done; done; }; "
)
"""Bash builtins only (it must work when the agent has used up its process limit): SIGKILL, pass after pass while
any is found (a fork bomb forks on), every process this shell may signal that does not descend from it — a detached daemon, a fork bomb's orphans — sparing pid 1. Only
for a shell in its own pid namespace (outside one it would signal the host's processes of the same user)."""


def init_script(functions: Sequence[str], secret: str, prelude: str, workdir: str, reap: bool = False) -> str:
    """The session's first line: protocol fds, `prelude` (the runtime's limits and umask), the working directory,
    the host functions (and `REAP_FUNCTION` with `reap`); it ends with an end marker whose status field is the
    shell's own pid ($$)."""
    for name in functions:
        if not FUNCTION_NAME.fullmatch(name):
            raise ValueError(f"shell function name {name!r}: use letters, digits and _ (not first a digit)")
    call = (
        "__ss_call() { local __id=$BASHPID.$RANDOM$RANDOM __m __rid __rc __len __d; "
        f"printf '%s\\0' $'\\036'\"CALL-{secret} $__id $(( $# - 1 ))\" \"$PWD\" \"$@\" >&{OUT_FD}; "
        f"while IFS=' ' read -r __m __rid __rc __len <&{IN_FD}; do "
        f'__d=$("$__ss_head" -c "$__len" <&{IN_FD}); [ "$__rid" = "$__id" ] || continue; '
        'printf \'%b\' "${__d#?}"; return "$__rc"; done; return 1; }; '
    )
    defs = "".join(f'{name}() {{ __ss_call {name} "$@"; }}; ' for name in functions)
    return (f"exec {IN_FD}<&0 {OUT_FD}>&1 2>&1; {prelude or 'true'}; cd -- {ansi_c_quote(workdir)}; "
            f"__ss_head=$(command -v head); {call}{defs}{REAP_FUNCTION if reap else ''}"
            f"printf '\\036END-%s %d %s\\036\\n' init \"$$\" \"$PWD\" >&{OUT_FD}\n")


def command_line(command: str, nonce: str, reap: bool = False) -> bytes:
    """The line that runs `command` in the shell and then prints its end marker. The one-pass loop around the
    `eval` is what an interrupt breaks out of (`INTERRUPT_SIGNAL`'s trap, re-armed every command), at top level,
    so that `declare` still makes globals. With `reap`, processes that left the session die before the marker."""
    return (f"trap '[ -n \"$__ss_busy\" ] && break 100' {INTERRUPT_SIGNAL}; "
            f"for __ss_once in 1; do __ss_busy=1; eval {ansi_c_quote(command)}; done </dev/null >&{OUT_FD} 2>&1; "
            f"__ss_rc=$?; __ss_busy=; {'__ss_reap; ' if reap else ''}printf '\\036END-%s %d %s\\036\\n' {nonce} \"$__ss_rc\" \"$PWD\" >&{OUT_FD}\n"
            ).encode()


class _Ended(Exception):
    """The shell exited."""


class ShellSession:
    """One persistent bash over a `Channel` that `start()` opens (again after a restart). `interrupt(channel,
    shell_pid)` kills what the current command started, sparing the shell itself (`shell_pid` is its pid as
    it sees itself, $$); background jobs of earlier commands die with it. One command at a time (a lock)."""

    def __init__(self, start: Callable[[], Channel], interrupt: Callable[[Channel, int], None],
                 functions: Sequence[str], max_output_bytes: int, prelude: str, workdir: str,
                 name: str = "shell", grace_s: float = GRACE_S,
                 kill: Callable[[Channel, int], None] | None = None, reap_orphans: bool = False) -> None:
        """`kill(channel, shell_pid)`: end a stuck shell, where closing its channel does not (Docker's).
        `reap_orphans` (a shell in its own pid namespace only): after each command, kill what left the session
        (`REAP_FUNCTION`); its background jobs live on, as in MLGym."""
        self.reap_orphans = reap_orphans
        self._start, self._interrupt, self.grace_s, self._kill = start, interrupt, grace_s, kill
        self.functions, self.max_output_bytes = tuple(functions), max_output_bytes
        self._prelude, self.workdir, self.name = prelude, workdir, name
        self._secret = secrets.token_hex(8)
        self._call_prefix = f"\x1eCALL-{self._secret} ".encode()
        self._lock = threading.Lock()
        self._closed_why: str | None = None
        self._pending = bytearray()
        self.channel: Channel | None = None
        self.shell_pid = 0
        self.cwd = workdir
        self._open()

    # ----- lifecycle -----

    def _open(self) -> None:
        self.channel = self._start()
        self._pending.clear()
        buf = OutputBuffer(64_000)
        try:
            self.channel.send(init_script(self.functions, self._secret, self._prelude, self.workdir,
                                          self.reap_orphans).encode())
            end = self._until_end("init", buf, time.monotonic() + START_TIMEOUT_S, None)
        except (OSError, _Ended) as e:
            end = None
            logger.debug("%s: start failed: %s", self.name, e)
        if end is None:
            self.channel.close()
            raise SandboxError(f"{self.name}: the shell session did not start within {START_TIMEOUT_S:.0f} s "
                               f"(output: {buf.text()[-500:]!r}); the sandbox is broken, start a new one")
        self.shell_pid, self.cwd = end

    @property
    def alive(self) -> bool:
        return self._closed_why is None and self.channel is not None and self.channel.exit_code() is None

    def close(self, why: str = "closed", kill: bool = True) -> None:
        """Kill the shell and what it runs (`kill=False`: the caller's sandbox does). Idempotent; `why` goes into
        the error a later `run` raises."""
        if self._closed_why is None:
            self._closed_why = why
        if self.channel is not None:
            self._end_channel(kill)

    def _end_channel(self, kill: bool = True) -> None:
        if kill and self._kill is not None and self.channel.exit_code() is None:
            try:
                self._kill(self.channel, self.shell_pid)
            except SandboxError as e:
                logger.info("%s: could not kill the shell (%s)", self.name, e)
        self.channel.close()

    def tree_root(self) -> Channel | None:
        return self.channel if self._closed_why is None else None

    # ----- commands -----

    def run(self, command: str, timeout_s: float, on_call: ShellCall | None = None) -> ShellResult:
        """See `engine.protocols.Shell.run`. Time spent in `on_call` does not count against `timeout_s`."""
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        with self._lock:
            if self._closed_why is not None:
                raise SandboxError(f"{self.name}: the shell session was {self._closed_why}; start a new one "
                                   "with sandbox.shell()")
            if self.channel.exit_code() is not None:
                self.close("killed from outside")
                raise SandboxError(f"{self.name}: the shell session died between commands (killed from outside, "
                                   "or its sandbox ended); start a new sandbox")
            return self._run(command, timeout_s, on_call)

    def _run(self, command: str, timeout_s: float, on_call: ShellCall | None) -> ShellResult:
        nonce = secrets.token_hex(8)
        buf = OutputBuffer(self.max_output_bytes)
        start = time.monotonic()
        timed_out = restarted = False
        try:
            self.channel.send(command_line(command, nonce, self.reap_orphans))
            end = self._until_end(nonce, buf, start + timeout_s, on_call)
            if end is None:
                timed_out = True
                end = self._stop(nonce, buf)
        except (OSError, _Ended):
            end = None  # the shell exited while running it: `exit`, `exec`, `kill $$`, `set -e`
        if end is None:
            code = self._exit_code_soon() if not timed_out else None
            logger.info("%s: %s; restarting the session", self.name,
                        "stuck after the timeout" if timed_out else f"the shell exited ({code})")
            self._end_channel()
            self._open()  # SandboxError here: the sandbox itself is gone
            restarted = True
            end = (code if code is not None else 1, self.cwd)
        exit_code, self.cwd = end
        return ShellResult(exit_code=KILL_EXIT_CODE if timed_out else exit_code, output=buf.text(),
                           timed_out=timed_out, duration_s=time.monotonic() - start,
                           output_truncated=buf.truncated, cwd=self.cwd, session_restarted=restarted)

    def _exit_code_soon(self) -> int | None:
        """The exit status of a shell whose output just ended (it may take a moment to be reaped)."""
        for _ in range(100):
            code = self.channel.exit_code()
            if code is not None:
                return code
            time.sleep(0.01)
        return None

    def _stop(self, nonce: str, buf: OutputBuffer) -> tuple[int, str] | None:
        """Interrupt the running command until its end marker comes (what it runs next is killed too); None when
        the shell is still busy after `grace_s` (a builtin loop that defeats the trap)."""
        grace_end = time.monotonic() + self.grace_s
        end = None
        while end is None and time.monotonic() < grace_end:
            self._interrupt(self.channel, self.shell_pid)
            end = self._until_end(nonce, buf, min(grace_end, time.monotonic() + INTERRUPT_EVERY_S), None)
        return end

    def _until_end(self, nonce: str, buf: OutputBuffer, deadline: float,
                   on_call: ShellCall | None) -> tuple[int, str] | None:
        """Feed output to `buf` and answer calls until the end marker of `nonce`: (status, $PWD); None at
        `deadline` (pushed back by the time calls take). Raises _Ended when the shell exits."""
        end_prefix = f"\x1eEND-{nonce} ".encode()
        while True:
            event = self._parse(end_prefix, buf)
            if event is not None:
                kind, value = event
                if kind == "end":
                    return value
                started = time.monotonic()
                self._answer(on_call, *value)
                deadline += time.monotonic() - started
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            chunk = self.channel.recv(remaining)
            if chunk == b"":
                raise _Ended()
            if chunk:
                self._pending += chunk

    def _parse(self, end_prefix: bytes, buf: OutputBuffer) -> tuple[str, object] | None:
        """Move output from the pending bytes to `buf` up to the first complete marker, and return it:
        ("end", (status, pwd)) or ("call", (id, name, argv, pwd)); None when more bytes are needed."""
        p = self._pending
        while True:
            i = p.find(MARK)
            if i < 0:
                buf.feed(bytes(p))
                p.clear()
                return None
            if i:
                buf.feed(bytes(p[:i]))
                del p[:i]
            for prefix in (end_prefix, self._call_prefix):
                if len(p) < len(prefix) and prefix.startswith(bytes(p)):
                    return None  # maybe a marker: wait for the rest
            if p.startswith(end_prefix):
                j = p.find(b"\x1e\n", len(end_prefix))
                if j < 0:
                    return None
                status, _, pwd = bytes(p[len(end_prefix):j]).decode("utf-8", "replace").partition(" ")
                del p[:j + 2]
                return "end", (int(status), pwd)
            if p.startswith(self._call_prefix):
                call = self._parse_call(p)
                return None if call is None else ("call", call)
            buf.feed(bytes(p[:1]))  # the agent's own \036
            del p[:1]

    def _parse_call(self, p: bytearray) -> tuple[str, str, list[str], str] | None:
        head_end = p.find(b"\0")
        if head_end < 0:
            return None
        call_id, _, argc = bytes(p[len(self._call_prefix):head_end]).decode().partition(" ")
        fields, pos = [], head_end + 1
        for _ in range(int(argc) + 2):
            nul = p.find(b"\0", pos)
            if nul < 0:
                return None
            fields.append(bytes(p[pos:nul]).decode("utf-8", "replace"))
            pos = nul + 1
        del p[:pos]
        pwd, name, *argv = fields
        return call_id, name, argv, pwd

    def _answer(self, on_call: ShellCall | None, call_id: str, name: str, argv: list[str], pwd: str) -> None:
        if on_call is None:
            text, code = f"{name}: not available here\n", 127
        else:
            try:
                text, code = on_call(name, argv, pwd)
            except Exception:  # the handler's bug: reply, so the command ends, then let it surface
                self._reply(call_id, f"{name}: internal error\n", 1)
                raise
        self._reply(call_id, text, code)

    def _reply(self, call_id: str, text: str, code: int) -> None:
        body = b"#" + escape_reply(text) + b"\n"
        self.channel.send(f"#R {call_id} {int(code) & 255} {len(body)}\n".encode() + body)


# ----- a bash started on this host -----


class PipeChannel:
    """A bash process started here with stdin and stdout pipes (directly, or through bwrap or nsenter)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self._out = proc.stdout.fileno()
        self._in = proc.stdin.fileno()
        os.set_blocking(self._out, False)
        self._pidfd = os.pidfd_open(proc.pid)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._out, selectors.EVENT_READ, "out")
        self._sel.register(self._pidfd, selectors.EVENT_READ, "exit")
        self._closed = False

    def send(self, data: bytes) -> None:
        if self._closed:
            raise BrokenPipeError("the session is closed")
        view = memoryview(data)
        while view:
            view = view[os.write(self._in, view):]

    def recv(self, timeout_s: float) -> bytes | None:
        if self._closed:
            return b""
        try:
            chunk = os.read(self._out, READ_CHUNK_BYTES)
            return chunk  # b"": every writer is gone
        except BlockingIOError:
            pass
        ready = {key.data for key, _ in self._sel.select(timeout=max(0.0, timeout_s))}
        if "out" in ready:
            try:
                return os.read(self._out, READ_CHUNK_BYTES)
            except BlockingIOError:
                return None
        if "exit" in ready:  # exited, yet what it started may still hold the pipe open
            return b""
        return None

    def exit_code(self) -> int | None:
        code = self.proc.poll()
        return None if code is None else (128 - code if code < 0 else code)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        kill_tree(self.proc.pid, keep=())
        self.proc.wait()
        self._sel.close()
        os.close(self._pidfd)
        self.proc.stdin.close()
        self.proc.stdout.close()


def start_bash(argv: list[str], *, env: dict[str, str], cwd: str | None = None, pass_fds: tuple[int, ...] = (),
               popen: Callable[..., subprocess.Popen] = subprocess.Popen) -> PipeChannel:
    """Start `argv` (ending in a bash) in its own session with stdin and stdout pipes, stderr merged."""
    try:
        proc = popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                     cwd=cwd, start_new_session=True, pass_fds=pass_fds)
    except OSError as e:
        raise SandboxError(f"could not start the shell session ({argv[0]!r}): {e}") from e
    return PipeChannel(proc)


def process_table() -> dict[int, tuple[int, int]]:
    """{pid: (parent pid, owner uid)} of every process this host shows."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            table[int(entry.name)] = (int(stat[stat.rindex(b")") + 2:].split()[1]), entry.stat().st_uid)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return table


def descendants(roots: set[int], table: dict[int, tuple[int, int]]) -> set[int]:
    """`roots` and every process below them in `table`."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def host_pid(root: int, ns_pid: int) -> int | None:
    """The host pid of the process below `root` that calls itself `ns_pid` in its own pid namespace."""
    for pid in sorted(descendants({root}, process_table())):
        try:
            with open(f"/proc/{pid}/status") as f:
                nspid = next(line for line in f if line.startswith("NSpid:")).split()
        except (OSError, StopIteration):
            continue
        if int(nspid[-1]) == ns_pid:
            return pid
    return None


def kill_tree(root: int, keep: Sequence[int], rounds: int = 20) -> None:
    """SIGKILL every process below `root` (and `root`) except those in `keep` and their ancestors, until none is
    left (a forking process may add some meanwhile)."""
    for _ in range(rounds):
        table = process_table()
        spared = set()
        for pid in keep:
            while pid in table and pid not in spared:
                spared.add(pid)
                pid = table[pid][0]
        victims = descendants({root}, table) - spared
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.002)


def local_session(argv: list[str], *, env: dict[str, str], workdir: str, max_output_bytes: int,
                  functions: Sequence[str] = (), prelude: str = "", name: str = "shell",
                  grace_s: float = GRACE_S) -> ShellSession:
    """A session over a plain bash on this host, no isolation (the test double's, and the unsandboxed runtime's):
    an interrupt kills everything below the shell."""

    def interrupt(channel: PipeChannel, shell_pid: int) -> None:
        os.kill(shell_pid, signal.SIGURG)
        kill_tree(channel.proc.pid, keep=[shell_pid])

    return ShellSession(lambda: start_bash(argv, env=env, cwd=workdir), interrupt, functions, max_output_bytes,
                        prelude, workdir, name, grace_s)
