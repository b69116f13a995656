"""The local runtime's workspace on the host: the folder bound at /home/agent/workspace, filled from the starter
tar and restored by `reset`. Reads the starter tar; writes (and mounts) only under the sandbox's own folder.

Three kinds, one interface (`path`, `restore()`, `close()`); a sandbox may keep two, one in use and one ready:
- `OverlayWorkspace` (root, the normal case): the starter unpacked once into a root-only folder, the lower layer
  of an overlayfs whose upper layer is a size-limited tmpfs that receives every change the agent makes.
  Restoring unmounts both and mounts a fresh empty tmpfs: nothing the agent wrote survives, the starter is never
  copied again, and the cost does not grow with the starter's size. Files keep their owners and modes (the
  read-only ones stay root's), as they would on a tmpfs.
- `TmpfsWorkspace` (root, where overlayfs is unavailable): a size-limited tmpfs, remounted and refilled.
- `FolderWorkspace` (no root): a plain folder, emptied and refilled; its size is not enforced.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
from pathlib import Path
from typing import NamedTuple, Protocol

from engine.sandbox.mounts import mount, mount_tmpfs, unmount

logger = logging.getLogger(__name__)

# overlayfs splits its options at commas and colons; such a path cannot be a layer
_OPTION_CHARS = frozenset(",:\\")


class Top(NamedTuple):
    """Group and mode of the workspace folder itself (its owner is root)."""

    gid: int
    mode: int


AGENT_TOP = Top(0, 0o1777)
"""An agent's workspace: everyone may add files, the sticky bit keeps the read-only ones (root's) in place."""


def private_top(uid: int) -> Top:
    """The workspace folder of a private sandbox (one whose user is not the agent): its user may add files (as
    the group); no other uid may enter it, list it, or look up a name in it."""
    return Top(uid, 0o1770)


class Workspace(Protocol):
    """The host folder bound at the sandbox's workspace, and how to bring it back to the starter state."""

    path: Path

    def restore(self) -> None: ...

    def close(self) -> None: ...


def unpack(starter_tar: Path, dest: Path) -> None:
    """Unpack our own starter tar, keeping owners and the sticky/read-only modes exactly (the 'data' filter
    would drop them)."""
    with tarfile.open(starter_tar) as tar:
        tar.extractall(dest, numeric_owner=True, filter="fully_trusted")


class OverlayWorkspace:
    """The starter as the lower layer of an overlayfs, a fresh tmpfs as its upper layer after every restore.
    Several may share one lower folder (the kernel never writes to a lower layer). The workspace folder itself is
    root's, of group `top.gid` and mode `top.mode`."""

    def __init__(self, folder: Path, lower: Path, size_mb: int, name: str, top: Top = AGENT_TOP) -> None:
        self.path = folder / "workspace"
        self._lower, self._scratch = lower, folder / "scratch"
        self._size_mb, self._name, self._top = size_mb, name, top
        if _OPTION_CHARS & set(f"{folder}{lower}"):
            raise OSError(f"{folder}: overlayfs cannot take a layer whose path holds ',', ':' or '\\'")
        for sub in (folder, self.path, self._scratch):
            sub.mkdir(mode=0o700, exist_ok=True)
        self._mount()

    def _mount(self) -> None:
        mount_tmpfs(self._scratch, self._size_mb, 0o700, self._name)
        upper, work = self._scratch / "upper", self._scratch / "work"
        upper.mkdir()
        os.chown(upper, 0, self._top.gid)
        upper.chmod(self._top.mode)  # the workspace root: root-owned and sticky, so read-only files stay
        work.mkdir(mode=0o700)
        try:
            mount("overlay", self.path, "overlay",
                  f"lowerdir={self._lower},upperdir={upper},workdir={work},redirect_dir=on")
        except OSError:
            unmount(self._scratch)
            raise

    def restore(self) -> None:
        """Drop every change: unmount the overlay and its upper tmpfs, mount fresh ones over the same starter."""
        unmount(self.path)
        unmount(self._scratch)
        self._mount()

    def close(self) -> None:
        unmount(self.path)
        unmount(self._scratch)


class TmpfsWorkspace:
    """A size-limited tmpfs holding a copy of the starter; restoring remounts it and unpacks the starter again."""

    def __init__(self, folder: Path, starter_tar: Path, size_mb: int, name: str, top: Top = AGENT_TOP) -> None:
        self.path = folder / "workspace"
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._starter, self._size_mb, self._name, self._top = starter_tar, size_mb, name, top
        self._fill()

    def _fill(self) -> None:
        mount_tmpfs(self.path, self._size_mb, self._top.mode, self._name, gid=self._top.gid)
        unpack(self._starter, self.path)

    def restore(self) -> None:
        unmount(self.path)
        self._fill()

    def close(self) -> None:
        unmount(self.path)


class FolderWorkspace:
    """A plain folder (no root to mount anything): emptied and refilled on restore."""

    def __init__(self, folder: Path, starter_tar: Path) -> None:
        self.path = folder / "workspace"
        self.path.mkdir(parents=True, exist_ok=True)
        self._starter = starter_tar
        unpack(starter_tar, self.path)

    def restore(self) -> None:
        for entry in list(self.path.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, onerror=force_remove)
            else:
                entry.unlink()
        unpack(self._starter, self.path)

    def close(self) -> None:
        pass  # the folder goes with the sandbox's own


def make_workspaces(base: Path, starter_tar: Path, *, count: int, root: bool, overlay: bool, size_mb: int,
                    name: str, top: Top = AGENT_TOP) -> list[Workspace]:
    """`count` independent workspaces under `base` (folders ws0, ws1, …), the best kind this process can make:
    overlays sharing one unpacked starter (root, when `overlay` and the kernel allow it), else tmpfs copies
    (root), else plain folders. As root, the workspace folder itself gets `top`'s group and mode."""
    folders = [base / f"ws{i}" for i in range(count)]
    if not root:
        return [FolderWorkspace(f, starter_tar) for f in folders]
    if overlay:
        made: list[Workspace] = []
        try:
            lower = base / "starter"
            lower.mkdir(mode=0o700)
            unpack(starter_tar, lower)
            for folder in folders:
                made.append(OverlayWorkspace(folder, lower, size_mb, name, top))
            return made
        except OSError as e:
            logger.warning("overlayfs workspace unavailable (%s); using a tmpfs refilled at every reset", e)
            for ws in made:
                ws.close()
            shutil.rmtree(base / "starter", onerror=force_remove)
    return [TmpfsWorkspace(f, starter_tar, size_mb, name, top) for f in folders]


def force_remove(func, path, _exc_info) -> None:  # noqa: ANN001 (shutil.rmtree's onerror signature)
    """rmtree hook: the agent may have left folders without write or search permission."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        os.chmod(path, 0o700)
    except OSError:
        pass
    try:
        func(path)
    except FileNotFoundError:
        pass
