"""Helpers shared by the sandbox runtimes: the minimal environment, capped output, path mapping, file errors,
and the starter-workspace tar (ownership and read-only modes baked in)."""

from __future__ import annotations

import errno
import io
import logging
import os
import posixpath
import shlex
import tarfile
from pathlib import Path

from engine.errors import SandboxError

logger = logging.getLogger(__name__)

WORKDIR = "/home/agent/workspace"
"""The agent's workspace inside every sandbox."""
HOME = "/home/agent"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
KILL_EXIT_CODE = 128 + 9
AGENT_UMASK = 0o022
"""The sandbox user's umask, set explicitly so that files the runtime creates for it get the same modes."""
PRIVATE_UMASK = 0o077
"""The umask of a private sandbox's owner (`umask_of`)."""


def minimal_env(path: str, home: str = HOME, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a sandboxed command: nothing from the host's.

    >>> minimal_env("/usr/bin:/bin")["PATH"], sorted(minimal_env("/bin"))
    ('/usr/bin:/bin', ['HOME', 'LANG', 'MPLBACKEND', 'PATH', 'PYTHONUNBUFFERED'])
    """
    env = {"PATH": path, "HOME": home, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    env.update(extra or {})
    return env


def decode_output(data: bytes) -> str:
    """Command output as text; bytes that are not UTF-8 become U+FFFD instead of failing."""
    return data.decode("utf-8", errors="replace")


class OutputBuffer:
    """Keeps the first `cap_bytes` of a stream and counts (then drops) the rest, so a command printing
    gigabytes costs no memory and still runs to completion.

    >>> buf = OutputBuffer(cap_bytes=4); buf.feed(b"abc"); buf.feed(b"def")
    >>> buf.data, buf.truncated, buf.total_bytes
    (b'abcd', True, 6)
    """

    def __init__(self, cap_bytes: int) -> None:
        self.cap_bytes = cap_bytes
        self._parts: list[bytes] = []
        self._kept = 0
        self.total_bytes = 0

    def feed(self, chunk: bytes) -> None:
        self.total_bytes += len(chunk)
        room = self.cap_bytes - self._kept
        if room > 0 and chunk:
            part = chunk[:room]
            self._parts.append(part)
            self._kept += len(part)

    @property
    def truncated(self) -> bool:
        return self.total_bytes > self.cap_bytes

    @property
    def data(self) -> bytes:
        return b"".join(self._parts)

    def text(self) -> str:
        """The kept output, decoded, with a note saying how much was dropped."""
        text = decode_output(self.data)
        if self.truncated:
            dropped = self.total_bytes - self._kept
            text += f"\n[output truncated: {dropped} more bytes not shown]"
        return text


def sandbox_path(path: str, workdir: str = WORKDIR) -> str:
    """An absolute in-sandbox path: workspace-relative paths are joined to the workspace.

    >>> sandbox_path("data/x.csv"), sandbox_path("/tmp/a"), sandbox_path("a/../b")
    ('/home/agent/workspace/data/x.csv', '/tmp/a', '/home/agent/workspace/b')
    """
    if not path:
        raise ValueError("empty path; pass a workspace-relative or absolute path")
    return posixpath.normpath(path if path.startswith("/") else posixpath.join(workdir, path))


def bash_script(command: str, cwd: str) -> str:
    """The text given to `bash -c`: change to `cwd` (failing like a shell would) then run the command."""
    return f"cd -- {shlex.quote(cwd)} || exit 1\n{command}"


def raise_file_error(path: str, exit_code: int, stderr: bytes) -> None:
    """Turn a failed file operation inside the sandbox (`cat`, `head`, `realpath`, a write) into the OSError Python
    would raise for it; what no file explains is the sandbox's failure (SandboxError)."""
    message = decode_output(stderr).strip() or f"exit code {exit_code}"
    if "No such file" in message or "Not a directory" in message or "Directory nonexistent" in message:  # dash's
        raise FileNotFoundError(errno.ENOENT, f"{message}", path)
    if "Permission denied" in message or "Read-only file system" in message or "Operation not permitted" in message:
        raise PermissionError(errno.EACCES, f"{message}", path)
    if "Is a directory" in message:
        raise IsADirectoryError(errno.EISDIR, f"{message}", path)
    if "No space left" in message or "File too large" in message:
        raise OSError(errno.ENOSPC, f"{message}", path)
    if "Too many levels of symbolic links" in message:  # a link loop the agent made
        raise OSError(errno.ELOOP, f"{message}", path)
    if "File name too long" in message:
        raise OSError(errno.ENAMETOOLONG, f"{message}", path)
    raise SandboxError(f"file operation on {path!r} in the sandbox failed: {message}")


def max_file_bytes(workspace_mb: int) -> int:
    """The largest file a sandboxed process may write (RLIMIT_FSIZE): a little above the workspace's size, so that
    filling the workspace reports a full disk (ENOSPC) as it should, while no file, sparse or in another
    scratch folder, can be larger (`truncate -s 100G` fails).

    >>> max_file_bytes(512) // 2**20
    513
    """
    return (workspace_mb + 1) * 1024 * 1024


def sandbox_uid(agent_uid: int, spec: object) -> int:
    """The uid a sandbox's processes run as: the spec's `uid` when it names one (a grader's sandbox, say),
    else the agent's (`SandboxConfig.uid`).

    >>> from types import SimpleNamespace
    >>> [sandbox_uid(1000, spec) for spec in (SimpleNamespace(uid=None), SimpleNamespace(uid=1001), object())]
    [1000, 1001, 1000]
    """
    uid = getattr(spec, "uid", None)  # SandboxSpec.uid, where the engine's SandboxSpec has that field
    if uid is None:
        return agent_uid
    if uid < 1:
        raise SandboxError(f"SandboxSpec.uid {uid} is not an unprivileged uid; use one >= 1 other than root's")
    return uid


def umask_of(uid: int, owner_uid: int, agent_uid: int) -> int:
    """The umask of a process running as `uid` in a sandbox of `owner_uid`: 077 for the owner of a private sandbox
    (one whose owner is not the agent), so that nothing it writes is readable by the agent's uid; 022 otherwise.

    >>> oct(umask_of(1001, 1001, 1000)), oct(umask_of(1000, 1001, 1000)), oct(umask_of(1000, 1000, 1000))
    ('0o77', '0o22', '0o22')
    """
    return PRIVATE_UMASK if uid == owner_uid != agent_uid else AGENT_UMASK


def _read_only_set(root: Path, read_only_paths: list[str]) -> tuple[set[str], set[str]]:
    """Workspace-relative names that become root-owned read-only, and the folders above them that become
    root-owned and sticky (so the agent can add files there but cannot delete or rename ours)."""
    locked: set[str] = set()
    sticky: set[str] = set()
    for rel in read_only_paths:
        norm = posixpath.normpath(rel)
        if norm.startswith("/") or norm == ".." or norm.startswith("../"):
            raise SandboxError(f"read_only_paths entry {rel!r} is not workspace-relative; fix the task's spec")
        target = root / norm
        if not target.exists():
            raise SandboxError(f"read_only_paths entry {rel!r} does not exist in {root}; fix the task's spec")
        locked.add(norm)
        if target.is_dir():
            locked.update(str(p.relative_to(root)) for p in target.rglob("*"))
        parent = posixpath.dirname(norm)
        while parent:
            sticky.add(parent)
            parent = posixpath.dirname(parent)
    return locked, sticky


def workspace_tar(src: Path, read_only_paths: list[str], uid: int, dest: Path, private: bool = False) -> Path:
    """Write the starter workspace `src` as a tar at `dest` whose members carry their final owners and modes:
    the sandbox user (`uid`) owns everything except `read_only_paths` (root, 0444 files / 0555 folders) and the
    folders above them (root, 01777). Extract it as root with ownership kept (tar -xp, tarfile as root).
    The tar holds no '.' entry: the workspace folder itself (a root-owned sticky tmpfs) keeps its mode.

    `private` (a sandbox whose user is not the agent, `umask_of`): no member is readable by others, the user's own
    files are 0600/0700 and the read-only ones root's with the user's group (0440/0550, sticky folders 01770), so
    that a process of the agent's uid in the same sandbox can read none of them."""
    src = Path(src)
    if not src.is_dir():
        raise SandboxError(f"starter workspace {src} is not a folder; check the task folder's workspace/")
    locked, sticky = _read_only_set(src, read_only_paths)
    others = 0o770 if private else 0o777  # the bits a member may keep
    group = uid if private else 0  # of root's members
    with tarfile.open(dest, "w") as tar:
        for path in sorted(src.rglob("*")):
            rel = str(path.relative_to(src))
            info = tar.gettarinfo(str(path), arcname=rel)
            info.uname = info.gname = ""
            if rel in locked:
                info.uid, info.gid = 0, group
                info.mode = (0o555 if info.isdir() else 0o444) & others
            elif rel in sticky:
                info.uid, info.gid = 0, group
                info.mode = 0o1000 | 0o777 & others
            else:
                info.uid = info.gid = uid
                if info.isdir():
                    info.mode |= 0o700
                elif not info.issym():
                    info.mode |= 0o600
                if private and not info.issym():
                    info.mode &= 0o7700
            if info.isfile():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return dest


def single_file_tar(name: str, data: bytes, mode: int = 0o600) -> bytes:
    """A tar holding one root-owned file (to hand a file to `put_archive`)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def wrap_file_in_tar(path: Path, name: str, dest: Path, mode: int = 0o600) -> Path:
    """Write a tar at `dest` holding the file `path` as one root-owned member `name` (streamed, not loaded)."""
    with tarfile.open(dest, "w") as tar:
        info = tar.gettarinfo(str(path), arcname=name)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = mode
        with Path(path).open("rb") as f:
            tar.addfile(info, f)
    return dest


def write_host_file(dest: Path, data: bytes) -> None:
    """Write a file copied out of a sandbox onto the host atomically (a `.part` file, then a rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(dest)


def pid_alive(pid: int) -> bool:
    """Whether a process of this host still exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
