"""The persistent shell session (`engine.sandbox.session`) over a plain local bash, through the test double
`DirSandbox.shell` and `local_session`: state persists, the protocol survives what the agent's text holds,
timeouts interrupt without losing state, host functions work inside command lines."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from engine.errors import SandboxError
from engine.sandbox.session import ansi_c_quote, escape_reply, local_session

sys.path.insert(0, str(Path(__file__).parent))
from sandbox_double import DirSandbox  # noqa: E402


@pytest.fixture
def sb(tmp_path):
    sandbox = DirSandbox(tmp_path, max_output_bytes=10_000)
    yield sandbox
    sandbox.close()


def echo_call(name: str, argv: list[str], pwd: str) -> tuple[str, int]:
    return f"{name}|{'|'.join(argv)}|{pwd}\n", 3


def test_quoting_helpers():
    assert ansi_c_quote("a'b\\c\n\0é") == "$'a\\x27b\\x5cc\\x0a\\xc3\\xa9'"
    assert escape_reply("x\\ny\n\r\0") == b"x\\\\ny\\n\\r\\0000"


def test_state_persists_between_commands(sb, tmp_path):
    sh = sb.shell()
    assert sh.run("export A=1; B=2; f() { echo fn-$1; }; mkdir -p sub && cd sub", 5).exit_code == 0
    r = sh.run("echo $A $B $(f x) $PWD", 5)
    assert r.output == f"1 2 fn-x {tmp_path.resolve()}/sub\n" and r.cwd == f"{tmp_path.resolve()}/sub"
    assert sh.run("declare -a arr=(p q); declare -A m=([k]=v)", 5).exit_code == 0
    assert sh.run('echo "${arr[1]} ${m[k]}"', 5).output == "q v\n"


def test_venv_activation_persists(sb, tmp_path):
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "activate").write_text(f'export VIRTUAL_ENV={tmp_path / "venv"}; export PATH="$VIRTUAL_ENV/bin:$PATH"\n')
    (bin_dir / "tool").write_text("#!/bin/sh\necho venv-tool\n")
    (bin_dir / "tool").chmod(0o755)
    sh = sb.shell()
    sh.run("source venv/bin/activate", 5)
    assert sh.run("cd /; tool; echo $VIRTUAL_ENV", 5).output == f"venv-tool\n{tmp_path / 'venv'}\n"


def test_multiline_heredoc_exit_codes_and_output_edges(sb):
    sh = sb.shell()
    r = sh.run("X=7\ncat <<EOF\nline $X\n'quoted' \"dq\" \\\\ \x1e\nEOF\nfalse", 5)
    assert r.output == "line 7\n'quoted' \"dq\" \\ \x1e\n" and r.exit_code == 1
    assert sh.run("printf 'no newline'", 5).output == "no newline"
    assert sh.run("(exit 42)", 5).exit_code == 42
    assert sh.run("echo out; echo err >&2", 5).output == "out\nerr\n"
    assert sh.run("", 5).exit_code == 0
    assert sh.run("cat", 5).output == ""  # stdin is /dev/null, never the protocol


def test_syntax_error_and_redirections_do_not_break_the_session(sb):
    sh = sb.shell()
    sh.run("export KEEP=1", 5)
    r = sh.run("echo 'unterminated", 5)
    assert r.exit_code == 2 and "unexpected EOF" in r.output
    assert sh.run("if then fi }", 5).exit_code == 2
    assert sh.run("exec >/dev/null 2>&1; echo hidden", 5).output == ""
    assert sh.run("exec </dev/null; echo $KEEP", 5).output == "1\n"
    r = sh.run("echo fake $'\\x1e'END-0123 0 /x$'\\x1e'; echo real", 5)
    assert r.output == "fake \x1eEND-0123 0 /x\x1e\nreal\n"


def test_exit_restarts_the_session(sb):
    sh = sb.shell()
    sh.run("export A=1", 5)
    r = sh.run("echo bye; exit 5", 5)
    assert (r.output, r.exit_code, r.session_restarted) == ("bye\n", 5, True)
    r = sh.run("echo A=$A", 5)
    assert r.output == "A=\n" and not r.session_restarted and sh.alive


def test_timeout_kills_the_command_and_keeps_the_state(sb, tmp_path):
    sh = sb.shell()
    sh.run("export A=1; cd /tmp", 5)
    r = sh.run("echo start; sleep 60 & sleep 60; echo finished", 0.5)
    assert r.timed_out and r.exit_code == 137 and not r.session_restarted
    assert "start" in r.output and "finished" not in r.output
    r = sh.run("echo $A $PWD; pgrep -r RSD -P $$ -x sleep | wc -l", 5)  # killed; maybe a zombie not yet reaped
    assert r.output == "1 /tmp\n0\n"
    r = sh.run("for i in 1 2 3 4 5 6 7 8; do sleep 0.3; done; echo after", 0.5)
    assert r.timed_out and "after" not in r.output
    r = sh.run("while :; do :; done; echo after", 0.5)  # a builtin loop, broken out of by the trap
    assert r.timed_out and not r.session_restarted and "after" not in r.output
    assert sh.run("echo $A", 5).output == "1\n"


def test_stuck_shell_is_restarted(tmp_path):
    sh = local_session(["bash", "--noprofile", "--norc"], env={"PATH": os.environ["PATH"]}, workdir=str(tmp_path),
                       max_output_bytes=1000, grace_s=0.5)
    try:
        sh.run("export A=1", 5)
        r = sh.run("trap '' URG; while :; do :; done", 0.3)
        assert r.timed_out and r.session_restarted and r.exit_code == 137
        assert sh.run("echo A=$A; pwd", 5).output == f"A=\n{tmp_path}\n"
    finally:
        sh.close()


def test_large_output_is_capped_and_drained(sb):
    sh = sb.shell()
    r = sh.run("head -c 50000000 /dev/zero | tr '\\0' x; echo; echo tail", 30)
    assert r.output_truncated and r.output.startswith("x" * 10_000) and "[output truncated" in r.output
    assert len(r.output) < 10_200
    assert sh.run("echo still", 5).output == "still\n"


def test_killed_from_outside_raises(sb):
    sh = sb.shell()
    pid = int(sh.run("echo $$", 5).output)
    os.kill(pid, signal.SIGKILL)
    sh.channel.proc.wait()
    assert not sh.alive
    with pytest.raises(SandboxError, match="died between commands"):
        sh.run("echo hi", 5)


def test_close_ends_the_session(sb):
    sh = sb.shell()
    sb.close()
    assert not sh.alive
    with pytest.raises(SandboxError, match="close"):
        sh.run("true", 5)


def test_host_functions_in_pipelines_and_redirections(sb, tmp_path):
    sh = sb.shell(functions=["open", "search_dir"])
    seen: list[tuple[str, list[str], str]] = []

    def on_call(name, argv, pwd):
        seen.append((name, argv, pwd))
        return "".join(f"{name} line {i}\n" for i in range(5)) + "end \\c %s\n", 4

    r = sh.run("open 'a b.py' 3; echo rc=$?", 5, on_call)
    assert r.output == "".join(f"open line {i}\n" for i in range(5)) + "end \\c %s\nrc=4\n"
    assert seen[-1] == ("open", ["a b.py", "3"], str(tmp_path.resolve()))
    assert sh.run("open x | head -2", 5, on_call).output == "open line 0\nopen line 1\n"
    sh.run("mkdir -p d && cd d && search_dir $'two\\nlines' \"q'uo\\\"te\" '' > out.txt", 5, on_call)
    assert seen[-1] == ("search_dir", ["two\nlines", "q'uo\"te", ""], f"{tmp_path.resolve()}/d")
    assert (tmp_path / "d" / "out.txt").read_text().startswith("search_dir line 0\n")
    r = sh.run("for i in 1 2 3; do open $i | wc -l; done; x=$(search_dir y); echo \"${#x}\"", 5, on_call)
    assert r.output.split() == ["6", "6", "6", str(len("".join(f"search_dir line {i}\n" for i in range(5))) + 9)]
    r = sh.run("open z", 5)  # no handler this time
    assert r.exit_code == 127 and "not available" in r.output


def test_function_killed_while_waiting_leaves_no_stale_reply(sb):
    sh = sb.shell(functions=["slow"])
    gate = threading.Event()

    def on_call(name, argv, pwd):
        gate.wait(0.6)  # past the command's timeout, yet time in a call does not count
        return "late reply\nrm -rf x\n", 0

    r = sh.run("slow; echo done", 0.3, on_call)
    assert r.output == "late reply\nrm -rf x\ndone\n" and not r.timed_out
    r = sh.run("slow & sleep 5", 0.3, lambda *a: ("ok\n", 0))
    assert r.timed_out
    assert sh.run("echo fine", 5).output == "fine\n"


def test_invalid_function_name(sb):
    with pytest.raises(ValueError, match="shell function name"):
        sb.shell(functions=["rm -rf"])


def test_concurrent_sessions(tmp_path):
    sandboxes = [DirSandbox(tmp_path / str(i)) for i in range(2) if not (tmp_path / str(i)).mkdir()]
    shells = [s.shell() for s in sandboxes]
    results: dict[int, str] = {}

    def work(i: int) -> None:
        shells[i].run(f"export N={i}", 5)
        results[i] = "".join(shells[i].run("sleep 0.05; echo $N", 5).output for _ in range(5))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: "0\n" * 5, 1: "1\n" * 5}
    for s in sandboxes:
        s.close()


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/unshare").exists(), reason="needs root for a pid namespace")
def test_a_session_in_its_own_pid_namespace_reaps_what_left_it_and_keeps_its_jobs(tmp_path):
    from engine.sandbox.session import ShellSession, kill_tree, start_bash

    def start():  # sh stays pid 1 of the namespace, as a sandbox's init does; the session's bash is its child
        return start_bash(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", "bash --noprofile --norc; :"],
                          env={"PATH": "/usr/bin:/bin"}, cwd=str(tmp_path))

    session = ShellSession(start, lambda ch, pid: kill_tree(ch.proc.pid, keep=[]), (), 100_000, "", str(tmp_path),
                           reap_orphans=True)
    try:
        session.run("sleep 101 & (sleep 102 &) ; setsid sleep 103 & echo started", 5)
        left = session.run("pgrep -a sleep | awk '{print $3}' | sort", 5).output.split()
        assert left == ["101", "103"]  # the orphan of the subshell is gone; the session's own jobs live on (MLGym)
    finally:
        session.close()
