"""The sandbox contract: what every runtime (local bubblewrap, Docker) must do, run against each through its
harness (`sandbox_fixtures.HARNESSES`). One sandbox per runtime serves the tests that only run commands, reset
before each; the lifecycle tests (close, labels, reaping, GPUs, private sandboxes) start their own. Reset
isolation: nothing of an episode (files anywhere writable, processes, IPC objects, kernel keyrings) survives a
reset, and no grading sees what the previous one left in the grader's sandbox. A hostile agent's files cannot
make the host read without end, block, or follow a link out of the workspace; nothing it starts outlives its
command. Runtime-specific behaviour is tested in test_sandbox_local.py and test_sandbox_docker.py."""

from __future__ import annotations

import errno
import secrets
import shutil
import socket
import time
from pathlib import Path

import pytest
import yaml

from engine.errors import SandboxError
from engine.sandbox import make_runtime
from engine.sandbox.common import HOME, WORKDIR
from engine.sandbox.reads import FileTooLargeError, LinkEscapeError, SpecialFileError
from engine.tasks.folder import load_task
from engine.tasks.grading import TaskGrader

try:
    from tests.integration import sandbox_fixtures as fx
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    import sandbox_fixtures as fx

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


def test_nothing_of_the_agent_runs_after_its_command(sb, harness):
    fx.check_nothing_runs_after_the_command(sb, harness)


def test_the_agent_sees_only_its_own_processes(sb, harness, task_dir):
    """The sandbox has its own pid namespace, and the processes the runtime keeps in it name no host path: the
    agent's `ps` shows neither the host's processes, nor other sandboxes', nor where its sandbox lives."""
    with harness.runtime("it-contract-neighbour").start(fx.task_spec(task_dir)) as neighbour:
        ps = sb.exec("ps -eo user=,pid=,args=; cat /proc/1/cmdline | tr '\\0' ' '", timeout_s=30).output
        assert neighbour.exec("echo up", timeout_s=30).output == "up\n"
    for secret in (harness.ident(sb), harness.ident(neighbour), str(task_dir), "/tmp/synthscale", "it-contract",
                   "pytest", "--bind"):
        assert secret not in ps, (secret, ps)
    users = {line.split()[0] for line in ps.splitlines()[:-1] if line.strip()}
    assert users <= {"root", "agent"}, ps


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


def test_no_file_can_be_huge_even_sparse(sb):
    """RLIMIT_FSIZE caps every file a little above the workspace's size, wherever it is, however little of it is
    written (a 100 GB sparse file would cost no space, and every reader of it 100 GB)."""
    for where in (WORKDIR, "/tmp", HOME):
        r = sb.exec(f"cd {where} && truncate -s 100G sparse; echo rc=$?; "
                    "dd if=/dev/zero of=seeked bs=1M seek=100000 count=1; echo rc=$?", timeout_s=60)
        codes = [line for line in r.output.splitlines() if line.startswith("rc=")]  # stderr may come in between
        assert len(codes) == 2 and "rc=0" not in codes, r.output
        sizes = sb.exec(f"cd {where} && stat -c %s sparse seeked && rm sparse seeked", timeout_s=30).output.split()
        assert len(sizes) == 2 and all(int(size) <= 33 * 1024 * 1024 for size in sizes), sizes


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


def test_reads_are_capped_in_size(sb, tmp_path):
    """read_file and copy_out hold at most their cap: a larger file is refused with an OSError naming the path and
    the cap (the agent's doing), whether its size shows (a workspace file) or not (/proc's files say 0)."""
    sb.exec("head -c 3000000 /dev/urandom > big.bin", timeout_s=60)
    assert len(sb.read_file("big.bin")) == 3_000_000
    with pytest.raises(FileTooLargeError, match="3000000 bytes, over the host's read cap of 1000000 bytes") as e:
        sb.read_file("big.bin", max_bytes=1_000_000)
    assert isinstance(e.value, OSError) and e.value.errno == errno.EFBIG and e.value.filename == f"{WORKDIR}/big.bin"
    with pytest.raises(FileTooLargeError, match="cap of 100 bytes"):
        sb.read_file("/proc/cpuinfo", max_bytes=100)
    with pytest.raises(FileTooLargeError):
        sb.copy_out("big.bin", tmp_path / "big.bin", max_bytes=1_000_000)
    assert list(tmp_path.iterdir()) == []
    assert len(sb.read_file("big.bin", max_bytes=3_000_000)) == 3_000_000  # the cap itself is allowed


