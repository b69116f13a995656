"""Integration tests of the local (bubblewrap) runtime: real bwrap processes, tmpfs, cgroups and rlimits."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from engine.errors import SandboxError
from engine.sandbox import make_runtime
from engine.sandbox.local import LocalRuntime

try:
    from tests.integration.sandbox_fixtures import SandboxContract, make_task_dir, remove_task_dir, small_config, task_spec
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    from sandbox_fixtures import SandboxContract, make_task_dir, remove_task_dir, small_config, task_spec

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
pytestmark = [pytest.mark.bwrap]


@pytest.fixture(scope="module")
def task_dir():
    root = make_task_dir()
    yield root
    remove_task_dir(root)


@pytest.fixture(scope="module")
def sandbox(task_dir):
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    with LocalRuntime(small_config(), "it-local").start(task_spec(task_dir)) as sb:
        yield sb


@needs_bwrap
class TestLocalSandbox(SandboxContract):
    def test_background_processes_end_with_their_command(self, sandbox):
        sandbox.exec("(sleep 300; echo late > late.txt) &", timeout_s=30)
        assert sandbox.exec("ps -eo comm= | grep -c sleep || true", timeout_s=30).output.strip() == "0"

    @pytest.mark.skipif(os.geteuid() != 0, reason="the tmpfs workspace and uid drop need root")
    def test_close_unmounts_and_removes_everything(self, task_dir):
        sb = LocalRuntime(small_config(), "it-local-close").start(task_spec(task_dir))
        base = sb._ws.parent
        assert os.path.ismount(sb._ws)
        cgroup_dirs = list(sb.cgroup.dirs) if sb.cgroup else []
        sb.close()
        assert not base.exists()
        assert not any(d.exists() for d in cgroup_dirs)
        with pytest.raises(SandboxError, match="closed"):
            sb.exec("true", timeout_s=5)
        sb.close()  # idempotent


@needs_bwrap
def test_gpu_ids_reach_the_sandbox_as_cuda_visible_devices(task_dir):
    with LocalRuntime(small_config(), "it-local-gpu").start(task_spec(task_dir, gpu_ids=["3", "1"])) as sb:
        assert "CUDA_VISIBLE_DEVICES=3,1" in sb.exec("env", timeout_s=30).output.splitlines()


@needs_bwrap
def test_a_missing_read_only_path_is_refused_and_nothing_is_left_behind(task_dir):
    before = set(Path(tempfile.gettempdir()).glob("synthscale-it-local-bad-*"))
    with pytest.raises(SandboxError, match="'nope.py' does not exist"):
        LocalRuntime(small_config(), "it-local-bad").start(task_spec(task_dir, read_only_paths=["nope.py"]))
    assert set(Path(tempfile.gettempdir()).glob("synthscale-it-local-bad-*")) == before


def test_missing_bwrap_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxError, match="install it \\(apt-get install bubblewrap\\)"):
        LocalRuntime(small_config(), "it-local")


def test_unsandboxed_fallback_runs_in_a_temp_workspace(monkeypatch, task_dir):
    monkeypatch.setenv("PATH", "/nonexistent")
    runtime = LocalRuntime(small_config(allow_unsandboxed=True), "it-local")
    monkeypatch.setenv("PATH", os.defpath)
    with runtime.start(task_spec(task_dir)) as sb:
        assert Path(sb.workdir) != task_dir / "workspace"
        r = sb.exec("pwd; cat train.py; env", timeout_s=30)
        assert r.exit_code == 0 and r.output.splitlines()[:2] == [sb.workdir, "print('baseline')"]
        assert "SYNTHSCALE" not in r.output
        sb.exec("echo changed > train.py", timeout_s=30)
        sb.reset()
        assert sb.read_file("train.py") == b"print('baseline')\n"
        assert (task_dir / "workspace" / "train.py").read_bytes() == b"print('baseline')\n"
        workdir = sb.workdir
    assert not Path(workdir).exists()


@pytest.fixture(scope="module")
def rlimit_sandbox(task_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("engine.sandbox.cgroups.CGROUP_ROOT", Path("/nonexistent-cgroup-root"))
        with LocalRuntime(small_config(), "it-local-rlimits").start(task_spec(task_dir)) as sb:
            assert sb.cgroup is None
            yield sb


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="without root there is no cgroup to switch off: the main tests cover rlimits")
class TestLocalSandboxWithoutCgroups:
    """Where no cgroup can be made (a cgroup hierarchy that does not exist), rlimits must hold the line."""

    @pytest.fixture
    def sandbox(self, rlimit_sandbox):
        return rlimit_sandbox

    _fresh = SandboxContract._fresh
    test_exec_basics_and_cwd = SandboxContract.test_exec_basics_and_cwd
    test_process_limit_stops_forking = SandboxContract.test_process_limit_stops_forking
    test_fork_bomb_is_contained = SandboxContract.test_fork_bomb_is_contained
    test_unbounded_allocation_is_stopped = SandboxContract.test_unbounded_allocation_is_stopped


def test_make_runtime_picks_the_local_runtime():
    runtime = make_runtime(small_config(allow_unsandboxed=True), "it-local")
    assert isinstance(runtime, LocalRuntime) and runtime.name == "local"


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="the tmpfs workspace and cgroup need root")
def test_reaper_removes_what_a_killed_process_left(task_dir, tmp_path):
    """A driver killed mid-run leaves a mounted workspace, a cgroup and a folder; the reaper removes them
    and leaves the sandboxes of live processes alone."""
    import signal
    import subprocess
    import sys
    import textwrap

    from engine.sandbox.cgroups import SandboxCgroup

    run_id = "it-reap"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from engine.config import SandboxConfig
        from engine.protocols import SandboxSpec
        from engine.sandbox.local import LocalRuntime
        sb = LocalRuntime(SandboxConfig(workspace_mb=16), {run_id!r}).start(
            SandboxSpec(workspace=Path({str(task_dir / 'workspace')!r}), labels={{"task_id": "t"}}))
        print(sb._base, flush=True)
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=str(Path(__file__).resolve().parents[2]))
    base = Path(child.stdout.readline().strip())
    runtime = LocalRuntime(small_config(), run_id)
    with runtime.start(task_spec(task_dir)) as mine:
        assert runtime.reap_leftovers() == 0  # the child is alive: nothing to reap
        assert base.is_dir() and os.path.ismount(base / "workspace")
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert runtime.reap_leftovers() == 1
        assert not base.exists() and SandboxCgroup.existing(base.name).dirs == []
        assert mine.exec("echo alive", timeout_s=30).output.strip() == "alive"  # ours untouched
    assert not list(Path(tempfile.gettempdir()).glob(f"synthscale-{run_id}-*"))
