"""What only the local (bubblewrap) runtime does, with real bwrap processes, mounts, cgroups and rlimits: its
fallbacks (rlimits where no cgroup can be made, a tmpfs where overlayfs is unavailable, no bwrap at all) and its
host-side file reads. The behaviour it shares with Docker is in test_sandbox_contract.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engine.errors import SandboxError
from engine.sandbox import make_runtime
from engine.sandbox.local import LocalRuntime
from engine.sandbox.mounts import mounts_under
from engine.sandbox.reads import FileTooLargeError, SpecialFileError
from engine.sandbox.workspace import OverlayWorkspace, TmpfsWorkspace

try:
    from tests.integration import sandbox_fixtures as fx
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    import sandbox_fixtures as fx

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts and cgroups need root")
pytestmark = [pytest.mark.bwrap]


@needs_bwrap
@needs_root
def test_host_side_reads_leave_no_descriptor_in_the_workspace(task_dir):
    """As root the runtime reads workspace files itself (overlay workspace, cgroup); a read that is refused (a
    folder, a FIFO, a file over the cap) leaves nothing of the workspace open in this process, which would pin its
    mount past the sandbox's end."""
    with LocalRuntime(fx.small_config(), "it-local").start(fx.task_spec(task_dir)) as sb:
        assert isinstance(sb.workspace, OverlayWorkspace) and sb.cgroup is not None
        sb.exec("mkfifo pipe && head -c 2000 /dev/zero > big", timeout_s=30)
        for path, error in (("data", IsADirectoryError), ("pipe", SpecialFileError), ("big", FileTooLargeError)):
            with pytest.raises(error):
                sb.read_file(path, max_bytes=1000)
        assert sb.read_file("big") == bytes(2000)
        open_here = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if fd.isdigit()
                     and os.path.exists(f"/proc/self/fd/{fd}")]
        assert [target for target in open_here if target.startswith(str(sb._base))] == []


@needs_bwrap
@needs_root
def test_overlay_unavailable_falls_back_to_a_tmpfs(task_dir, monkeypatch):
    from engine.sandbox import workspace

    real_mount = workspace.mount

    def no_overlay(source, target, fstype, options, *args):
        if fstype == "overlay":
            raise OSError(19, "No such device")
        return real_mount(source, target, fstype, options, *args)

    monkeypatch.setattr(workspace, "mount", no_overlay)
    runtime = LocalRuntime(fx.small_config(), "it-local-nooverlay")
    with runtime.start(fx.task_spec(task_dir)) as sb:
        assert isinstance(sb.workspace, TmpfsWorkspace) and not runtime.overlay  # the next ones skip the attempt
        tmpfs = sorted(slot.workspace.path for slot in sb._slots)
        assert sorted(mounts_under(sb._base)) == tmpfs  # the failed overlay's upper tmpfs is gone
        for check in (fx.check_workspace_limit, fx.check_read_only_files, fx.check_reset_restores_the_starter_exactly,
                      fx.check_reset_leaves_nothing_writable):
            sb.reset()
            check(sb)
    with runtime.start(fx.task_spec(task_dir)) as sb:
        assert isinstance(sb.workspace, TmpfsWorkspace)


def test_missing_bwrap_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxError, match="install it \\(apt-get install bubblewrap\\)"):
        LocalRuntime(fx.small_config(), "it-local")


def test_unsandboxed_fallback_runs_in_a_temp_workspace(monkeypatch, task_dir):
    monkeypatch.setenv("PATH", "/nonexistent")
    runtime = LocalRuntime(fx.small_config(allow_unsandboxed=True), "it-local")
    monkeypatch.setenv("PATH", os.defpath)
    with runtime.start(fx.task_spec(task_dir)) as sb:
        assert Path(sb.workdir) != task_dir / "workspace"
        r = sb.exec("pwd; cat train.py; env", timeout_s=30)
        assert r.exit_code == 0 and r.output.splitlines()[:2] == [sb.workdir, "print('baseline')"]
        assert "SYNTHSCALE" not in r.output
        sb.exec("echo changed > train.py", timeout_s=30)
        sb.write_file("new/file.txt", b"x")
        assert sb.read_file("new/file.txt") == b"x"
        sb.reset()
        assert sb.read_file("train.py") == b"print('baseline')\n"
        assert sb.exec("ls", timeout_s=30).output.split() == ["data", "evaluate.py", "train.py"]
        assert (task_dir / "workspace" / "train.py").read_bytes() == b"print('baseline')\n"
        workdir = sb.workdir
    assert not Path(workdir).exists()


@pytest.fixture(scope="module")
def rlimit_sandbox(task_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("engine.sandbox.cgroups.CGROUP_ROOT", Path("/nonexistent-cgroup-root"))
        with LocalRuntime(fx.small_config(), "it-local-rlimits").start(fx.task_spec(task_dir)) as sb:
            assert sb.cgroup is None
            yield sb


@needs_bwrap
@needs_root  # without root there is no cgroup to switch off (the contract covers rlimits)
class TestLocalSandboxWithoutCgroups:
    """Where no cgroup can be made (a cgroup hierarchy that does not exist), rlimits must hold the line."""

    @pytest.fixture
    def sb(self, rlimit_sandbox):
        rlimit_sandbox.reset()
        return rlimit_sandbox

    def test_exec_basics_and_cwd(self, sb):
        fx.check_exec_basics(sb)

    def test_process_limit_stops_forking(self, sb):
        fx.check_process_limit(sb)

    def test_fork_bomb_is_contained(self, sb):
        fx.check_fork_bomb(sb)

    def test_unbounded_allocation_is_stopped(self, sb):
        fx.check_allocation_stopped(sb)

    def test_reset_leaves_nothing_anywhere_writable(self, sb):
        fx.check_reset_leaves_nothing_writable(sb)

    def test_nothing_of_the_agent_runs_after_its_command(self, sb):
        fx.check_nothing_runs_after_the_command(sb, fx.HARNESSES["local"])


def test_make_runtime_picks_the_local_runtime():
    runtime = make_runtime(fx.small_config(allow_unsandboxed=True), "it-local")
    assert isinstance(runtime, LocalRuntime) and runtime.name == "local"
