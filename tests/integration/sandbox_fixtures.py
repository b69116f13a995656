"""Shared pieces of the sandbox integration tests: a task folder on the host (workspace + grader beside it), the
small limits the tests run under, one harness per runtime (how to start it and how to look at what its
sandboxes hold on the host), and the checks that more than one sandbox configuration must pass.

`test_sandbox_contract.py` runs every shared behaviour on each runtime through its harness;
`test_sandbox_local.py` runs some of the checks again on the local runtime's fallbacks (rlimits instead of a
cgroup, a tmpfs instead of an overlay)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from engine.config import SandboxConfig
from engine.protocols import SandboxSpec
from engine.sandbox.common import HOME, WORKDIR

REPO = Path(__file__).resolve().parents[2]
TRAIN_PY = b"print('baseline')\n"
EVALUATE_PY = b"import json\nprint(json.dumps({'accuracy': 1.0}))\n"
TRAIN_CSV = b"x,y\n1,2\n"
GRADER_SECRET = "held-out-labels-7f3a"
SECRET_ENV = "SYNTHSCALE_TEST_SECRET"
ALLOWED_ENV = {"PATH", "HOME", "LANG", "PYTHONUNBUFFERED", "MPLBACKEND", "PWD", "SHLVL", "_", "OLDPWD"}
MARKER = ".episode-marker"
# every folder the agent may write to, on every read-write mount it sees (a read-only mount has none)
WRITABLE_DIRS = (
    "awk '$4 ~ /^rw/ {print $2}' /proc/self/mounts | grep -v -e '^/proc' -e '^/sys' | sort -u | "
    "while read -r m; do find \"$m\" -xdev -type d -writable -print 2>/dev/null; done | sort -u"
)
# everything the agent may write to anywhere (`find / -writable` as the agent): type, size and name, and the hash of
# what each writable regular file holds; a reset must bring all of it back exactly. The type comes from stat (%y
# next to %s): bwrap's device nodes are bind mounts over empty files, which a `find -type f` alone takes for files.
WRITABLE_FILES = ("find / \\( -path /proc -o -path /sys \\) -prune -o -writable -printf '%y %s %p\\n' 2>/dev/null | "
                  "sort")
WRITABLE_STATE = (f"{WRITABLE_FILES} | while read -r t s p; do echo \"$t $s $p\"; "
                  "if [ \"$t\" = f ]; then sha256sum < \"$p\"; fi; done")
OWNER_UID = 1001
"""The uid of the private sandboxes the tests start (a grader's, say): not the agent's (1000)."""
# the workspace as the agent sees it: every entry's type, mode and owners, symlink targets, file contents
SNAPSHOT = (
    f"cd {WORKDIR} && find . -printf '%p %y %m %u %g %l\\n' | sort && find . -type f -exec sha256sum {{}} + | sort"
)


def docker_problem(image: str) -> str | None:
    """Why the Docker tests cannot run here, or None when dockerd answers and the task image exists."""
    import docker

    if shutil.which("dockerd") is None and shutil.which("docker") is None:
        return "Docker is not installed"
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure means: no daemon to test against
        return f"dockerd is not reachable ({e}); run bash .ci/setup-docker.sh"
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return f"Docker image {image} missing; run bash cluster/images/build-offline.sh"
    return None


def small_config(**overrides: object) -> SandboxConfig:
    """Limits small enough that the tests reach them quickly."""
    values: dict[str, object] = dict(memory_mb=512, pids_limit=64, workspace_mb=32, max_output_bytes=64_000)
    values.update(overrides)
    return SandboxConfig(**values)


def make_task_dir() -> Path:
    """A task folder outside /tmp (which the local sandbox hides anyway), readable by everyone, so that the
    'grader is not visible' test fails if the sandbox ever exposed the host's filesystem."""
    root = Path(tempfile.mkdtemp(prefix="synthscale-test-task-", dir="/var/tmp"))
    root.chmod(0o755)
    ws = root / "workspace"
    (ws / "data").mkdir(parents=True)
    (ws / "train.py").write_bytes(TRAIN_PY)
    (ws / "evaluate.py").write_bytes(EVALUATE_PY)
    (ws / "data" / "train.csv").write_bytes(TRAIN_CSV)
    (root / "grader").mkdir()
    (root / "grader" / "labels.csv").write_text(GRADER_SECRET + "\n")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


class OwnedSpec(SandboxSpec):
    """A SandboxSpec with the `uid` field the runtimes read (`engine.sandbox.common.sandbox_uid`), for as long as
    engine.protocols' SandboxSpec does not have it."""

    uid: int | None = None


def task_spec(task_dir: Path, **overrides: object) -> SandboxSpec:
    values: dict[str, object] = dict(
        workspace=task_dir / "workspace",
        read_only_paths=["evaluate.py", "data/train.csv"],
        labels={"task_id": "contract-task"},
    )
    values.update(overrides)
    spec_type = SandboxSpec if "uid" in SandboxSpec.model_fields or "uid" not in values else OwnedSpec
    return spec_type(**values)


def remove_task_dir(task_dir: Path) -> None:
    shutil.rmtree(task_dir, ignore_errors=True)


def env_keys(output: str) -> set[str]:
    return {line.split("=", 1)[0] for line in output.splitlines() if "=" in line}


# ----- runtimes -----


class LocalHarness:
    """The bubblewrap runtime, seen from the host: folders, mounts and cgroups under its sandbox folder."""

    name = "local"

    def problem(self) -> str | None:
        return None if shutil.which("bwrap") else "bubblewrap (bwrap) is not installed"

    def runtime(self, run_id: str, **overrides: object):
        from engine.sandbox.local import LocalRuntime

        return LocalRuntime(small_config(**overrides), run_id)

    def ident(self, sandbox) -> str:
        return str(sandbox._base)

    def held(self, ident: str) -> bool:
        """Whether anything of that sandbox is still on the host: its folder, a mount, a cgroup."""
        from engine.sandbox.cgroups import SandboxCgroup
        from engine.sandbox.mounts import mounts_under

        base = Path(ident)
        return base.exists() or bool(mounts_under(base)) or bool(SandboxCgroup.existing(base.name).dirs)

    def of_run(self, run_id: str) -> set[str]:
        return {str(p) for p in Path(tempfile.gettempdir()).glob(f"synthscale-{run_id}-*")}

    def labelled(self, sandbox, run_id: str, task_id: str) -> bool:
        return sandbox._base.name.startswith(f"synthscale-{run_id}-{task_id}-")  # what the reaper matches

    def processes(self, sandbox) -> list[str]:
        """Command lines of every process left in the sandbox (its cgroup, else any process of the host)."""
        pids = sandbox.cgroup.pids() if sandbox.cgroup else [int(p) for p in os.listdir("/proc") if p.isdigit()]
        return [_cmdline(pid) for pid in pids]

    def child_code(self, run_id: str, workspace: Path) -> str:
        return ("import os; from pathlib import Path; from engine.sandbox.local import LocalRuntime; "
                "from engine.config import SandboxConfig; from engine.protocols import SandboxSpec; "
                f"rt = LocalRuntime(SandboxConfig(memory_mb=512, workspace_mb=16), {run_id!r}); "
                f"sb = rt.start(SandboxSpec(workspace=Path({str(workspace)!r}), labels={{'task_id': 't'}})); "
                "print(sb._base, flush=True); os._exit(0)")

    def gpu_ids(self) -> list[str]:
        return ["3", "1"]  # CUDA_VISIBLE_DEVICES needs no GPU to be checked

    def visible_gpus(self, sandbox) -> list[str]:
        env = dict(line.split("=", 1) for line in sandbox.exec("env", timeout_s=30).output.splitlines() if "=" in line)
        return env.get("CUDA_VISIBLE_DEVICES", "").split(",")


class DockerHarness:
    """The Docker runtime, seen from the host: containers and their labels."""

    name = "docker"

    def problem(self) -> str | None:
        return docker_problem(SandboxConfig().image)

    def runtime(self, run_id: str, **overrides: object):
        from engine.sandbox.docker import DockerRuntime

        return DockerRuntime(small_config(runtime="docker", **overrides), run_id)

    def ident(self, sandbox) -> str:
        return sandbox.container.id

    def held(self, ident: str) -> bool:
        import docker

        try:
            docker.from_env().containers.get(ident)
        except docker.errors.NotFound:
            return False
        return True

    def of_run(self, run_id: str) -> set[str]:
        import docker

        found = docker.from_env().containers.list(all=True, filters={"label": [f"synthscale.run_id={run_id}"]})
        return {c.id for c in found}

    def labelled(self, sandbox, run_id: str, task_id: str) -> bool:
        sandbox.container.reload()
        labels = sandbox.container.labels
        wanted = {"synthscale.run_id": run_id, "synthscale.task_id": task_id, "synthscale.managed": "1"}
        return {key: labels.get(key) for key in wanted} == wanted

    def processes(self, sandbox) -> list[str]:
        out = sandbox._root("ps -eo user=,args=").decode()
        return [line.split(None, 1)[1] for line in out.splitlines() if line.split(None, 1)[0] != "root"]

    def child_code(self, run_id: str, workspace: Path) -> str:
        return ("import os; from pathlib import Path; from engine.sandbox.docker import DockerRuntime; "
                "from engine.config import SandboxConfig; from engine.protocols import SandboxSpec; "
                f"rt = DockerRuntime(SandboxConfig(runtime='docker', memory_mb=512), {run_id!r}); "
                f"sb = rt.start(SandboxSpec(workspace=Path({str(workspace)!r}), labels={{'task_id': 't'}})); "
                "print(sb.container.id, flush=True); os._exit(0)")

    def gpu_ids(self) -> list[str]:
        """The host's last GPU, when this host has GPUs that Docker can hand out; else the test skips."""
        if shutil.which("nvidia-smi") is None:
            pytest.skip("no GPU on this host (nvidia-smi missing): GPU requests cannot be checked")
        lines = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                               text=True).stdout.split()
        if not lines:
            pytest.skip("nvidia-smi lists no GPU: GPU requests cannot be checked")
        return [lines[-1]]

    def visible_gpus(self, sandbox) -> list[str]:
        host = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"], capture_output=True,
                              text=True).stdout
        index_of = {uuid.strip(): index.strip() for index, uuid in (line.split(",") for line in host.splitlines())}
        inside = sandbox.exec("nvidia-smi --query-gpu=uuid --format=csv,noheader", timeout_s=60).output.split()
        return [index_of.get(u, u) for u in inside]


