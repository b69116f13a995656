"""Builds the local runtime's command lines: bubblewrap's options (which host folders are visible, read-only;
the private mounts, namespaces, environment), entering a sandbox's namespaces, the drop to the unprivileged
uid and the limits; reads /etc/passwd."""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

from engine.sandbox.common import AGENT_UMASK, HOME, SYSTEM_PATH, WORKDIR, minimal_env

SYSTEM_DIRS = ("/usr", "/etc")
TOP_LEVEL_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
OWNER_NAME = "sandbox"
"""The user name of a private sandbox's owner (a uid other than the agent's)."""


def interpreter_prefixes() -> list[str]:
    """Folders that hold the engine's Python (the venv and the interpreter it links to), outside /usr.

    These are bound read-only so that `python` in the sandbox has numpy, pandas and sklearn."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    candidates.add(str(Path(os.path.realpath(sys.executable)).parent.parent))
    resolved = sorted({os.path.realpath(p) for p in candidates} | candidates)
    keep: list[str] = []
    for p in resolved:
        if p == "/" or any(p == d or p.startswith(d + "/") for d in SYSTEM_DIRS):
            continue
        if any(p.startswith(k + "/") for k in keep) or not os.path.isdir(p):
            continue
        keep.append(p)
    return keep


def sandbox_path_env() -> str:
    """PATH inside the sandbox: the engine's interpreter first, then the system."""
    return f"{sys.prefix}/bin:{SYSTEM_PATH}"


def _visible_host_args() -> list[str]:
    args: list[str] = []
    for d in SYSTEM_DIRS:
        args += ["--ro-bind", d, d]
    for top in TOP_LEVEL_LINKS:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def _interpreter_args() -> list[str]:
    """Read-only binds of the engine's Python. They come after the scratch tmpfs mounts, so that a venv under
    /tmp (a CI checkout, say) is not hidden by the sandbox's fresh /tmp."""
    args: list[str] = []
    made: set[str] = set()
    for prefix in interpreter_prefixes():
        # bwrap would create the folders above a bind with the host's modes (e.g. /root 0700), which the
        # sandbox user could not cross; make them 0755 instead
        for parent in reversed(Path(prefix).parents[:-1]):
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", prefix, prefix]
    return args


def agent_passwd(
    uid: int, host_passwd: Path = Path("/etc/passwd"), host_group: Path = Path("/etc/group"),
    owner_uid: int | None = None,
) -> tuple[str, str]:
    """/etc/passwd and /etc/group for the sandbox: the host's entries minus any other owner of `uid` (and of
    `owner_uid`), plus the user `agent` (so `id`, `whoami` and Python's getpass name the sandbox user correctly) and,
    for a private sandbox, its owner `sandbox` (uid `owner_uid`), both with the sandbox's $HOME."""
    users = {"agent": uid} | ({OWNER_NAME: owner_uid} if owner_uid not in (None, uid) else {})

    def keep(text: str) -> list[str]:
        out = []
        for line in text.splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[2] in {str(u) for u in users.values()}:
                continue
            if fields and fields[0] in users:
                continue
            out.append(line)
        return out

    entries = [f"{name}:x:{u}:{u}:synthscale {name}:{HOME}:/bin/bash" for name, u in users.items()]
    passwd = keep(host_passwd.read_text()) + entries
    group = keep(host_group.read_text()) + [f"{name}:x:{u}:" for name, u in users.items()]
    return "\n".join(passwd) + "\n", "\n".join(group) + "\n"


