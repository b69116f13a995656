"""The pure building blocks that keep a hostile agent's sandbox from harming the host: how a reader's answer becomes
bytes or the agent's error, docker's multiplexed stream split under any chunking, the keyring seccomp filter, the
private starter tar's modes, the passwd of a private sandbox. No sandbox, no Docker; the filter is tried in a child
process that sets no_new_privs, so no root is needed."""

from __future__ import annotations

import doctest
import errno
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from engine.errors import SandboxError
from engine.sandbox import bwrap, common, dockerio, reads, seccomp
from engine.sandbox.bwrap import agent_passwd
from engine.sandbox.common import workspace_tar
from engine.sandbox.dockerio import Frames
from engine.sandbox.reads import (
    FileTooLargeError, LinkEscapeError, SpecialFileError, UnsafeFileError, check_answer, split_listing,
)  # fmt: skip


@pytest.mark.parametrize("module", [reads, dockerio, seccomp, common, bwrap])
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


def test_reader_answers_become_the_agents_errors() -> None:
    """Every refusal is an OSError naming the path (grading treats those as the submission's fault); only a
    failure no file explains is the sandbox's (SandboxError, retried as an infra error)."""
    assert check_answer("/w/a", 0, b"abc", b"", cap_bytes=3) == b"abc"
    cases = [
        (0, b"abcd", b"", FileTooLargeError, errno.EFBIG, "file holds more, over the host's read cap of 3 bytes"),
        (5, b"", b"4096", FileTooLargeError, errno.EFBIG, "file holds 4096 bytes, over the host's read cap of 3 bytes"),
        (4, b"", b"fifo\n", SpecialFileError, errno.EINVAL, "is a fifo, not a regular file"),
        (3, b"", b"/dev/zero", LinkEscapeError, errno.EXDEV, "leads out of the workspace, to '/dev/zero'"),
        (6, b"", b"", NotADirectoryError, errno.ENOTDIR, "Not a directory"),
        (2, b"", b"realpath: /w/a: No such file or directory\n", FileNotFoundError, errno.ENOENT, "No such file"),
        (1, b"", b"head: cannot open '/w/a' for reading: Permission denied\n", PermissionError, errno.EACCES, "denied"),
        (2, b"", b"/w/a: Is a directory\n", IsADirectoryError, errno.EISDIR, "Is a directory"),
        (2, b"", b"realpath: /w/a: Too many levels of symbolic links\n", OSError, errno.ELOOP, "Too many levels"),
    ]
    for code, out, err, kind, number, text in cases:
        with pytest.raises(kind) as e:
            check_answer("/w/a", code, out, err, cap_bytes=3)
        assert (e.value.errno, e.value.filename) == (number, "/w/a") and text in e.value.strerror, e.value
    for kind in (FileTooLargeError, SpecialFileError, LinkEscapeError):
        assert issubclass(kind, UnsafeFileError) and issubclass(kind, OSError) and not issubclass(kind, SandboxError)
    with pytest.raises(SandboxError, match="nsenter: cannot open"):
        check_answer("/w/a", 1, b"", b"nsenter: cannot open /proc/5/ns/mnt\n", cap_bytes=3)
    with pytest.raises(SandboxError, match="stuck"):
        check_answer("/w/a", None, b"", b"", cap_bytes=3)


def test_listings_split_at_nul_only() -> None:
    assert split_listing(b"z\0evil\n./submission.csv/f\0a b\0\xff\0") == [
        "a b", "evil\n./submission.csv/f", "z", "\udcff"]
    assert split_listing(b"") == []


