"""Reads and writes a local sandbox's workspace files from the host, exactly as the sandbox user could, without
starting a sandboxed process; reads and writes only under the workspace folder it is given.

The runtime (root) opens every component with O_NOFOLLOW and checks the sandbox user's permission bits on what
it opened. Whatever it cannot decide that way (a symlink on the path, a permission the user lacks, a missing
folder, a node it cannot open) it leaves to the caller, who then runs the operation inside the sandbox and gets
the exact answer or error. Reads keep the rules of `engine.sandbox.reads`: a FIFO, device or socket is refused
(opened without blocking, never read), and nothing over the cap is read. Valid only while no process of the sandbox runs (between commands,
which is when the local runtime's processes are all gone), as a concurrent process could change a mode after
the check.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from engine.sandbox.reads import FileTooLargeError, SpecialFileError

READ, WRITE, SEARCH = 4, 2, 1
_KINDS = {stat.S_IFIFO: "fifo", stat.S_IFCHR: "character special file", stat.S_IFBLK: "block special file",
          stat.S_IFSOCK: "socket"}  # the names `stat -c %F` gives
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_UNDECIDED = (errno.ELOOP, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ENXIO, errno.EISDIR)


def allowed(st: os.stat_result, uid: int, want: int) -> bool:
    """Whether user `uid` (group `uid`, no other groups, no capabilities) has the `want` bits on `st`.

    >>> import os; st = os.stat_result((0o100640, 0, 0, 1, 0, 1000, 0, 0, 0, 0))
    >>> allowed(st, 1000, READ), allowed(st, 1000, WRITE), allowed(st, 7, READ)
    (True, False, False)
    """
    mode = st.st_mode
    if st.st_uid == uid:
        bits = mode >> 6
    elif st.st_gid == uid:
        bits = mode >> 3
    else:
        bits = mode
    return bits & want == want


def _open_parent(root: Path, parts: list[str], uid: int) -> int | None:
    """An fd of the folder holding `parts[-1]`, every folder on the way searchable by `uid`; None when that
    cannot be decided here. FileNotFoundError when a folder on the way is missing."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for name in parts[:-1]:
            if not allowed(os.fstat(fd), uid, SEARCH):
                return None
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in _UNDECIDED:
                    return None
                raise
            os.close(fd)
            fd = child
        if not allowed(os.fstat(fd), uid, SEARCH):
            return None
        parent, fd = fd, -1
        return parent
    finally:
        if fd != -1:
            os.close(fd)


def _parts(rel: str) -> list[str] | None:
    parts = rel.split("/")
    return None if not rel or any(p in ("", ".", "..") for p in parts) else parts


def read_as(root: Path, rel: str, uid: int, max_bytes: int) -> bytes | None:
    """Bytes of the file `rel` (relative, normalised) under `root` if `uid` may read it; None when the sandbox
    must answer. FileNotFoundError and IsADirectoryError where the sandbox would raise them; SpecialFileError for
    a FIFO, device or socket (never opened for reading, so never blocking), FileTooLargeError above `max_bytes`
    (never more than that read)."""
    parts = _parts(rel)
    if parts is None:
        return None
    parent = _open_parent(root, parts, uid)
    if parent is None:
        return None
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                         dir_fd=parent)
        except OSError as e:
            if e.errno in _UNDECIDED:
                return None
            raise
    finally:
        os.close(parent)
    try:  # not os.fdopen: on a folder it raises without closing the fd, which then pins the workspace's mount
        st = os.fstat(fd)
        if not allowed(st, uid, READ):
            return None
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", rel)
        if not stat.S_ISREG(st.st_mode):
            raise SpecialFileError(rel, _KINDS.get(stat.S_IFMT(st.st_mode), "special file"))
        if st.st_size > max_bytes:
            raise FileTooLargeError(rel, max_bytes, st.st_size)
        data = bytearray()
        while len(data) <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - len(data)))
            if not chunk:
                return bytes(data)
            data += chunk
        raise FileTooLargeError(rel, max_bytes)  # it grew while read
    finally:
        os.close(fd)


def write_as(root: Path, rel: str, data: bytes, uid: int, mode: int) -> bool:
    """Write `data` to `rel` under `root` as `uid` would: an existing regular file it may write is truncated and
    rewritten (owner and mode kept); a new file in a folder it may write is created owned by `uid` with `mode`.
    False (nothing written) when the sandbox must do it: a missing folder to create, a symlink, no permission."""
    parts = _parts(rel)
    if parts is None:
        return False
    try:
        parent = _open_parent(root, parts, uid)
    except FileNotFoundError:
        return False  # `mkdir -p` in the sandbox makes the missing folders, owned by the agent
    if parent is None:
        return False
    try:
        fd = _open_for_writing(parent, parts[-1], uid, mode)
    finally:
        os.close(parent)
    if fd is None:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def _open_for_writing(parent: int, name: str, uid: int, mode: int) -> int | None:
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:  # look before opening: opening a starter file for writing would copy it up into the overlay's tmpfs
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISREG(st.st_mode) or not allowed(st, uid, WRITE):
            return None
        try:
            fd = os.open(name, flags, dir_fd=parent)
        except OSError as e:
            if e.errno in _UNDECIDED or e.errno == errno.ENOENT:
                return None
            raise
        os.ftruncate(fd, 0)
        return fd
    folder = os.fstat(parent)
    if not allowed(folder, uid, WRITE | SEARCH) or folder.st_mode & stat.S_ISGID:
        return None  # a setgid folder would give the file its group: let the sandbox create it
    try:
        fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=parent)
    except FileExistsError:
        return None
    os.fchown(fd, uid, uid)
    os.fchmod(fd, mode)
    return fd