def test_reads_refuse_special_files_without_blocking(sb, tmp_path):
    """A FIFO (which blocks a reader until a writer comes), a device (/dev/zero never ends) or a socket is refused
    with SpecialFileError, directly or through a link, before anything opens it for reading."""
    sb.exec("mkfifo pipe && ln -s pipe to-pipe && "
            "python -c \"import socket; socket.socket(socket.AF_UNIX).bind('sock')\"", timeout_s=60)
    started = time.monotonic()
    for path, kind in (("pipe", "fifo"), ("to-pipe", "fifo"), ("sock", "socket"),
                       ("/dev/zero", "character special file"), ("/dev/urandom", "character special file")):
        with pytest.raises(SpecialFileError, match=f"is a {kind}, not a regular file"):
            sb.read_file(path)
    with pytest.raises(SpecialFileError):
        sb.copy_out("pipe", tmp_path / "pipe")
    assert time.monotonic() - started < 30  # nothing waited for a writer (each read has a minute)
    assert list(tmp_path.iterdir()) == []


def test_reads_never_follow_a_link_out_of_the_workspace(sb):
    """A symbolic link is followed only to a target in the workspace: one to /dev/zero, /etc/shadow, /etc/passwd
    or up and out is refused (LinkEscapeError), one within is read; a loop is the agent's error, not the cluster's."""
    sb.exec("ln -s /dev/zero zero && ln -s /etc/shadow shadow && ln -s /etc/passwd passwd && ln -s .. up && "
            "echo secret > ../.bashrc && "
            "ln -s /proc/self/environ environ && mkdir -p sub && ln -s ../train.py sub/train && ln -s sub/train twice "
            "&& ln -s loop-a loop-b && ln -s loop-b loop-a && ln -s /home/agent/workspace/train.py absolute && "
            f"ln -s {WORKDIR}/train.py /tmp/into", timeout_s=30)
    for path in ("zero", "shadow", "passwd", "up/.bashrc", "environ", "sub/../zero"):
        with pytest.raises(LinkEscapeError, match="a symbolic link leads out of the workspace"):
            sb.read_file(path)
    for path in ("sub/train", "twice", "absolute", "/tmp/into", "up/workspace/train.py"):  # where a link ends counts
        assert sb.read_file(path) == fx.TRAIN_PY, path
    with pytest.raises(OSError) as loop:
        sb.read_file("loop-a")
    assert loop.value.errno == errno.ELOOP
    with pytest.raises(LinkEscapeError):
        sb.list_files("up")


def test_listing_is_nul_separated_and_bounded(sb):
    """list_files names regular files only, to a depth, without following links; a name holding a newline comes
    back whole instead of forging another path (`find` printing lines would show ./submission.csv here)."""
    sb.exec("mkdir -p $'trap\\n./submission.csv' deep/a/b/c && echo x > $'trap\\n./submission.csv/f' && "
            "echo y > deep/a/b/c/far && echo z > deep/a/near && ln -s data linked && ln -s train.py alias.py && "
            "mkfifo pipe && touch .hidden", timeout_s=30)
    assert sb.list_files() == [".hidden", "data/train.csv", "deep/a/near", "evaluate.py", "train.py",
                               "trap\n./submission.csv/f"]
    assert sb.list_files(".", max_depth=1) == [".hidden", "evaluate.py", "train.py"]
    assert sb.list_files("deep", max_depth=5) == ["a/b/c/far", "a/near"]
    assert sb.list_files("linked") == ["train.csv"]  # a link to a folder in the workspace may be listed
    with pytest.raises(NotADirectoryError):
        sb.list_files("train.py")
    with pytest.raises(FileNotFoundError):
        sb.list_files("no-such-folder")
    sb.exec("mkdir many && cd many && python -c \"[open('f' * 200 + str(i), 'w').close() for i in range(6000)]\"",
            timeout_s=120)
    with pytest.raises(FileTooLargeError, match="listing holds more"):
        sb.list_files("many")


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
    sb.write_file("/tmp/mqueue.py", MQUEUE.encode())
    assert sb.exec("python /tmp/mqueue.py create", timeout_s=30).output.split() == ["created"]
    sb.reset()
    assert sb.exec("ipcs -m -q -s | grep -c agent || true", timeout_s=30).output.strip() == "0"
    sb.write_file("/tmp/mqueue.py", MQUEUE.encode())
    assert sb.exec("python /tmp/mqueue.py open", timeout_s=30).output.split() == ["missing"]


MQUEUE = """import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
flags = os.O_RDWR | (os.O_CREAT if sys.argv[1] == "create" else 0)
fd = libc.mq_open(b"/synthscale-leftover", flags, 0o600, None)
print("created" if fd >= 0 and sys.argv[1] == "create" else "missing" if ctypes.get_errno() == 2 else f"fd {fd}")
"""

KEYRING = """import ctypes, errno, platform, sys
add_key, keyctl = {"x86_64": (248, 250), "aarch64": (217, 219)}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for ring in (-4, -5, -3):  # the user, user-session and session keyrings
    if sys.argv[1] == "add":
        rc = libc.syscall(add_key, b"user", b"synthscale-note", b"for the next episode", 20, ctypes.c_int(ring))
    else:
        rc = libc.syscall(keyctl, 10, ctypes.c_int(ring), b"user", b"synthscale-note", 0)  # KEYCTL_SEARCH
    print(rc if rc >= 0 else errno.errorcode[ctypes.get_errno()])
"""


