"""mount(2) and umount2(2) for the local runtime's workspaces, called directly (a `mount` process costs a few
milliseconds, the call microseconds); reads /proc/self/mountinfo to find what a dead sandbox left mounted."""

from __future__ import annotations

import ctypes
import logging
import os
import re
from pathlib import Path

from engine.errors import SandboxError

logger = logging.getLogger(__name__)

MS_NOSUID = 2
MS_NODEV = 4
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: Path, fstype: str, options: str, flags: int = MS_NOSUID | MS_NODEV) -> None:
    """Mount `fstype` at `target`; OSError (with the errno) when the kernel refuses."""
    rc = _libc.mount(source.encode(), os.fsencode(target), fstype.encode(), ctypes.c_ulong(flags), options.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t {fstype} -o {options} {target}: {os.strerror(err)}")


def mount_tmpfs(target: Path, size_mb: int, mode: int, name: str, gid: int = 0) -> None:
    """A root-owned tmpfs of `size_mb` at `target` (nosuid, nodev), its root of group `gid`; SandboxError when it
    cannot be mounted."""
    try:
        mount(name, target, "tmpfs", f"size={size_mb}m,mode={mode:o},uid=0,gid={gid}")
    except OSError as e:
        raise SandboxError(f"mounting the workspace tmpfs on {target} failed: {e}; the local runtime needs root "
                           "with the right to mount (CAP_SYS_ADMIN)") from None


def unmount(target: Path) -> None:
    """Unmount `target`; when something still holds it, detach it now (the kernel frees it once released)."""
    if _libc.umount2(os.fsencode(target), 0) == 0:
        return
    err = ctypes.get_errno()
    if err == 22:  # EINVAL: not a mount point (already gone)
        return
    logger.warning("umount %s: %s; detaching lazily", target, os.strerror(err))
    if _libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err != 22:
            raise SandboxError(f"could not unmount {target}: {os.strerror(err)}")


def mounts_under(folder: Path) -> list[Path]:
    """Mount points at or below `folder` in this mount namespace, deepest first (the order to unmount them)."""
    prefix = str(folder).rstrip("/") + "/"
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])  # "\040" is a space
        if point == prefix[:-1] or point.startswith(prefix):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)