def bwrap_argv(
    *,
    workspace_dir: Path,
    etc_dir: Path,
    scratch_mb: int,
    network: bool,
    gpu_ids: list[str],
    user_namespace_uid: int | None,
    die_with_parent: bool = True,
) -> list[str]:
    """The bwrap options (without the command) for one sandboxed process.

    `workspace_dir` (host) appears at /home/agent/workspace; `etc_dir` holds the generated passwd and group;
    /tmp and $HOME are fresh tmpfs of `scratch_mb` each; `user_namespace_uid` maps the caller to that uid in
    a new user namespace (the non-root mode; as root the uid is dropped with setpriv instead). Without
    `die_with_parent` the sandbox outlives the thread that started it (a namespace holder ends otherwise)."""
    args = ["bwrap", *(["--die-with-parent"] if die_with_parent else []), "--new-session", "--unshare-pid"]
    args += ["--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--hostname", "sandbox"]
    if not network:
        args += ["--unshare-net"]
    if user_namespace_uid is not None:
        args += ["--unshare-user", "--uid", str(user_namespace_uid), "--gid", str(user_namespace_uid)]
    args += _visible_host_args()
    args += ["--ro-bind", str(etc_dir / "passwd"), "/etc/passwd", "--ro-bind", str(etc_dir / "group"), "/etc/group"]
    args += ["--proc", "/proc", "--dev", "/dev"]
    # GPUs: every /dev/nvidia* node is bound and CUDA_VISIBLE_DEVICES picks the sandbox's ids. That pins CUDA
    # programs but is advisory (the agent could reset the variable); Docker's device requests are strict.
    # The driver's libraries are found through ld.so.conf, as LD_LIBRARY_PATH is not passed in.
    for dev in sorted(glob.glob("/dev/nvidia*")) if gpu_ids else []:
        args += ["--dev-bind", dev, dev]
    size = str(scratch_mb * 1024 * 1024)  # tmpfs pages count against the sandbox's memory cgroup too
    args += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
    args += ["--perms", "1777", "--size", size, "--tmpfs", "/dev/shm"]  # POSIX semaphores (joblib, torch)
    args += ["--perms", "1777", "--size", size, "--tmpfs", HOME]
    args += _interpreter_args()
    args += ["--bind", str(workspace_dir), WORKDIR, "--chdir", WORKDIR]
    args += ["--clearenv"]
    for key, value in sandbox_env(gpu_ids).items():
        args += ["--setenv", key, value]
    return args


def args_memfd(options: list[str]) -> int:
    """A memfd (close-on-exec, at offset 0) holding bwrap's options NUL-separated, for `bwrap --args FD`: bwrap is
    pid 1 of the sandbox, whose command line the agent's `ps` shows, and the options name host paths (the sandbox's
    folder, the run and task ids). Reopen it (`reopen_fd`) for each bwrap that reads it."""
    if not options or options[0] != "bwrap":
        raise ValueError(f"expected bwrap's argv, got {options[:1]}")
    fd = os.memfd_create("synthscale-bwrap-args", os.MFD_CLOEXEC)
    os.write(fd, b"".join(os.fsencode(arg) + b"\0" for arg in options[1:]))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def reopen_fd(fd: int) -> int:
    """A new descriptor of what `fd` refers to, at offset 0 and close-on-exec (pass it with pass_fds)."""
    return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)


def sandbox_env(gpu_ids: list[str]) -> dict[str, str]:
    """The whole environment of a sandboxed command: the minimal one, plus the GPUs it owns."""
    env = minimal_env(sandbox_path_env())
    if gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    return env


def nsenter_argv(pid: int) -> list[str]:
    """Enter the sandbox whose init is host pid `pid` (a `NamespaceHolder`): its mounts and root, pid, ipc,
    uts and network namespaces, forking so that the command is inside the pid namespace. The caller's
    environment passes through (bwrap's --setenv applies to the holder only)."""
    return ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--root", "--wd", "--"]


def drop_privileges_argv(uid: int) -> list[str]:
    """Inside the sandbox as root: become `uid` with no capabilities, no supplementary groups, and no way back
    (no_new_privs blocks setuid binaries), so rlimits and file permissions bind."""
    return [
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
        "--inh-caps=-all", "--bounding-set=-all", "--",
    ]  # fmt: skip


def limits_script(*, nproc: int | None, data_bytes: int | None, file_size_bytes: int, umask: int = AGENT_UMASK) -> str:
    """Shell text that sets soft and hard limits for itself and its children (bash's `ulimit`, in KiB), then the
    umask the runtime assumes when it creates files for the sandbox user; it runs as that user, before the
    command, in the same bash (a `prlimit` process per command costs more). A user cannot raise a hard limit.

    Memory uses RLIMIT_DATA (private writable memory, Linux >= 4.7), not RLIMIT_AS: numpy/OpenBLAS reserve
    large address ranges they never touch, so an address-space cap breaks imports long before memory runs out.

    >>> limits_script(nproc=64, data_bytes=2**30, file_size_bytes=2**20)
    'ulimit -f 1024 -c 0 -u 64 -d 1048576 && umask 022'
    """
    limits = f"ulimit -f {max(1, file_size_bytes // 1024)} -c 0"
    if nproc is not None:
        limits += f" -u {nproc}"
    if data_bytes is not None:
        limits += f" -d {max(1, data_bytes // 1024)}"
    return limits + f" && umask {umask:03o}"