def test_kernel_keyrings_hold_nothing_across_episodes(sb, harness, task_dir):
    """A uid's kernel keyrings outlive any sandbox unless its keyring calls are denied (Docker's seccomp profile,
    the local runtime's filter): no key can be left for a later episode, or for another sandbox of the same uid."""
    sb.write_file("/tmp/keyring.py", KEYRING.encode())
    added = sb.exec("python /tmp/keyring.py add", timeout_s=30).output.split()
    assert len(added) == 3 and set(added) <= {"ENOSYS", "EPERM"}, added
    sb.reset()
    with harness.runtime("it-contract-keys").start(fx.task_spec(task_dir)) as other:
        for sandbox in (sb, other):
            sandbox.write_file("/tmp/keyring.py", KEYRING.encode())
            found = sandbox.exec("python /tmp/keyring.py search", timeout_s=30).output.split()
            assert len(found) == 3 and set(found) <= {"ENOSYS", "EPERM", "ENOKEY"}, found


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


def test_a_private_sandbox_hides_its_files_from_the_agent_uid(harness, task_dir):
    """A sandbox of another uid (a grader's): its starter files and whatever its processes write are its own
    (0600/0700, umask 077), so a process of the agent's uid in the same sandbox reads, lists and changes none of
    them, while what that process writes stays readable to the owner; nothing of either outlives its command."""
    spec = fx.task_spec(task_dir, uid=fx.OWNER_UID, labels={"task_id": "private-task"})
    with harness.runtime("it-contract-private").start(spec) as sb:
        assert sb.exec("id -u; id -un; umask", timeout_s=30).output.split() == [str(fx.OWNER_UID), "sandbox", "0077"]
        sb.exec("echo result > out.txt; echo scratch > /tmp/scratch.txt; echo home > ~/home.txt; mkdir made",
                timeout_s=30)
        sb.write_file("written.txt", b"by the host")
        modes = sb.exec("stat -c '%n %u %g %a' . train.py data data/train.csv evaluate.py out.txt made written.txt "
                        "/tmp/scratch.txt ~/home.txt", timeout_s=30).output.splitlines()
        owner = fx.OWNER_UID
        assert modes == [f". 0 {owner} 1770", f"train.py {owner} {owner} 600", f"data 0 {owner} 1770",
                         f"data/train.csv 0 {owner} 440", f"evaluate.py 0 {owner} 440", f"out.txt {owner} {owner} 600",
                         f"made {owner} {owner} 700", f"written.txt {owner} {owner} 600",
                         f"/tmp/scratch.txt {owner} {owner} 600", f"{HOME}/home.txt {owner} {owner} 600"], modes
        files = " ".join(f"{WORKDIR}/{f}" for f in ("train.py", "evaluate.py", "data/train.csv", "out.txt",
                                                     "written.txt")) + " /tmp/scratch.txt ~/home.txt"
        token = f"32{secrets.randbelow(10**6):06d}"
        agent = sb.exec(f"id -u; for f in {files}; do cat $f 2>/dev/null && echo READ $f; stat $f >/dev/null 2>&1 && "
                        f"echo FOUND $f; done; ls {WORKDIR} 2>/dev/null && echo LISTED; cd {WORKDIR} 2>/dev/null && "
                        f"echo ENTERED; (echo x > {WORKDIR}/new.txt) 2>/dev/null && echo WROTE; "
                        "echo mine > /tmp/mine.txt; "
                        f"setsid sleep {token} </dev/null >/dev/null 2>&1 &", timeout_s=30, uid=1000, cwd="/tmp")
        assert agent.output.split() == ["1000", "FOUND", "/tmp/scratch.txt"], agent.output  # /tmp is anyone's
        assert [p for p in harness.processes(sb) if token in p] == []
        assert sb.exec("cat /tmp/mine.txt", timeout_s=30).output == "mine\n"  # the agent's output reaches the owner
        assert sb.read_file("train.py") == fx.TRAIN_PY and "train.py" in sb.list_files()
        with pytest.raises(ValueError, match="runs as the sandbox's uid"):
            sb.exec("true", timeout_s=5, uid=4242)
        sb.reset()
        assert sb.exec("ls -A /tmp; ls", timeout_s=30).output.split() == [*_interpreter_dirs_in_tmp(harness),
                                                                            "data", "evaluate.py", "train.py"]


def _interpreter_dirs_in_tmp(harness) -> list[str]:
    """What the local sandbox's fresh /tmp holds after a reset: the folders of the engine's interpreter bound into it
    when that lives under /tmp (a checkout under /tmp, say); nothing on Docker."""
    if harness.name != "local":
        return []
    from engine.sandbox.bwrap import interpreter_prefixes

    return sorted({Path(p).relative_to("/tmp").parts[0] for p in interpreter_prefixes()
                   if Path(p).is_relative_to("/tmp") and Path(p) != Path("/tmp")})


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