HARNESSES = {"local": LocalHarness(), "docker": DockerHarness()}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def start_leftover(harness, run_id: str, workspace: Path) -> str:
    """Start a sandbox in a child process that exits without closing it (a killed worker); its ident."""
    child = subprocess.run([sys.executable, "-c", harness.child_code(run_id, workspace)], capture_output=True,
                           text=True, cwd=str(REPO), timeout=300)
    assert child.returncode == 0, child.stderr
    return child.stdout.strip().splitlines()[-1]


# ----- checks shared by more than one sandbox configuration -----


def check_exec_basics(sandbox) -> None:
    r = sandbox.exec("pwd; id -u; echo err >&2; exit 3", timeout_s=30)
    assert r.exit_code == 3 and not r.timed_out and not r.output_truncated
    assert r.output.splitlines() == [WORKDIR, "1000", "err"]
    assert sandbox.exec("pwd", timeout_s=30, cwd="data").output.strip() == f"{WORKDIR}/data"
    assert sandbox.exec("pwd", timeout_s=30, cwd="/tmp").output.strip() == "/tmp"
    missing = sandbox.exec("echo never", timeout_s=30, cwd="no-such-dir")
    assert missing.exit_code == 1 and "never" not in missing.output
    py = sandbox.exec("python -c 'import numpy, pandas, sklearn; print(numpy.ones(3).sum())'", timeout_s=120)
    assert (py.exit_code, py.output.strip().splitlines()[-1]) == (0, "3.0")
    errors = sandbox.exec("echo first\nno-such-command-xyz", timeout_s=30).output
    assert "line 3: no-such-command-xyz" in errors, errors  # the runtime's preamble is one line (the `cd`)


