"""Benchmark: the engine's own time per agent step (model and command time excluded), sandbox reset vs start,
and the cost of one grading.

Per runtime: the engine's time per step; the median exec (back to back, and after the machine idled as it does
while the agent waits for its model), read_file and write_file; a fresh start (plus its
first command) against a reset of a used sandbox (plus its first command), and their ratio; the time
`TaskGrader.grade` takes for a tiny task whose grader needs only the standard library (so the figure is the
sandbox's overhead, not pandas' import), the first grading (which starts the grader sandbox) apart from the
warm ones. Writes benchmarks/results/agent_step.json (per runtime, plus `reset_over_start` by runtime) and
prints one summary line. Goals: < 5 ms engine time per step on top of the runtime's exec cost; reset() of a
reused sandbox at most half the time of a fresh start.
Also, per runtime, the time per command of one command list run as plain `bash -c` subprocesses on the host, through
the sandbox's persistent shell (`sandbox.shell().run`) and through `sandbox.exec`, and the ratios to the plain
subprocess (goal: shell <= 1.5x plain).
Run: `.venv/bin/python benchmarks/agent_step.py [--runtimes local,docker] [--steps 64] [--repeats 5] [--gradings 10]
[--shell-only --out benchmarks/results/agent_step_shell.json]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.agent.environment import AgentEnvironment  # noqa: E402
from engine.agent.history import build_prompt  # noqa: E402
from engine.agent.parser import parse_response  # noqa: E402
from engine.config import AgentConfig, SandboxConfig  # noqa: E402
from engine.protocols import SandboxSpec  # noqa: E402
from engine.sandbox import make_runtime  # noqa: E402
from engine.tasks.folder import load_task  # noqa: E402
from engine.tasks.grading import TaskGrader  # noqa: E402

TASK = ROOT / "examples" / "tasks" / "wine-classification"
IDLE_S = 0.2
STDLIB_GRADER = '''import argparse, csv, json
from pathlib import Path
here = Path(__file__).resolve().parent
p = argparse.ArgumentParser()
p.add_argument("--submission_file", required=True)
sub = {r["id"]: r["label"] for r in csv.DictReader(open(p.parse_args().submission_file))}
out = {}
for split in ("validation", "test"):
    rows = list(csv.DictReader(open(here / f"labels_{split}.csv")))
    out[split] = {"accuracy": sum(sub.get(r["id"]) == r["label"] for r in rows) / len(rows)}
print(json.dumps(out))
'''


class TimedShell:
    """A shell session whose commands count as time inside the sandbox (the special commands' Python included,
    as a plain subprocess's time would be)."""

    def __init__(self, owner: TimedSandbox, inner):
        self.owner, self.inner = owner, inner

    def run(self, *a, **kw):
        return self.owner._timed(self.inner.run, *a, **kw)

    @property
    def alive(self):
        return self.inner.alive

    def close(self):
        return self.inner.close()


class TimedSandbox:
    """Wraps a sandbox and adds up the time spent inside it, so the engine's own time is the rest."""

    def __init__(self, inner):
        self.inner = inner
        self.workdir = inner.workdir
        self.inside_s = 0.0
        self._depth = 0  # a shell command's host-side calls read files inside it: count that time once

    def _timed(self, fn, *a, **kw):
        t0 = time.perf_counter()
        self._depth += 1
        try:
            return fn(*a, **kw)
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.inside_s += time.perf_counter() - t0

    def shell(self, *a, **kw):
        return TimedShell(self, self.inner.shell(*a, **kw))

    def exec(self, *a, **kw):
        return self._timed(self.inner.exec, *a, **kw)

    def read_file(self, *a, **kw):
        return self._timed(self.inner.read_file, *a, **kw)

    def write_file(self, *a, **kw):
        return self._timed(self.inner.write_file, *a, **kw)

    def copy_out(self, *a, **kw):
        return self._timed(self.inner.copy_out, *a, **kw)

    def reset(self):
        return self._timed(self.inner.reset)

    def close(self):
        return self.inner.close()


class NoScorer:
    def score(self, kind, step):
        return "not scored in this benchmark"


def _responses() -> list[str]:
    cmds = ['open "baseline.py"', "goto 5", "scroll_down", "ls -la", 'search_file "import" baseline.py',
            "edit 1:1\nimport numpy as np\nend_of_edit", 'find_file "*.csv"', "echo hello"]
    return [f"DISCUSSION\nstep\n\n```\n{c}\n```\n" for c in cmds]


def bench_steps(runtime_name: str, steps: int) -> dict:
    task = load_task(TASK)
    cfg = AgentConfig()
    runtime = make_runtime(SandboxConfig(runtime=runtime_name), run_id="bench")
    spec = SandboxSpec(workspace=task.workspace_dir, labels={"run_id": "bench", "task_id": task.id})
    responses = _responses()
    per_step_ms: list[float] = []
    exec_ms: list[float] = []
    with runtime.start(spec) as raw:
        sandbox = TimedSandbox(raw)
        env = AgentEnvironment(sandbox, cfg, training_timeout_s=60, read_only_paths=[], scorer=NoScorer())
        messages = [{"role": "system", "content": "s" * 4000}, {"role": "user", "content": "t" * 4000}]
        for step in range(steps):
            text = responses[step % len(responses)]
            sandbox.inside_s = 0.0
            t0 = time.perf_counter()
            prompt = build_prompt(messages, cfg.keep_last_observations)
            parsed = parse_response(text)
            result = env.execute(parsed.action, step)
            obs = result.observation + "\n" + env.footer(step + 1, cfg.max_steps - step - 1)
            messages += [{"role": "assistant", "content": text}, {"role": "user", "content": obs}]
            total = time.perf_counter() - t0
            assert prompt
            per_step_ms.append((total - sandbox.inside_s) * 1000)
            exec_ms.append(sandbox.inside_s * 1000)
    return {"engine_ms_per_step_median": statistics.median(per_step_ms),
            "engine_ms_per_step_p90": sorted(per_step_ms)[int(0.9 * len(per_step_ms))],
            "runtime_ms_per_step_median": statistics.median(exec_ms), "steps": steps}


def bench_reset(runtime_name: str, repeats: int) -> dict:
    task = load_task(TASK)
    runtime = make_runtime(SandboxConfig(runtime=runtime_name), run_id="bench")
    spec = SandboxSpec(workspace=task.workspace_dir, labels={"run_id": "bench", "task_id": task.id})
    starts, resets = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sb = runtime.start(spec)
        sb.exec("true", timeout_s=25)
        starts.append(time.perf_counter() - t0)
        try:
            for _ in range(3):
                sb.exec("echo x > scratch.txt && python -c 'print(1)'", timeout_s=25)
                t0 = time.perf_counter()
                sb.reset()
                sb.exec("true", timeout_s=25)
                resets.append(time.perf_counter() - t0)
        finally:
            sb.close()
    start_ms, reset_ms = statistics.median(starts) * 1000, statistics.median(resets) * 1000
    return {"fresh_start_ms_median": start_ms, "reset_ms_median": reset_ms, "reset_over_start": reset_ms / start_ms}


def _median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _after_idle_ms(fn, n: int) -> float:
    """Median time of `fn` run after the machine idled IDLE_S, as a command runs after the agent's model call
    (back to back, caches and CPUs are warm and some costs hide)."""
    times = []
    for _ in range(n):
        time.sleep(IDLE_S)
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def bench_ops(runtime_name: str, repeats: int) -> dict:
    """Median time of the per-command primitives on a started sandbox."""
    task = load_task(TASK)
    runtime = make_runtime(SandboxConfig(runtime=runtime_name), run_id="bench")
    spec = SandboxSpec(workspace=task.workspace_dir, labels={"run_id": "bench", "task_id": task.id})
    n = 4 * repeats
    with runtime.start(spec) as sb, tempfile.TemporaryDirectory(prefix="synthscale-bench-") as tmp:
        return {"exec_true_ms_median": _median_ms(lambda: sb.exec("true", timeout_s=25), n),
                "exec_after_idle_ms_median": _after_idle_ms(lambda: sb.exec("true", timeout_s=25), 2 * repeats),
                "read_file_ms_median": _median_ms(lambda: sb.read_file("baseline.py"), n),
                "write_file_ms_median": _median_ms(lambda: sb.write_file("out/x.txt", b"x" * 4096), n),
                "copy_out_ms_median": _median_ms(lambda: sb.copy_out("baseline.py", Path(tmp) / "b.py"), n)}


SHELL_COMMANDS = ["ls", "cat baseline.py | head -20", "grep -n def baseline.py || true", "cd data && ls; cd ..",
                  "export X=1; echo $X $HOME", "wc -l baseline.py", "true", "echo done"]


def _per_step_ms(run_one, repeats: int) -> float:
    """Median over `repeats` passes of the time per command of SHELL_COMMANDS run one after another."""
    for command in SHELL_COMMANDS:  # warm up
        run_one(command)
    passes = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for command in SHELL_COMMANDS:
            run_one(command)
        passes.append((time.perf_counter() - t0) / len(SHELL_COMMANDS))
    return statistics.median(passes) * 1000


def bench_shell(runtime_name: str, repeats: int) -> dict:
    """The same command list per step: a plain `bash -c` subprocess on the host (in a copy of the workspace), the
    sandbox's persistent shell (`sandbox.shell().run`), and the old path (`sandbox.exec`, a process per command)."""
    task = load_task(TASK)
    runtime = make_runtime(SandboxConfig(runtime=runtime_name), run_id="bench")
    spec = SandboxSpec(workspace=task.workspace_dir, labels={"run_id": "bench", "task_id": task.id})
    n = 4 * repeats
    with runtime.start(spec) as sb, tempfile.TemporaryDirectory(prefix="synthscale-bench-") as tmp:
        host_ws = Path(tmp) / "ws"
        shutil.copytree(task.workspace_dir, host_ws)
        plain_ms = _per_step_ms(lambda c: subprocess.run(["bash", "-c", c], cwd=host_ws, capture_output=True,
                                                         timeout=25), n)
        exec_ms = _per_step_ms(lambda c: sb.exec(c, timeout_s=25), n)
        shell = sb.shell(functions=["open"])
        shell_ms = _per_step_ms(lambda c: shell.run(c, timeout_s=25), n)
        shell.close()
    return {"plain_subprocess_ms_per_step": plain_ms, "shell_ms_per_step": shell_ms, "exec_ms_per_step": exec_ms,
            "shell_over_plain": shell_ms / plain_ms, "exec_over_plain": exec_ms / plain_ms}


def tiny_task(dest: Path) -> Path:
    """The wine task with its answer in the workspace and a standard-library grader (no pandas import)."""
    root = dest / "tiny-wine"
    shutil.copytree(TASK, root)
    labels = [TASK / "grader" / f"labels_{split}.csv" for split in ("validation", "test")]
    rows = [r for path in labels for r in csv.DictReader(path.open())]
    answer = "id,label\n" + "".join(f"{r['id']},{r['label']}\n" for r in rows)
    (root / "workspace" / "submission.csv").write_text(answer)
    (root / "grader" / "evaluate.py").write_text(STDLIB_GRADER)
    return root


def bench_grading(runtime_name: str, gradings: int) -> dict:
    """`TaskGrader.grade` of a correct submission: the first (grader sandbox started) and the warm ones."""
    runtime = make_runtime(SandboxConfig(runtime=runtime_name), run_id="bench")
    with tempfile.TemporaryDirectory(prefix="synthscale-bench-") as tmp:
        task = load_task(tiny_task(Path(tmp)))
        spec = SandboxSpec(workspace=task.workspace_dir, labels={"run_id": "bench", "task_id": task.id})
        times = []
        with runtime.start(spec) as sb, TaskGrader(task, runtime, timeout_s=60, labels={"run_id": "bench"}) as grader:
            for _ in range(gradings + 1):
                t0 = time.perf_counter()
                grade = grader.grade(sb)
                times.append(time.perf_counter() - t0)
                if grade.error is not None or grade.test != {"accuracy": 1.0}:
                    raise RuntimeError(f"the benchmark's grading failed: {grade}")
    return {"first_grading_ms": times[0] * 1000, "grading_ms_median": statistics.median(times[1:]) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runtimes", default="local,docker")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gradings", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "agent_step.json"))
    ap.add_argument("--shell-only", action="store_true",
                    help="Only the shell comparison (plain subprocess, shell session, exec), with its own summary.")
    args = ap.parse_args()
    results: dict = {}
    for name in args.runtimes.split(","):
        results[name] = bench_shell(name, args.repeats)
        if not args.shell_only:
            results[name].update({**bench_steps(name, args.steps), **bench_ops(name, args.repeats),
                                  **bench_reset(name, args.repeats), **bench_grading(name, args.gradings)})
    shell = "; ".join(
        f"{k}: plain {v['plain_subprocess_ms_per_step']:.2f} ms/step, shell {v['shell_ms_per_step']:.2f} "
        f"({v['shell_over_plain']:.2f}x), exec {v['exec_ms_per_step']:.2f} ({v['exec_over_plain']:.2f}x)"
        for k, v in results.items())
    if args.shell_only:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(f"agent_step shell (goal: shell <= 1.5x plain): {shell}")
        return
    results["reset_over_start"] = {k: v["reset_over_start"] for k, v in results.items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    summary = "; ".join(
        f"{k}: engine {v['engine_ms_per_step_median']:.2f} ms/step (p90 {v['engine_ms_per_step_p90']:.2f}), "
        f"exec {v['exec_true_ms_median']:.1f} ms (after idle {v['exec_after_idle_ms_median']:.1f}, read "
        f"{v['read_file_ms_median']:.1f}, write "
        f"{v['write_file_ms_median']:.1f}), reset {v['reset_ms_median']:.0f} ms vs start "
        f"{v['fresh_start_ms_median']:.0f} ms, grading {v['grading_ms_median']:.0f} ms (first "
        f"{v['first_grading_ms']:.0f} ms)" for k, v in results.items() if k != "reset_over_start")
    ratios = ", ".join(f"{k} {v:.2f}x" for k, v in results["reset_over_start"].items())
    print(f"agent_step: {summary}; reset/start: {ratios}; shell (goal <= 1.5x plain): {shell}")


if __name__ == "__main__":
    main()
