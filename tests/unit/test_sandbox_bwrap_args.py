"""bwrap's mounts apply in order: the engine's Python must be bound after the fresh /tmp, or a venv that
lives under /tmp (a CI checkout) disappears inside the sandbox."""

from pathlib import Path

from engine.sandbox import bwrap
from engine.sandbox.bwrap import bwrap_argv


def test_interpreter_is_bound_after_the_scratch_tmpfs(monkeypatch, tmp_path: Path) -> None:
    venv = tmp_path / "ci" / ".venv"
    venv.mkdir(parents=True)
    monkeypatch.setattr(bwrap, "interpreter_prefixes", lambda: [str(venv)])
    argv = bwrap_argv(workspace_dir=tmp_path / "ws", etc_dir=tmp_path / "etc", scratch_mb=16, network=False,
                      gpu_ids=[], user_namespace_uid=None)
    tmpfs_at = max(i for i, a in enumerate(argv) if a == "--tmpfs")
    bind_at = next(i for i in range(len(argv) - 2) if argv[i:i + 3] == ["--ro-bind", str(venv), str(venv)])
    assert bind_at > tmpfs_at
    assert argv[argv.index(str(tmp_path / "ci")) - 1] == "--dir"  # its parents exist inside the tmpfs


def test_limits_are_set_in_kib_by_the_command_shell() -> None:
    """bash's ulimit takes KiB for -f and -d; without a cgroup the process count and memory are rlimits too."""
    assert bwrap.limits_script(nproc=None, data_bytes=None, file_size_bytes=512 * 1024 * 1024) == (
        "ulimit -f 524288 -c 0 && umask 022")
    assert bwrap.limits_script(nproc=256, data_bytes=4096 * 1024 * 1024, file_size_bytes=32 * 1024 * 1024) == (
        "ulimit -f 32768 -c 0 -u 256 -d 4194304 && umask 022")
