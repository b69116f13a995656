"""The sandbox contract: what every runtime (local bubblewrap, Docker) must do, run against each through its
harness (`sandbox_fixtures.HARNESSES`). One sandbox per runtime serves the tests that only run commands, reset
before each; the lifecycle tests (close, labels, reaping, GPUs) start their own. Reset isolation: nothing of an
episode (files anywhere writable, processes, IPC objects) survives a reset, and no grading sees what the
previous one left in the grader's sandbox. Runtime-specific behaviour is tested in test_sandbox_local.py and
test_sandbox_docker.py."""

from __future__ import annotations

import secrets
import shutil
import socket
from pathlib import Path

import pytest
import yaml

from engine.errors import SandboxError
from engine.sandbox import make_runtime
from engine.sandbox.common import WORKDIR
from engine.tasks.folder import load_task
from engine.tasks.grading import TaskGrader

try:
    from tests.integration import sandbox_fixtures as fx
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    import sandbox_fixtures as fx

RUNTIMES = [pytest.param("local", marks=pytest.mark.bwrap, id="local"),
            pytest.param("docker", marks=pytest.mark.docker, id="docker")]


@pytest.fixture(scope="module", params=RUNTIMES)
def harness(request):
    harness = fx.HARNESSES[request.param]
    problem = harness.problem()
    if problem is not None:
        pytest.skip(problem)
    return harness


@pytest.fixture(scope="module")
def task_dir():
    root = fx.make_task_dir()
    yield root
    fx.remove_task_dir(root)


@pytest.fixture(scope="module")
def sandbox(harness, task_dir):
    runtime = harness.runtime("it-contract")
    runtime.reap_leftovers()
    with runtime.start(fx.task_spec(task_dir)) as sb:
        yield sb


@pytest.fixture
def sb(sandbox):
    """The runtime's shared sandbox, at its starter state."""
    sandbox.reset()
    return sandbox


# ----- commands -----


def test_exec_basics_and_cwd(sb):
    fx.check_exec_basics(sb)


def test_timeout_kills_and_sandbox_still_works(sb):
    r = sb.exec("echo start; sleep 60 & sleep 60; echo finished", timeout_s=1)
    assert r.timed_out and r.exit_code == 137
    assert "start" in r.output and "finished" not in r.output
    after = sb.exec("echo alive; ps -eo user=,comm= | grep -c '^agent *sleep$' || true", timeout_s=30)
    assert after.output.split() == ["alive", "0"]
    assert not after.timed_out and after.exit_code == 0


def test_background_jobs_end_with_their_command(sb):
    sb.exec("(sleep 300; echo late > late.txt) & sleep 301 &", timeout_s=30)
    assert sb.exec("ps -eo user=,comm= | grep -c '^agent *sleep$' || true", timeout_s=30).output.strip() == "0"


def test_huge_output_is_capped(sb):
    r = sb.exec("head -c 10000000 /dev/zero | tr '\\0' a; echo; echo tail-marker", timeout_s=60)
    assert r.exit_code == 0 and not r.timed_out and r.output_truncated
    assert r.output.startswith("a" * 64_000)
    assert len(r.output) < 64_000 + 200 and "tail-marker" not in r.output
    assert "output truncated" in r.output


def test_non_utf8_output_decodes(sb):
    assert sb.exec("printf '\\377\\376ok'", timeout_s=30).output == "\ufffd\ufffdok"


def test_host_environment_is_invisible(sb, monkeypatch):
    monkeypatch.setenv(fx.SECRET_ENV, "do-not-leak-4c1d")
    r = sb.exec("env", timeout_s=30)
    assert "do-not-leak-4c1d" not in r.output and fx.SECRET_ENV not in r.output
    assert fx.env_keys(r.output) <= fx.ALLOWED_ENV
    assert {"PATH", "HOME", "LANG", "PYTHONUNBUFFERED", "MPLBACKEND"} <= fx.env_keys(r.output)


# ----- limits -----


def test_process_limit_stops_forking(sb):
    fx.check_process_limit(sb)


def test_fork_bomb_is_contained(sb):
    fx.check_fork_bomb(sb)


def test_unbounded_allocation_is_stopped(sb):
    fx.check_allocation_stopped(sb)


def test_filling_the_disk_hits_the_workspace_limit(sb):
    fx.check_workspace_limit(sb)


def test_network_is_unreachable(sb):
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
        r = sb.exec(f'python -c "{code}"', timeout_s=60)
    assert r.output.split()[0] == "failed", r.output


# ----- files -----


def test_writing_outside_the_workspace_fails(sb):
    for target in ("/etc/evil", "/usr/evil", "/evil", "/root/evil", "/usr/bin/python3"):
        assert sb.exec(f"echo x > {target}", timeout_s=30).exit_code != 0, target
    assert sb.exec("echo ok > /tmp/scratch && cat /tmp/scratch", timeout_s=30).output.strip() == "ok"


def test_read_only_evaluation_files_cannot_change(sb):
    fx.check_read_only_files(sb)