def check_nothing_runs_after_the_command(sandbox, harness) -> None:
    """Processes that left the command's process group (setsid, nohup, a double fork, a daemon) end when the
    command returns, so nothing can change the workspace between two commands (a submission between its listing
    and its copy, say); what the command wrote stays for the episode."""
    token = f"31{secrets.randbelow(10**6):06d}"
    sandbox.write_file("submission.csv", b"id,label\n")
    r = sandbox.exec(f"setsid sh -c 'while :; do echo forged > submission.csv; sleep {token}.1; done' "
                     "</dev/null >/dev/null 2>&1 & "
                     f"nohup sh -c 'sleep {token}.2' </dev/null >/dev/null 2>&1 & "
                     f"(setsid sleep {token}.3 </dev/null >/dev/null 2>&1 &) ; "
                     "python -c 'import os, time\nif os.fork() == 0:\n os.setsid()\n if os.fork() == 0: "
                     f"time.sleep({token}.4)' & "
                     "until grep -q forged submission.csv; do sleep 0.01; done; echo kept > /tmp/note", timeout_s=30)
    assert r.exit_code == 0 and not r.timed_out, r.output
    assert [p for p in harness.processes(sandbox) if token in p] == []
    sandbox.write_file("submission.csv", b"id,label\n1,2\n")
    assert sandbox.read_file("submission.csv") == b"id,label\n1,2\n"
    assert sandbox.exec("ps -eo user=,comm= | grep -c -e '^agent *sleep$' -e '^agent *python' || true",
                   timeout_s=30).output.strip() == "0"
    assert sandbox.read_file("/tmp/note") == b"kept\n"  # /tmp lasts for the episode


