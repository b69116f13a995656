"""A seccomp filter that denies the kernel keyring calls (add_key, request_key, keyctl), and a process starter
whose children carry it: the local runtime starts the agent's commands through it. Reads and writes nothing.

Why: a uid's kernel keyrings (`@u`, and the user-session keyring a process without a session keyring uses) live in
the host's user namespace, not in any sandbox, so as root the local runtime's sandboxes would share them with
each other and keep them across resets: one episode could leave notes there for the next. Docker's default
seccomp profile denies these calls; this filter does the same for the local runtime. It is installed on one
thread of this process only (no TSYNC), a thread that does nothing but start processes; a child inherits the
filter of the thread that forked it, through nsenter, setpriv and exec, and the rest of this process is unaffected.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

from engine.errors import SandboxError

# classic BPF opcodes and seccomp's return values (linux/filter.h, linux/seccomp.h)
_LD_ABS_W, _JEQ_K, _AND_K, _RET_K = 0x20, 0x15, 0x54, 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_NR_OFFSET, _ARCH_OFFSET = 0, 4  # struct seccomp_data
_X32_BIT = 0x40000000
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2

# (audit arch, add_key, request_key, keyctl) of every ABI a process on this machine may call the kernel through
KEYRING_CALLS = {
    "x86_64": [(0xC000003E, 248, 249, 250), (0x40000003, 286, 287, 288)],  # x86_64 (and x32), i386
    "aarch64": [(0xC00000B7, 217, 218, 219), (0x40000028, 309, 310, 311)],  # arm64, arm
}


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def keyring_filter(machine: str | None = None, deny_errno: int = errno.ENOSYS) -> bytes:
    """The BPF program (struct sock_filter[]) that fails the keyring calls with `deny_errno` (ENOSYS: as if the
    kernel had no keyrings, which programs handle) and allows every other call, for `machine` (this one's).

    >>> len(keyring_filter("x86_64")) // 8, len(keyring_filter("aarch64")) // 8
    (16, 15)
    """
    machine = machine or platform.machine()
    if machine not in KEYRING_CALLS:
        raise SandboxError(f"no keyring filter for {machine}; the local runtime supports x86_64 and aarch64")
    blocks: list[list[tuple[int, int, int | str, int | str]]] = []
    for arch, *calls in KEYRING_CALLS[machine]:
        block: list[tuple[int, int, int | str, int | str]] = [(_LD_ABS_W, _NR_OFFSET, 0, 0)]
        if arch == 0xC000003E:
            block.append((_AND_K, ~_X32_BIT & 0xFFFFFFFF, 0, 0))  # x32 numbers are x86_64's with this bit set
        block += [(_JEQ_K, nr, "deny", 0) for nr in calls]
        block.append((_RET_K, _RET_ALLOW, 0, 0))
        blocks.append([(_JEQ_K, arch, 0, len(block))] + block)  # not this ABI: skip to the next block
    program = [(_LD_ABS_W, _ARCH_OFFSET, 0, 0)] + [insn for block in blocks for insn in block]
    program.append((_RET_K, _RET_ALLOW, 0, 0))  # an ABI this machine does not have
    deny_at = len(program)
    program.append((_RET_K, _RET_ERRNO | deny_errno, 0, 0))
    out = b""
    for i, (code, k, jt, jf) in enumerate(program):
        out += _insn(code, k, deny_at - i - 1 if jt == "deny" else int(jt), int(jf))
    return out


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_on_this_thread(program: bytes) -> None:
    """Install a seccomp filter on the calling thread only (prctl, no TSYNC). Needs CAP_SYS_ADMIN or no_new_privs
    (set by the caller); SandboxError when the kernel refuses."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"installing the sandbox's seccomp filter failed: {errno.errorcode.get(err, err)}; the "
                           "local runtime needs root and a kernel with seccomp filters (or sandbox.runtime: docker)")


class FilteredStarter:
    """Starts processes (`popen`, same arguments as subprocess.Popen) from one thread that carries the keyring
    filter, so that they and all their descendants do. One per runtime; its thread ends when it is dropped."""

    def __init__(self) -> None:
        self._failure: SandboxError | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="synthscale-sandbox-starter", initializer=self._install)

    def _install(self) -> None:
        try:
            install_on_this_thread(keyring_filter())
        except SandboxError as e:
            self._failure = e
            raise

    def popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen:
        try:
            return self._pool.submit(subprocess.Popen, *args, **kwargs).result()
        except BrokenThreadPool as e:  # the filter could not be installed
            raise self._failure or SandboxError(f"the sandbox's process starter failed: {e}") from None
