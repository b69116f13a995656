"""How the host reads files and listings out of a sandbox, the same way on every runtime: the caps in size and time,
the reader and lister scripts that run inside as the sandbox user, how their answers turn into bytes or errors,
and the errors an agent's files cause. Reads and writes nothing itself.

The rules (both runtimes, every read: `read_file`, `copy_out`, `list_files`):
- At most `MAX_READ_BYTES` of a file (`MAX_LIST_BYTES` of a listing) is ever read or held; beyond: FileTooLargeError.
- Within `READ_TIMEOUT_S`; beyond: SandboxError (with the checks below a read cannot block, so a slow one means a
  stuck sandbox, not the agent's doing).
- Only regular files: a FIFO, device or socket is refused before it is opened (SpecialFileError), never read.
- A symbolic link is followed only to a target inside the workspace (LinkEscapeError otherwise), so that no link
  leads a read to /dev/zero, /proc or a secret of the image. A path given outside the workspace (/tmp/notes.txt)
  is read when no link is on its way.
- As the sandbox user, so that permissions bind: the host reads nothing the agent could not.
- Listings are NUL-separated (`find -print0`): a newline in a name cannot forge an entry.

The errors an agent can cause are OSErrors (FileNotFoundError, PermissionError, IsADirectoryError and the
`UnsafeFileError` family below), never SandboxError, which means the cluster failed and makes the episode retried:
callers treat an OSError from a sandbox's file as the agent's (a missing or invalid submission).
"""

from __future__ import annotations

import errno

from engine.errors import SandboxError
from engine.sandbox.common import decode_output, raise_file_error

MiB = 1024 * 1024
MAX_READ_BYTES = 64 * MiB
"""Default cap of `read_file` and `copy_out`: a file above it raises FileTooLargeError."""
MAX_LIST_BYTES = 1 * MiB
"""Cap of one `list_files` answer (the NUL-separated names): a listing above it raises FileTooLargeError."""
READ_TIMEOUT_S = 60.0
"""Time a read or listing may take before the sandbox counts as stuck (SandboxError)."""
MAX_ERROR_BYTES = 4096
"""What is kept of a reader's error output."""


class UnsafeFileError(OSError):
    """A file the host refuses to read out of a sandbox; the agent's doing, never the cluster's. Subclasses say
    why. An OSError, like FileNotFoundError, so that callers treat it as a bad submission."""


class FileTooLargeError(UnsafeFileError):
    """Larger than the read's cap (or a listing longer than `MAX_LIST_BYTES`)."""

    def __init__(self, path: str, cap_bytes: int, size_bytes: int | None = None, what: str = "file") -> None:
        size = f"{size_bytes} bytes" if size_bytes is not None else "more"
        super().__init__(errno.EFBIG, f"{what} holds {size}, over the host's read cap of {cap_bytes} bytes; "
                                      "write a smaller one", path)


