"""Per-sandbox memory and process-count limits through a cgroup (v1 or v2) under /sys/fs/cgroup, when
this process may create one (root, controllers available); writes only under .../synthscale/<name>."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import time
from pathlib import Path

logger = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "synthscale"


class SandboxCgroup:
    """One cgroup (or one per v1 controller) that every process of a sandbox joins at launch.

    Memory is charged for everything the sandbox's processes hold, tmpfs pages included, and `pids.max`
    bounds its processes without counting other sandboxes that share the same uid."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs

    @classmethod
    def create(cls, name: str, memory_bytes: int, pids_max: int, root: Path | None = None) -> SandboxCgroup | None:
        """The cgroup, or None (with the reason logged) when cgroups cannot be used here."""
        root = CGROUP_ROOT if root is None else root
        if os.geteuid() != 0:
            return None
        try:
            if (root / "cgroup.controllers").exists():
                return cls._create_v2(root, name, memory_bytes, pids_max)
            if (root / "memory" / "memory.limit_in_bytes").exists() and (root / "pids").is_dir():
                return cls._create_v1(root, name, memory_bytes, pids_max)
        except OSError as e:
            logger.info("cgroup %s unavailable (%s); falling back to rlimits", name, e)
            return None
        logger.info("no usable cgroup hierarchy under %s; falling back to rlimits", root)
        return None

    @classmethod
    def _create_v1(cls, root: Path, name: str, memory_bytes: int, pids_max: int) -> SandboxCgroup:
        mem = root / "memory" / PARENT / name
        pids = root / "pids" / PARENT / name
        group = cls([mem, pids])
        try:
            mem.mkdir(parents=True, exist_ok=True)
            pids.mkdir(parents=True, exist_ok=True)
            (mem / "memory.limit_in_bytes").write_text(str(memory_bytes))
            if (mem / "memory.memsw.limit_in_bytes").exists():  # no swapping around the limit
                (mem / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
            (pids / "pids.max").write_text(str(pids_max))
        except OSError:
            group.remove()
            raise
        return group

    @classmethod
    def _create_v2(cls, root: Path, name: str, memory_bytes: int, pids_max: int) -> SandboxCgroup:
        controllers = set((root / "cgroup.controllers").read_text().split())
        if not {"memory", "pids"} <= controllers:
            raise OSError(f"controllers memory and pids not both available (have {sorted(controllers)})")
        parent = root / PARENT
        parent.mkdir(exist_ok=True)
        for level in (root, parent):
            enabled = set((level / "cgroup.subtree_control").read_text().split())
            if not {"memory", "pids"} <= enabled:
                (level / "cgroup.subtree_control").write_text("+memory +pids")
        group = cls([parent / name])
        try:
            group.dirs[0].mkdir(exist_ok=True)
            (group.dirs[0] / "memory.max").write_text(str(memory_bytes))
            if (group.dirs[0] / "memory.swap.max").exists():
                (group.dirs[0] / "memory.swap.max").write_text("0")
            (group.dirs[0] / "pids.max").write_text(str(pids_max))
        except OSError:
            group.remove()
            raise
        return group

    @classmethod
    def existing(cls, name: str, root: Path | None = None) -> SandboxCgroup:
        """The cgroup folders a sandbox called `name` may have left (v1 and v2), for the reaper."""
        root = CGROUP_ROOT if root is None else root
        dirs = [root / PARENT / name, root / "memory" / PARENT / name, root / "pids" / PARENT / name]
        return cls([d for d in dirs if d.is_dir()])

    def launcher(self) -> list[str]:
        """argv prefix that moves itself into the cgroup(s) and then execs the rest of the argv, so that
        the sandbox is limited from its first instruction (no preexec_fn, which is unsafe with threads)."""
        joins = " && ".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in self.dirs)
        return ["/bin/sh", "-c", f'{joins} && exec "$@"', "sandbox-launcher"]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self.dirs:
            try:
                found.update(int(x) for x in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return sorted(found)

    def kill_all(self, wait_s: float = 5.0, keep_root: bool = False) -> bool:
        """SIGKILL every process in the cgroup (with `keep_root`, every one not owned by root: the sandbox
        user's, not the runtime's own helpers) until none is left; False if some survived `wait_s`."""
        deadline = time.monotonic() + wait_s
        pause_s = 0.0005  # a killed process leaves the cgroup within a millisecond or so: look again soon
        while True:
            pids = [p for p in self.pids() if not keep_root or _owner(p) != 0]
            if not pids:
                return True
            if time.monotonic() > deadline:
                logger.warning("cgroup %s still has processes %s after %.1fs", self.dirs[0], pids[:10], wait_s)
                return False
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(pause_s)
            pause_s = min(2 * pause_s, 0.02)

    def remove(self) -> None:
        """Kill what is left and delete the cgroup folders (best effort, logged)."""
        self.kill_all()
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
            else:
                logger.warning("could not remove cgroup %s", d)


def _owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None  # gone
