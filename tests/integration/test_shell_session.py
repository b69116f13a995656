"""The persistent shell session (`Sandbox.shell`) on each runtime (local bubblewrap, Docker): state persists,
timeouts interrupt the command and keep the shell, a stuck shell is restarted, output is capped, a dead or reset
session raises SandboxError, host functions work inside command lines while the host uses the same sandbox, and
the isolation is the sandbox's own (a few of test_sandbox_contract's checks, run from the session)."""

from __future__ import annotations

import threading
import time

import pytest

from engine.errors import SandboxError
from engine.sandbox.common import WORKDIR

try:
    from tests.integration import sandbox_fixtures as fx
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    import sandbox_fixtures as fx

@pytest.fixture(scope="module")
def runtime(harness):
    runtime = harness.runtime("it-shell")
    runtime.reap_leftovers()
    return runtime


@pytest.fixture(scope="module")
def sandbox(runtime, task_dir):
    with runtime.start(fx.task_spec(task_dir)) as sb:
        yield sb


@pytest.fixture
def sb(sandbox):
    sandbox.reset()
    return sandbox


def test_state_persists_and_commands_parse(sb):
    sh = sb.shell()
    sh.run("export A=1; f() { echo fn-$1; }; mkdir -p sub && cd sub; python3 -m venv --without-pip /tmp/venv", 60)
    r = sh.run("source /tmp/venv/bin/activate; echo $A $(f x) $PWD", 10)
    assert r.output == f"1 fn-x {WORKDIR}/sub\n" and r.cwd == f"{WORKDIR}/sub"
    assert sh.run("command -v python3; echo $VIRTUAL_ENV", 10).output == "/tmp/venv/bin/python3\n/tmp/venv\n"
    r = sh.run("cat <<EOF\nline $A\nEOF\nprintf 'no newline'", 10)
    assert r.output == "line 1\nno newline"
    r = sh.run("echo 'unterminated", 10)
    assert r.exit_code == 2 and not r.session_restarted
    assert sh.run("(exit 42)", 10).exit_code == 42
    assert sh.run("echo $A", 10).output == "1\n"


def test_timeout_interrupts_and_keeps_the_session(sb):
    sh = sb.shell()
    sh.run("export A=1; cd /tmp", 10)
    r = sh.run("echo start; sleep 60 & sleep 60; echo finished", 1)
    assert r.timed_out and r.exit_code == 137 and not r.session_restarted
    assert "start" in r.output and "finished" not in r.output
    r = sh.run("while :; do :; done", 1)
    assert r.timed_out and not r.session_restarted
    r = sh.run("echo $A $PWD; ps -eo user=,comm= | grep -c '^agent *sleep$' || true", 10)
    assert r.output == "1 /tmp\n0\n"


def test_stuck_shell_is_restarted(sb):
    sh = sb.shell()
    sh.grace_s = 0.5
    sh.run("export A=1", 10)
    r = sh.run("trap '' URG; while :; do :; done", 1)
    assert r.timed_out and r.session_restarted
    r = sh.run("echo A=$A; pwd; ps -eo user=,stat=,comm= | awk '$1 == \"agent\" && $2 !~ /Z/ && $3 == \"bash\"' | wc -l", 10)
    assert r.output == f"A=\n{WORKDIR}\n1\n"


def test_large_output_is_capped(sb):
    sh = sb.shell()
    r = sh.run("head -c 50000000 /dev/zero | tr '\\0' x; echo; echo tail", 60)
    assert r.output_truncated and not r.timed_out and len(r.output) < sb.cfg.max_output_bytes + 200
    assert sh.run("echo still", 10).output == "still\n"


def test_killed_from_outside_raises_and_reset_ends_it(sb):
    sh = sb.shell()
    pid = sh.run("echo $$", 10).output.strip()
    sb.exec(f"kill -9 {pid}", timeout_s=10)
    for _ in range(100):
        if not sh.alive:
            break
        time.sleep(0.05)
    assert not sh.alive
    with pytest.raises(SandboxError):
        sh.run("echo hi", 10)
    sh = sb.shell()
    sb.reset()
    assert not sh.alive
    with pytest.raises(SandboxError, match="reset"):
        sh.run("echo hi", 10)


def test_host_functions_use_the_sandbox_meanwhile(sb):
    sh = sb.shell(functions=["open", "search_dir"])
    sh.run("sleep 300 &", 10)  # a background job of the episode: the exec's clean-up must spare it
    seen = []

    def on_call(name, argv, pwd):
        seen.append((name, argv, pwd))
        text = sb.read_file("train.py").decode() + sb.exec("echo from-exec", timeout_s=10).output
        sb.write_file("written.txt", b"host\n")
        return text, 0 if name == "open" else 1

    r = sh.run("open 'a b.py' $'two\\nlines' \"q'\\\"\" | head -2; echo rc=${PIPESTATUS[0]}", 30, on_call)
    assert r.output == "print('baseline')\nfrom-exec\nrc=0\n"
    assert seen[-1] == ("open", ["a b.py", "two\nlines", "q'\""], WORKDIR)
    r = sh.run("cd data && search_dir foo > out.txt; echo rc=$?; cat out.txt written.txt ../written.txt", 30, on_call)
    assert r.output.startswith("rc=1\nprint('baseline')\nfrom-exec\n") and r.output.endswith("host\n")
    assert seen[-1][2] == f"{WORKDIR}/data"
    assert sh.run("jobs -r | wc -l", 10).output == "1\n"


def test_isolation_holds_from_the_session(sb):
    sh = sb.shell()
    r = sh.run("id -u; touch /usr/x 2>&1 >/dev/null; echo rc=$?; echo x >> evaluate.py; echo rc=$?", 10)
    lines = r.output.splitlines()
    assert lines[0] == str(sb.cfg.uid) and "rc=0" not in r.output
    r = sh.run("python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=2)\"", 20)
    assert r.exit_code != 0
    assert int(sh.run("ulimit -f", 10).output) > 0  # the runtime's limits line applied


def test_concurrent_sessions_in_two_sandboxes(runtime, sb, task_dir):
    with runtime.start(fx.task_spec(task_dir)) as other:
        shells = [sb.shell(), other.shell()]
        results = {}

        def work(i):
            shells[i].run(f"export N={i}; echo {i} > mine.txt", 10)
            results[i] = "".join(shells[i].run("sleep 0.05; echo $N; cat mine.txt", 10).output for _ in range(4))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {0: "0\n0\n" * 4, 1: "1\n1\n" * 4}
