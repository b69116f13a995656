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
