"""Shared pieces of the sandbox integration tests: a task folder on the host (workspace + grader beside it),
the small limits the tests run under, and `SandboxContract`, the behaviour every runtime must show.

Each runtime's test module subclasses SandboxContract and provides a module-scoped `sandbox` fixture (one
sandbox per module, reset before every test) plus `task_dir`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from engine.config import SandboxConfig
from engine.protocols import SandboxSpec
from engine.sandbox.common import WORKDIR

TRAIN_PY = b"print('baseline')\n"
EVALUATE_PY = b"import json\nprint(json.dumps({'accuracy': 1.0}))\n"
TRAIN_CSV = b"x,y\n1,2\n"
GRADER_SECRET = "held-out-labels-7f3a"
SECRET_ENV = "SYNTHSCALE_TEST_SECRET"
ALLOWED_ENV = {"PATH", "HOME", "LANG", "PYTHONUNBUFFERED", "MPLBACKEND", "PWD", "SHLVL", "_", "OLDPWD"}


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
        return f"image {image} missing; run bash cluster/images/build-offline.sh"
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


def task_spec(task_dir: Path, **overrides: object) -> SandboxSpec:
    values: dict[str, object] = dict(
        workspace=task_dir / "workspace",
        read_only_paths=["evaluate.py", "data/train.csv"],
        labels={"task_id": "contract-task"},
    )
    values.update(overrides)
    return SandboxSpec(**values)


def remove_task_dir(task_dir: Path) -> None:
    shutil.rmtree(task_dir, ignore_errors=True)


def env_keys(output: str) -> set[str]:
    return {line.split("=", 1)[0] for line in output.splitlines() if "=" in line}


class SandboxContract:
    """What every runtime must do. Needs fixtures `sandbox` (module scope) and `task_dir`."""

    @pytest.fixture(autouse=True)
    def _fresh(self, sandbox):
        sandbox.reset()
        yield

    def test_exec_basics_and_cwd(self, sandbox):
        r = sandbox.exec("pwd; id -u; echo err >&2; exit 3", timeout_s=30)
        assert r.exit_code == 3 and not r.timed_out and not r.output_truncated
        assert r.output.splitlines() == [WORKDIR, "1000", "err"]
        assert sandbox.exec("pwd", timeout_s=30, cwd="data").output.strip() == f"{WORKDIR}/data"
        assert sandbox.exec("pwd", timeout_s=30, cwd="/tmp").output.strip() == "/tmp"
        missing = sandbox.exec("echo never", timeout_s=30, cwd="no-such-dir")
        assert missing.exit_code == 1 and "never" not in missing.output
        py = sandbox.exec("python -c 'import numpy, pandas, sklearn; print(numpy.ones(3).sum())'", timeout_s=120)
        assert (py.exit_code, py.output.strip().splitlines()[-1]) == (0, "3.0")

    def test_timeout_kills_and_sandbox_still_works(self, sandbox):
        r = sandbox.exec("echo start; sleep 60 & sleep 60; echo finished", timeout_s=1)
        assert r.timed_out and r.exit_code == 137
        assert "start" in r.output and "finished" not in r.output
        after = sandbox.exec("echo alive; ps -eo user=,comm= | grep -c '^agent *sleep$' || true", timeout_s=30)
        assert after.output.split() == ["alive", "0"]
        assert not after.timed_out and after.exit_code == 0

    def test_huge_output_is_capped(self, sandbox):
        r = sandbox.exec("head -c 10000000 /dev/zero | tr '\\0' a; echo; echo tail-marker", timeout_s=60)
        assert r.exit_code == 0 and not r.timed_out and r.output_truncated
        assert r.output.startswith("a" * 64_000)
        assert len(r.output) < 64_000 + 200 and "tail-marker" not in r.output
        assert "output truncated" in r.output

    def test_non_utf8_output_decodes(self, sandbox):
        r = sandbox.exec("printf '\\377\\376ok'", timeout_s=30)
        assert r.output == "\ufffd\ufffdok"

    def test_process_limit_stops_forking(self, sandbox):
        script = (
            "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
            "            time.sleep(60); os._exit(0)\n        n += 1\n"
            "except OSError as e:\n    print('stopped', n, e.errno, flush=True)\n    os._exit(0)\n"
        )
        sandbox.write_file("forker.py", script.encode())
        r = sandbox.exec("python forker.py", timeout_s=60)
        words = r.output.split()
        assert not r.timed_out and words[0] == "stopped" and words[2] == "11"  # EAGAIN
        assert 0 < int(words[1]) < 64

    def test_fork_bomb_is_contained(self, sandbox):
        r = sandbox.exec("bomb() { bomb | bomb & }; bomb; sleep 30", timeout_s=3)
        assert r.timed_out or r.exit_code != 0
        assert subprocess.run(["true"]).returncode == 0  # the host can still start processes
        sandbox.reset()
        assert sandbox.exec("echo usable", timeout_s=30).output.strip() == "usable"

    def test_unbounded_allocation_is_stopped(self, sandbox):
        r = sandbox.exec("python -c \"x = []\nwhile True: x.append(b'x' * 10**7)\"", timeout_s=120)
        assert not r.timed_out and r.exit_code != 0
        assert sandbox.exec("echo fine", timeout_s=30).output.strip() == "fine"

    def test_filling_the_disk_hits_the_workspace_limit(self, sandbox):
        assert sandbox.exec(f"stat -f -c %T {WORKDIR}", timeout_s=30).output.strip() == "tmpfs"
        r = sandbox.exec("dd if=/dev/zero of=big bs=1M count=200 2>&1; stat -c %s big", timeout_s=60)
        assert "No space left on device" in r.output
        assert int(r.output.split()[-1]) <= 32 * 1024 * 1024

    def test_network_is_unreachable(self, sandbox):
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            port = server.getsockname()[1]
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass  # the listener works from the host
            code = (
                f"import socket\ntry:\n socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
                " print('connected')\nexcept OSError as e:\n print('failed', type(e).__name__)"
            )
            r = sandbox.exec(f'python -c "{code}"', timeout_s=60)
        assert r.output.split()[0] == "failed", r.output

    def test_host_environment_is_invisible(self, sandbox, monkeypatch):
        monkeypatch.setenv(SECRET_ENV, "do-not-leak-4c1d")
        r = sandbox.exec("env", timeout_s=30)
        assert "do-not-leak-4c1d" not in r.output and SECRET_ENV not in r.output
        assert env_keys(r.output) <= ALLOWED_ENV
        assert {"PATH", "HOME", "LANG", "PYTHONUNBUFFERED", "MPLBACKEND"} <= env_keys(r.output)

    def test_writing_outside_the_workspace_fails(self, sandbox):
        for target in ("/etc/evil", "/usr/evil", "/evil", "/root/evil", "/usr/bin/python3"):
            r = sandbox.exec(f"echo x > {target}", timeout_s=30)
            assert r.exit_code != 0, target
        assert sandbox.exec("echo ok > /tmp/scratch && cat /tmp/scratch", timeout_s=30).output.strip() == "ok"

    def test_read_only_evaluation_files_cannot_change(self, sandbox):
        for cmd in ("echo x >> evaluate.py", "rm -f evaluate.py", "mv evaluate.py moved.py", "chmod 666 evaluate.py",
                    "rm -f data/train.csv", "mv data gone", "rm -rf data", "ln -sf /etc/passwd evaluate.py"):  # fmt: skip
            sandbox.exec(cmd, timeout_s=30)
        assert sandbox.read_file("evaluate.py") == EVALUATE_PY
        assert sandbox.read_file("data/train.csv") == TRAIN_CSV
        with pytest.raises(PermissionError):
            sandbox.write_file("evaluate.py", b"print('hacked')")
        assert sandbox.read_file(f"{WORKDIR}/evaluate.py") == EVALUATE_PY
        sandbox.write_file("data/extra.csv", b"mine")  # the folder itself still takes new files
        assert sandbox.exec("rm data/extra.csv && echo removed", timeout_s=30).output.strip() == "removed"

    def test_reset_restores_starter_files(self, sandbox):
        sandbox.exec("echo changed > train.py; echo new > new.txt; mkdir -p locked/in; chmod 000 locked", timeout_s=30)
        assert sandbox.read_file("train.py") == b"changed\n"
        sandbox.reset()
        assert sandbox.read_file("train.py") == TRAIN_PY
        assert sandbox.exec("ls -A", timeout_s=30).output.split() == ["data", "evaluate.py", "train.py"]

    def test_grader_folder_is_not_reachable(self, sandbox, task_dir):
        labels = task_dir / "grader" / "labels.csv"
        assert GRADER_SECRET in labels.read_text()  # it is there on the host, readable by anyone
        r = sandbox.exec(f"cat {labels}; ls {task_dir}", timeout_s=30)
        assert GRADER_SECRET not in r.output and r.exit_code != 0
        with pytest.raises(FileNotFoundError):
            sandbox.read_file(str(labels))

    def test_file_round_trip_and_copy_out(self, sandbox, tmp_path):
        blob = bytes(range(256)) * 1000
        sandbox.write_file("sub/dir/blob.bin", blob)
        assert sandbox.read_file("sub/dir/blob.bin") == blob
        assert sandbox.exec("stat -c %u sub/dir/blob.bin", timeout_s=30).output.strip() == "1000"
        sandbox.copy_out("sub/dir/blob.bin", tmp_path / "out" / "blob.bin")
        assert (tmp_path / "out" / "blob.bin").read_bytes() == blob
        with pytest.raises(FileNotFoundError):
            sandbox.read_file("missing.txt")
        with pytest.raises(IsADirectoryError):
            sandbox.read_file("data")