def check_process_limit(sandbox) -> None:
    script = (
        "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
        "            time.sleep(60); os._exit(0)\n        n += 1\n"
        "except OSError as e:\n    print('stopped', n, e.errno, flush=True)\n    os._exit(0)\n"
    )
    sandbox.write_file("forker.py", script.encode())
    r = sandbox.exec("python forker.py", timeout_s=60)
    words = r.output.split()
    assert not r.timed_out and words[0] == "stopped" and words[2] == "11", r.output  # EAGAIN
    assert 0 < int(words[1]) < 64


def check_fork_bomb(sandbox) -> None:
    r = sandbox.exec("bomb() { bomb | bomb & }; bomb; sleep 30", timeout_s=3)
    assert r.timed_out or r.exit_code != 0
    assert subprocess.run(["true"]).returncode == 0  # the host can still start processes
    sandbox.reset()
    assert sandbox.exec("echo usable", timeout_s=30).output.strip() == "usable"


def check_allocation_stopped(sandbox) -> None:
    r = sandbox.exec("python -c \"x = []\nwhile True: x.append(b'x' * 10**7)\"", timeout_s=120)
    assert not r.timed_out and r.exit_code != 0
    assert sandbox.exec("echo fine", timeout_s=30).output.strip() == "fine"


def check_workspace_limit(sandbox) -> None:
    """The workspace lives in memory (tmpfs, or an overlay whose writable layer is one) of `workspace_mb`."""
    assert sandbox.exec(f"stat -f -c %T {WORKDIR}", timeout_s=30).output.strip() in ("tmpfs", "overlayfs")
    one = sandbox.exec("dd if=/dev/zero of=big bs=1M count=200 2>&1; echo rc=$?; stat -c %s big", timeout_s=60)
    assert "rc=0" not in one.output and int(one.output.split()[-1]) <= 32 * 1024 * 1024, one.output
    sandbox.exec("rm big", timeout_s=30)
    two = sandbox.exec("for f in a b; do dd if=/dev/zero of=$f bs=1M count=20 2>&1; done", timeout_s=60)
    assert "No space left on device" in two.output, two.output  # the workspace as a whole, not just each file