class SpecialFileError(UnsafeFileError):
    """Not a regular file: a FIFO, device or socket, which could block or never end."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"is a {kind}, not a regular file; the host reads only regular files", path)


class LinkEscapeError(UnsafeFileError):
    """Reached through a symbolic link that leads out of the workspace."""

    def __init__(self, path: str, target: str) -> None:
        super().__init__(errno.EXDEV, f"a symbolic link leads out of the workspace, to {target!r}; the host "
                                      "follows links only within the workspace", path)


# $1 path (absolute, normalised), $2 cap in bytes, $3 the workspace. Exit 0: the file on stdout (at most cap + 1
# bytes, so the host sees an overflow without reading more); 2: an error message from a tool (no such file,
# permission denied, is a directory); 3: a link leads out (target on stderr); 4: not a regular file (its kind);
# 5: too large (its size). The trailing '.' keeps a newline that ends a name.
READ_SCRIPT = r"""
ws=$(realpath -e -- "$3" && echo .) || exit 2; ws=${ws%?.}
r=$(realpath -e -- "$1" && echo .) || exit 2; r=${r%?.}
if [ "$r" != "$1" ]; then case $r in "$ws"/*) ;; *) printf %s "$r" >&2; exit 3 ;; esac; fi
if [ -d "$r" ]; then echo "$1: Is a directory" >&2; exit 2; fi
if [ ! -f "$r" ]; then stat -c %F -- "$r" >&2; exit 4; fi
size=$(stat -c %s -- "$r") || exit 2
if [ "$size" -gt "$2" ]; then printf %s "$size" >&2; exit 5; fi
exec head -c $(($2 + 1)) -- "$r"
"""

# $1 folder, $2 cap in bytes, $3 the workspace, $4 depth: regular files below the folder, NUL-separated, relative to
# it ("./" dropped), links not followed; the folder itself is resolved like a file in READ_SCRIPT (exit 6: not a
# folder). `head` stops the listing one byte past the cap.
LIST_SCRIPT = r"""
ws=$(realpath -e -- "$3" && echo .) || exit 2; ws=${ws%?.}
r=$(realpath -e -- "$1" && echo .) || exit 2; r=${r%?.}
if [ "$r" != "$1" ]; then case $r in "$ws"/*) ;; *) printf %s "$r" >&2; exit 3 ;; esac; fi
if [ ! -d "$r" ]; then exit 6; fi
cd -- "$r" || exit 2
find . -mindepth 1 -maxdepth "$4" -type f -printf '%P\0' 2>/dev/null | head -c $(($2 + 1))
"""


def read_argv(path: str, cap_bytes: int, workdir: str) -> list[str]:
    """The reader's command line (run as the sandbox user, inside)."""
    return ["sh", "-c", READ_SCRIPT, "synthscale-read", path, str(cap_bytes), workdir]


def list_argv(path: str, cap_bytes: int, workdir: str, max_depth: int) -> list[str]:
    """The lister's command line (run as the sandbox user, inside)."""
    return ["sh", "-c", LIST_SCRIPT, "synthscale-list", path, str(cap_bytes), workdir, str(max_depth)]


def check_answer(path: str, exit_code: int | None, stdout: bytes, stderr: bytes, cap_bytes: int,
                 what: str = "file") -> bytes:
    """The bytes a reader or lister sent, or the error its exit code stands for.

    >>> check_answer("/w/a", 0, b"abc", b"", cap_bytes=3)
    b'abc'
    >>> for code, out, err in [(0, b"abcd", b""), (4, b"", b"fifo\\n"), (3, b"", b"/dev/zero")]:
    ...     try:
    ...         check_answer("/w/a", code, out, err, cap_bytes=3)
    ...     except OSError as e:
    ...         print(type(e).__name__, e.errno, e.strerror.split(";")[0])
    FileTooLargeError 27 file holds more, over the host's read cap of 3 bytes
    SpecialFileError 22 is a fifo, not a regular file
    LinkEscapeError 18 a symbolic link leads out of the workspace, to '/dev/zero'
    """
    detail = decode_output(stderr[:MAX_ERROR_BYTES]).strip()
    if exit_code == 0:
        if len(stdout) > cap_bytes:
            raise FileTooLargeError(path, cap_bytes, what=what)
        return stdout
    if exit_code == 3:
        raise LinkEscapeError(path, detail)
    if exit_code == 4:
        raise SpecialFileError(path, detail or "special file")
    if exit_code == 5:
        raise FileTooLargeError(path, cap_bytes, int(detail) if detail.isdigit() else None, what=what)
    if exit_code == 6:
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
    if exit_code is None:
        raise SandboxError(f"reading {path!r} in the sandbox did not end; the sandbox is stuck")
    raise_file_error(path, exit_code, stderr[:MAX_ERROR_BYTES])
    raise AssertionError("unreachable")  # raise_file_error always raises


def split_listing(data: bytes) -> list[str]:
    """Names from a NUL-separated listing, sorted; bytes that are not UTF-8 kept as surrogate escapes (os.fsdecode).

    >>> split_listing(b"b\\0a/x\\ny\\0")
    ['a/x\\ny', 'b']
    """
    return sorted(name.decode("utf-8", "surrogateescape") for name in data.split(b"\0") if name)