def test_grader_folder_is_not_reachable(sb, task_dir):
    labels = task_dir / "grader" / "labels.csv"
    assert fx.GRADER_SECRET in labels.read_text()  # it is there on the host, readable by anyone
    r = sb.exec(f"cat {labels}; ls {task_dir}", timeout_s=30)
    assert fx.GRADER_SECRET not in r.output and r.exit_code != 0
    with pytest.raises(FileNotFoundError):
        sb.read_file(str(labels))


def test_file_round_trip_and_copy_out(sb, tmp_path):
    blob = bytes(range(256)) * 1000
    sb.write_file("sub/dir/blob.bin", blob)
    assert sb.read_file("sub/dir/blob.bin") == blob
    assert sb.exec("stat -c '%u %g %a' sub/dir/blob.bin", timeout_s=30).output.strip() == "1000 1000 644"
    sb.write_file("sub/dir/blob.bin", b"short")  # overwritten in place
    assert sb.read_file("sub/dir/blob.bin") == b"short"
    sb.copy_out("sub/dir/blob.bin", tmp_path / "out" / "blob.bin")
    assert (tmp_path / "out" / "blob.bin").read_bytes() == b"short"
    sb.write_file("/tmp/elsewhere.txt", b"fine")  # outside the workspace: allowed, gone with the command
    with pytest.raises(FileNotFoundError):
        sb.read_file("missing.txt")
    with pytest.raises(FileNotFoundError):
        sb.read_file("no-such-dir/missing.txt")
    with pytest.raises(IsADirectoryError):
        sb.read_file("data")


def test_file_operations_see_only_what_the_agent_may(sb, task_dir):
    """read_file/write_file act as the agent would: permissions bind, and symlinks resolve inside the
    sandbox, never on the host (the grader's labels are one symlink away on the host's filesystem)."""
    labels = task_dir / "grader" / "labels.csv"
    sb.exec(f"echo mine > own.txt && chmod 600 own.txt && ln -s own.txt alias && ln -s {labels} secret && "
            "echo hidden > closed.txt && chmod 000 closed.txt && mkdir shut && chmod 500 shut", timeout_s=30)
    assert sb.read_file("alias") == b"mine\n"
    sb.write_file("alias", b"via link")
    assert sb.read_file("own.txt") == b"via link"
    assert sb.exec("stat -c '%a %u' own.txt", timeout_s=30).output.strip() == "600 1000"  # mode and owner kept
    with pytest.raises(FileNotFoundError):
        sb.read_file("secret")
    with pytest.raises(FileNotFoundError):
        sb.write_file("secret", b"tampered")
    assert labels.read_text() == fx.GRADER_SECRET + "\n"
    with pytest.raises(PermissionError):
        sb.read_file("closed.txt")
    with pytest.raises(PermissionError):
        sb.write_file("shut/new.txt", b"x")
    with pytest.raises(PermissionError):
        sb.write_file("data/train.csv", b"x")


# ----- reset isolation -----


def test_reset_restores_the_starter_state_exactly(sb):
    fx.check_reset_restores_the_starter_exactly(sb)


def test_reset_leaves_nothing_anywhere_writable(sb):
    fx.check_reset_leaves_nothing_writable(sb)


def test_reset_kills_every_process_of_the_episode(sb, harness):
    token = f"30{secrets.randbelow(10**6):06d}"
    sb.exec(f"setsid sh -c 'cd {WORKDIR} && exec sleep {token}.1' </dev/null >/dev/null 2>&1 & "
            f"nohup sleep {token}.2 </dev/null >/dev/null 2>&1 & disown; "
            f"(cd /tmp && sleep {token}.3 </dev/null >/dev/null 2>&1 &); "
            f"python -c 'import os, time\nif os.fork() == 0:\n os.setsid(); time.sleep({token}.4)' &", timeout_s=30)
    sb.reset()
    assert [p for p in harness.processes(sb) if token in p] == []
    assert sb.exec("echo usable", timeout_s=30).output.strip() == "usable"


def test_reset_removes_ipc_objects(sb):
    made = sb.exec("ipcmk -M 4096 && ipcmk -Q && ipcmk -S 1 && ipcs -m -q -s | grep -c agent", timeout_s=30)
    assert made.output.split()[-1] == "3", made.output
    sb.reset()
    assert sb.exec("ipcs -m -q -s | grep -c agent || true", timeout_s=30).output.strip() == "0"


# ----- lifecycle -----


def test_close_releases_everything(harness, task_dir):
    sandbox = harness.runtime("it-contract-close").start(fx.task_spec(task_dir))
    ident = harness.ident(sandbox)
    assert harness.held(ident)
    sandbox.close()
    assert not harness.held(ident)
    with pytest.raises(SandboxError, match="closed"):
        sandbox.exec("true", timeout_s=5)
    with pytest.raises(SandboxError, match="closed"):
        sandbox.reset()
    sandbox.close()  # idempotent


def test_sandboxes_carry_their_run_and_task(harness, task_dir):
    with harness.runtime("it-contract-labels").start(fx.task_spec(task_dir)) as sandbox:
        assert harness.labelled(sandbox, "it-contract-labels", "contract-task")


