"""Grading Python-submission tasks without running the agent's code in the grader's process (reads the task and the
submitted module; runs the grader and the submission as two processes joined by `engine.tasks.channel`).

- **Our tasks (separate grading).** In the grader's private sandbox (files unreadable to the agent's uid), the
  grader imports a stand-in of the submitted module; the module itself runs beside it as the agent's uid, in
  `CHANNEL_DIR`, behind the channel's server. The metrics are read from the grader's output only.
- **Imported MLGym tasks (grading: mlgym).** MLGym's `evaluate.py` runs unchanged in the agent's sandbox (MLGym's
  way), but it imports the stand-in (from a folder put first on its path) while the agent's module runs in a
  process of its own; the workspace comes *last* on the path, so a `json.py` of the agent's cannot replace a
  module the grader imports; and the grader process is made non-dumpable, so another process of the same uid
  cannot write into its output through /proc.
"""

from __future__ import annotations

import shlex
import threading
from pathlib import PurePosixPath

from engine.protocols import ExecResult, Sandbox
from engine.tasks.channel import CHANNEL_DIR, server_source, stand_in_source
from engine.tasks.spec import TaskSpec

STAND_IN_DIR = f"{CHANNEL_DIR}/stand-in"
_SETUP = (f"rm -rf {CHANNEL_DIR} && mkdir -m 755 {CHANNEL_DIR} {STAND_IN_DIR} && "
          f"mkfifo -m 644 {CHANNEL_DIR}/calls && mkfifo -m 622 {CHANNEL_DIR}/answers")
# after the grader, whatever it did: a server still waiting for its first call sees the channel open and close
_RELEASE = f'rc=$?; : 3<> {CHANNEL_DIR}/calls; exit "$rc"'

_MLGYM_RUNNER = """import ctypes, runpy, sys
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no other process may open our descriptors via /proc
sys.path[:0] = {first!r}
sys.path.append({workdir!r})
sys.argv = {argv!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def mlgym_command(task: TaskSpec, workdir: str, grader_command: str, stand_in: bool) -> str:
    """MLGym's grader command, run so that the workspace comes last on the grader's module path (stdlib and
    site-packages first: a workspace `json.py` cannot replace the standard one; the task's own helper modules
    still import), with the stand-in folder first for a Python submission, and the grader non-dumpable.

    >>> from engine.tasks.spec import TaskConfig
    >>> t = TaskSpec(root=".", config=TaskConfig(id="t", name="t", description="", metric="m", grading="mlgym"))
    >>> cmd = mlgym_command(t, "/w", "python evaluate.py --submission_file s.csv", False)
    >>> cmd.startswith("python -I -c "), "sys.path.append(" in cmd, "--submission_file" in cmd
    (True, True, True)
    """
    argv = shlex.split(grader_command)
    if argv[0] != "python":  # torchrun and the like: MLGym's own command, unchanged
        return grader_command
    script = argv[1]
    runner = _MLGYM_RUNNER.format(first=[STAND_IN_DIR] if stand_in else [], workdir=workdir, argv=argv[1:],
                                  script=script)
    return f"python -I -c {shlex.quote(runner)}"


def module_name(task: TaskSpec, artefact: str) -> str:
    """The file name the grader imports the submission under (`strategy.py`)."""
    return PurePosixPath(artefact).name


def grade_separately(sandbox: Sandbox, task: TaskSpec, data: bytes, artefact: str, agent_uid: int,
                     timeout_s: float, grader_command: str) -> ExecResult:
    """Run the grader over the submitted module (`data`, the file `artefact`) in `sandbox`, the grader's private
    sandbox; the module runs as `agent_uid` behind the channel. Returns the grader's command result."""
    name = module_name(task, artefact)
    sandbox.exec(_SETUP, timeout_s=30)
    sandbox.write_file(name, stand_in_source(name).encode())  # in the grader's own (private) workspace
    sandbox.write_file(f"{CHANNEL_DIR}/server.py", server_source().encode())
    sandbox.write_file(f"{CHANNEL_DIR}/{name}", data)
    sandbox.exec(f"chmod 644 {CHANNEL_DIR}/server.py {shlex.quote(f'{CHANNEL_DIR}/{name}')}", timeout_s=30)
    return _with_server(sandbox, name, agent_uid, timeout_s, lambda: sandbox.exec(
        f"{grader_command}; {_RELEASE}", timeout_s=timeout_s))


def grade_mlgym(sandbox: Sandbox, task: TaskSpec, artefact: str, timeout_s: float, grader_command: str) -> ExecResult:
    """MLGym's evaluate.py in the agent's sandbox with a stand-in for the submitted module and the workspace last
    on its path (see the module docstring)."""
    name = module_name(task, artefact)
    sandbox.exec(_SETUP, timeout_s=30)
    sandbox.write_file(f"{STAND_IN_DIR}/{name}", stand_in_source(name).encode())
    sandbox.write_file(f"{CHANNEL_DIR}/server.py", server_source().encode())
    command = mlgym_command(task, sandbox.workdir, grader_command, stand_in=True)
    return _with_server(sandbox, f"{sandbox.workdir}/{artefact}", None, timeout_s, lambda: sandbox.exec(
        f"{command}; {_RELEASE}", timeout_s=timeout_s))


def _with_server(sandbox: Sandbox, module_path: str, uid: int | None, timeout_s: float, grade) -> ExecResult:
    """`grade()` while the submission's server runs beside it (a thread: both are sandbox commands)."""
    serve = (f"exec python -I server.py {shlex.quote(module_path)} '*' "
             f"< {CHANNEL_DIR}/calls > {CHANNEL_DIR}/answers")
    server = threading.Thread(target=lambda: sandbox.exec(serve, timeout_s=timeout_s, cwd=CHANNEL_DIR, uid=uid),
                              daemon=True)
    server.start()
    try:
        return grade()
    finally:
        server.join(timeout=60)