def test_frames_survive_any_chunking() -> None:
    """dockerd's frames (8-byte header, then the payload) split the same whether they arrive whole, byte by byte
    or with headers cut in two; an empty frame yields nothing."""
    stream = (b"\x01\0\0\0\0\0\0\x05hello" + b"\x02\0\0\0\0\0\0\x03err" + b"\x01\0\0\0\0\0\0\0"
              + b"\x01\0\0\0\0\0\0\x01!")
    for size in (1, 3, 7, 8, 9, len(stream)):
        frames = Frames()
        pieces = [p for i in range(0, len(stream), size) for p in frames.feed(stream[i:i + size])]
        joined = {1: b"".join(d for s, d in pieces if s == 1), 2: b"".join(d for s, d in pieces if s == 2)}
        assert joined == {1: b"hello!", 2: b"err"}, size


FILTERED_CHILD = """
import ctypes, errno, platform, sys
from engine.sandbox.seccomp import install_on_this_thread, keyring_filter
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS: lets an unprivileged process install a filter
install_on_this_thread(keyring_filter())
add_key, keyctl = {"x86_64": (248, 250), "aarch64": (217, 219)}[platform.machine()]
rc = libc.syscall(add_key, b"user", b"k", b"v", 1, ctypes.c_int(-2))
print(rc, errno.errorcode.get(ctypes.get_errno()))
rc = libc.syscall(keyctl, 0, ctypes.c_int(-4), 0)
print(rc, errno.errorcode.get(ctypes.get_errno()))
print(libc.getpid() > 0)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="seccomp is Linux's")
def test_the_keyring_filter_denies_exactly_the_keyring_calls() -> None:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", FILTERED_CHILD], capture_output=True, text=True, cwd=root,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["-1 ENOSYS", "-1 ENOSYS", "True"]


def test_the_keyring_filter_knows_its_machines() -> None:
    with pytest.raises(SandboxError, match="x86_64 and aarch64"):
        seccomp.keyring_filter("riscv64")


def _members(tar_path: Path) -> dict[str, tuple[int, int, str]]:
    with tarfile.open(tar_path) as tar:
        return {m.name: (m.uid, m.gid, oct(m.mode)) for m in tar.getmembers()}


def test_a_private_starter_tar_keeps_everything_from_other_uids(tmp_path) -> None:
    src = tmp_path / "grader"
    (src / "data").mkdir(parents=True)
    (src / "evaluate.py").write_text("x")
    (src / "run.sh").write_text("x")
    (src / "data" / "labels.csv").write_text("x")
    (src / "evaluate.py").chmod(0o644)
    (src / "run.sh").chmod(0o755)
    (src / "data").chmod(0o755)
    (src / "data" / "labels.csv").chmod(0o644)
    shared = _members(workspace_tar(src, ["data/labels.csv"], 1000, tmp_path / "shared.tar"))
    private = _members(workspace_tar(src, ["data/labels.csv"], 1001, tmp_path / "private.tar", private=True))
    assert shared == {"data": (0, 0, "0o1777"), "data/labels.csv": (0, 0, "0o444"),
                      "evaluate.py": (1000, 1000, "0o644"), "run.sh": (1000, 1000, "0o755")}
    assert private == {"data": (0, 1001, "0o1770"), "data/labels.csv": (0, 1001, "0o440"),
                       "evaluate.py": (1001, 1001, "0o600"), "run.sh": (1001, 1001, "0o700")}


def test_a_private_sandbox_names_its_owner(tmp_path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/b:/bin/sh\nsam:x:1001:1001::/s:/bin/sh\n")
    users, groups = agent_passwd(1000, passwd, passwd, owner_uid=1001)
    assert users.splitlines() == ["root:x:0:0::/root:/bin/sh",
                                  "agent:x:1000:1000:synthscale agent:/home/agent:/bin/bash",
                                  "sandbox:x:1001:1001:synthscale sandbox:/home/agent:/bin/bash"]
    assert groups.splitlines()[1:] == ["agent:x:1000:", "sandbox:x:1001:"]
    assert agent_passwd(1000, passwd, passwd)[0].splitlines()[1:] == [
        "sam:x:1001:1001::/s:/bin/sh", "agent:x:1000:1000:synthscale agent:/home/agent:/bin/bash"]