def test_gpu_ids_are_visible(harness, task_dir):
    ids = harness.gpu_ids()
    with harness.runtime("it-contract-gpu").start(fx.task_spec(task_dir, gpu_ids=ids)) as sandbox:
        assert harness.visible_gpus(sandbox) == ids


def test_a_bad_read_only_path_is_refused_and_leaves_nothing(harness, task_dir):
    before = harness.of_run("it-contract-bad")
    with pytest.raises(SandboxError, match="'nope.py' does not exist"):
        harness.runtime("it-contract-bad").start(fx.task_spec(task_dir, read_only_paths=["nope.py"]))
    assert harness.of_run("it-contract-bad") == before


def test_reaper_removes_what_a_dead_owner_left(harness, task_dir):
    """A sandbox whose owning process died (a killed worker) is reaped; a live process's sandbox of the same run,
    and another run's, are left alone."""
    run_id = "it-contract-reap"
    runtime, other = harness.runtime(run_id), harness.runtime("it-contract-other")
    runtime.reap_leftovers()
    leftover = fx.start_leftover(harness, run_id, task_dir / "workspace")
    assert harness.held(leftover)
    with runtime.start(fx.task_spec(task_dir)) as mine, other.start(fx.task_spec(task_dir)) as theirs:
        assert runtime.reap_leftovers() == 1
        assert not harness.held(leftover)
        assert runtime.reap_leftovers() == 0
        for sandbox in (mine, theirs):
            assert harness.held(harness.ident(sandbox))
            assert sandbox.exec("echo alive", timeout_s=30).output.strip() == "alive"


def test_make_runtime_picks_the_runtime(harness):
    runtime = make_runtime(fx.small_config(runtime=harness.name), "it-contract")
    assert runtime.name == harness.name


# ----- grading -----

ISOLATION_GRADER = '''"""Scores 1.0 when nothing of an earlier grading is left; then leaves all it can behind."""
import json, pathlib, subprocess
here = pathlib.Path(__file__).resolve().parent
marks = [here / "leftover", pathlib.Path("/tmp/leftover"), pathlib.Path.home() / "leftover",
         pathlib.Path("/dev/shm/leftover")]
left = sum(1 << i for i, m in enumerate(marks) if m.exists())
if (here / "labels_validation.csv").read_text() != LABELS:
    left |= 16
if subprocess.run(["pgrep", "-f", "sleep 3011"], capture_output=True).returncode == 0:
    left |= 32
for m in marks:
    m.write_text("x")
(here / "labels_validation.csv").write_text("tampered")
subprocess.Popen(["sleep", "3011"], start_new_session=True, stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
score = 0.0 if left else 1.0
print(json.dumps({"validation": {"accuracy": score, "leftovers": left}, "test": {"accuracy": score}}))
'''


def test_no_grading_sees_what_the_previous_one_left(harness, tmp_path):
    """The grader's sandbox is kept between gradings but restored before each, even where the grader itself
    (or code a submission smuggles into it) leaves files, changes the grader's files and starts processes."""
    root = tmp_path / "isolation-task"
    shutil.copytree(Path(fx.REPO) / "examples" / "tasks" / "wine-classification", root)
    cfg = yaml.safe_load((root / "task.yaml").read_text())
    cfg.update(id="isolation-task", requirements=[])
    (root / "task.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    labels = (root / "grader" / "labels_validation.csv").read_text()
    (root / "grader" / "evaluate.py").write_text(ISOLATION_GRADER.replace("LABELS", repr(labels)))
    (root / "workspace" / "submission.csv").write_text("id,label\n")
    task = load_task(root)
    runtime = harness.runtime("it-contract-grading")
    spec = fx.task_spec(root, read_only_paths=[], labels={"task_id": task.id})
    with runtime.start(spec) as agent, TaskGrader(task, runtime, timeout_s=120) as grader:
        grades = [grader.grade(agent) for _ in range(3)]
        grader.prepare()  # ahead of time, as a worker may do while the agent plays
        grades.append(grader.grade(agent))
    assert [(g.error, g.validation) for g in grades] == [(None, {"accuracy": 1.0, "leftovers": 0.0})] * 4


def test_a_missing_submission_is_reported_not_raised(harness, tmp_path):
    root = tmp_path / "missing-task"
    shutil.copytree(Path(fx.REPO) / "examples" / "tasks" / "wine-classification", root)
    task = load_task(root)
    runtime = harness.runtime("it-contract-grading")
    spec = fx.task_spec(root, read_only_paths=[])
    with runtime.start(spec) as agent, TaskGrader(task, runtime, timeout_s=120) as grader:
        assert grader.grade(agent).error == "submission_not_found: no submission.csv in the workspace"
        agent.exec("mkdir submission.csv", timeout_s=30)
        assert grader.grade(agent).error == "submission_not_found: no submission.csv in the workspace"
        agent.exec("rmdir submission.csv && echo id,label > submission.csv && chmod 000 submission.csv", timeout_s=30)
        assert grader.grade(agent).error.startswith("submission_not_found: submission.csv is not readable")