def check_reset_restores_the_starter_exactly(sandbox) -> None:
    starter = sandbox.exec(SNAPSHOT, timeout_s=60).output
    assert "./train.py f 644 agent agent" in starter and "./evaluate.py f 444 root root" in starter, starter
    sandbox.exec(
        "echo changed > train.py; touch -d 2001-01-01 train.py; echo new > new.txt; rm -f data/extra; "
        "mkdir -p locked/in && echo x > locked/in/f && chmod 000 locked/in locked; ln -s /etc/passwd link; "
        "mkdir adir && mv adir bdir; echo extra > data/extra.csv; chmod 600 data/extra.csv", timeout_s=30)
    sandbox.write_file("written/by/host.txt", b"x")
    assert sandbox.exec(SNAPSHOT, timeout_s=60).output != starter
    sandbox.reset()
    assert sandbox.exec(SNAPSHOT, timeout_s=60).output == starter
    sandbox.exec("rm -f train.py", timeout_s=30)  # the agent may delete its own starter files
    sandbox.reset()
    assert sandbox.exec(SNAPSHOT, timeout_s=60).output == starter


def check_reset_leaves_nothing_writable(sandbox) -> None:
    """A marker in every folder the agent can write to, a deep one in its own folders, a line added to every file
    it can write: none survives a reset, and everything writable is as it was before the episode."""
    before = sandbox.exec(WRITABLE_STATE, timeout_s=120).output
    sandbox.exec("mkdir -p mine/deep && chmod 700 mine", timeout_s=30)
    marked = sandbox.exec(
        f"for d in $({WRITABLE_DIRS}); do touch \"$d/{MARKER}\" 2>/dev/null && echo \"$d\"; done; "
        f"echo x > /tmp/{MARKER}.tmp; echo x > {HOME}/{MARKER}.home; echo x > /dev/shm/{MARKER}.shm",
        timeout_s=120).output.split()
    assert {WORKDIR, f"{WORKDIR}/mine/deep", HOME, "/tmp", "/dev/shm"} <= set(marked), marked
    sandbox.exec(f"{WRITABLE_FILES} | while read -r t s p; do if [ \"$t\" = f ]; then echo x >> \"$p\"; fi; done",
                 timeout_s=120)
    assert sandbox.exec(WRITABLE_STATE, timeout_s=120).output != before
    sandbox.reset()
    left = sandbox.exec(f"for d in $({WRITABLE_DIRS}); do ls -A \"$d\"; done | grep -F {MARKER}; echo done",
                        timeout_s=120).output.split()
    assert left == ["done"], left
    assert sandbox.exec("test -e mine", timeout_s=30).exit_code == 1
    assert sandbox.exec(WRITABLE_STATE, timeout_s=120).output == before


def check_read_only_files(sandbox) -> None:
    for cmd in ("echo x >> evaluate.py", "rm -f evaluate.py", "mv evaluate.py moved.py", "chmod 666 evaluate.py",
                "rm -f data/train.csv", "mv data gone", "rm -rf data", "ln -sf /etc/passwd evaluate.py",
                "touch -d 2001-01-01 evaluate.py"):  # fmt: skip
        sandbox.exec(cmd, timeout_s=30)
    assert sandbox.read_file("evaluate.py") == EVALUATE_PY
    assert sandbox.read_file("data/train.csv") == TRAIN_CSV
    with pytest.raises(PermissionError):
        sandbox.write_file("evaluate.py", b"print('hacked')")
    assert sandbox.read_file(f"{WORKDIR}/evaluate.py") == EVALUATE_PY
    sandbox.write_file("data/extra.csv", b"mine")  # the folder itself still takes new files
    assert sandbox.exec("rm data/extra.csv && echo removed", timeout_s=30).output.strip() == "removed"
