"""Shapes what the environment shows the agent after a command: truncation, MLGym's fixed notices (empty output,
timeouts, validate/submit, the blocklist and format-error re-asks) and the step footer rendered from
`prompts/agent/observation.j2` (reads templates, writes nothing). docs/mlgym-compat.md says where each text is
MLGym's.

>>> print(render_footer(step=3, remaining_steps=47, open_file=None, cwd="/home/agent/workspace"))
(Current Step: 3, Remaining Steps: 47)
(Open file: n/a)
(Current directory: /home/agent/workspace)
bash-$
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.prompting import render

EMPTY_OUTPUT = "Your command ran successfully and did not produce any output."
SUBMITTED = "Exited (submit)"
SUBMISSION_NOT_FOUND = ("Submission artefact not found. You have to produce a valid submission artefact as described "
                        "in the task description to validate your results.")
FORMAT_ERROR = (
    "Your output was not formatted correctly. Your commands were not executed.\n"
    "You must always include one discussion and one command as part of your response.\n"
    "Make sure you do not have multiple discussion/command tags.\n\n"
    "Please make sure your output precisely matches the following format:\n"
    "DISCUSSION\n"
    "Discuss here with yourself about what you are planning and what you are going to do in this step.\n\n"
    "```\n"
    "command(s) that you're going to run\n"
    "```\n"
)
"""MLGym's re-ask after a reply without exactly one code block (MLGymThoughtActionParser's error message)."""
BLOCKLIST = ("vim", "vi", "emacs", "nano", "nohup", "git")
"""Programs refused wherever they start a command (MLGym's ToolsConfig.blocklist)."""
BLOCKLIST_STANDALONE = ("python", "python3", "ipython", "bash", "sh", "exit", "/bin/bash", "/bin/sh", "nohup", "vi",
                        "vim", "emacs", "nano", "su")
"""Programs refused when they are the whole command (MLGym's ToolsConfig.blocklist_standalone)."""
TRUNCATION_RESERVE = 120
"""Characters kept free for the truncation marker, so a truncated observation stays within its limit."""


def truncate_observation(text: str, max_chars: int) -> str:
    """`text` if it fits in `max_chars`; else its head and tail around a marker saying what was cut.

    Head and tail get half the budget each and are cut at line boundaries where that keeps at least half of
    their share. The result is never longer than `max_chars`.

    >>> truncate_observation("".join(f"line {i}\\n" for i in range(100)), 250)[:30]
    'line 0\\nline 1\\nline 2\\nline 3\\nli'
    """
    if len(text) <= max_chars:
        return text
    budget = max(0, max_chars - TRUNCATION_RESERVE)
    head_chars = budget // 2
    tail_chars = budget - head_chars
    head = text[:head_chars]
    cut = head.rfind("\n") + 1
    if cut >= head_chars // 2 and cut > 0:
        head = head[:cut]
    tail = text[len(text) - tail_chars :] if tail_chars else ""
    cut = tail.find("\n") + 1
    if 0 < cut and len(tail) - cut >= tail_chars // 2:
        tail = tail[cut:]
    omitted = text[len(head) : len(text) - len(tail)]
    n_lines = omitted.count("\n") + (0 if omitted.endswith("\n") else 1)
    lines = "1 line" if n_lines == 1 else f"{n_lines} lines"
    marker = f"[... observation truncated: {len(omitted)} characters ({lines}) omitted ...]"
    before = "" if head.endswith("\n") or not head else "\n"
    after = "\n" if tail else ""
    return f"{head}{before}{marker}{after}{tail}"


def render_footer(*, step: int, remaining_steps: int, open_file: str | None, cwd: str) -> str:
    """The status lines that end every observation, last of them the prompt line `bash-$`."""
    return render("agent/observation.j2", step=step, remaining_steps=remaining_steps, open_file=open_file,
                  cwd=cwd).rstrip("\n")


def blocked_program(action: str) -> str | None:
    """The program name MLGym's blocklist refuses `action` for, or None to run it: its first word is in
    BLOCKLIST, or the whole command is in BLOCKLIST_STANDALONE.

    >>> blocked_program("vim train.py"), blocked_program("python"), blocked_program("python train.py")
    ('vim', 'python', None)
    """
    words = action.split()
    if not words:
        return None
    if words[0] in BLOCKLIST or action.strip() in BLOCKLIST_STANDALONE:
        return words[0]
    return None


def blocklist_message(name: str) -> str:
    """The re-ask that follows a blocked command (MLGym's blocklist_error_template)."""
    return f"Interactive operation '{name}' is not supported by this environment"


def timeout_notice(timeout_s: float, *, restarted: bool) -> str:
    """Appended to a timed-out command's output: MLGym's line for an interrupted command, or for one whose shell had
    to be restarted (its variables, functions and directory lost).

    >>> timeout_notice(25.0, restarted=False)
    '\\nEXECUTION TIMED OUT BECAUSE THE COMMAND WAS RUNNING FOR MORE THAN 25 SECONDS.'
    """
    if restarted:
        return "\nEXECUTION TIMED OUT AND INTERRUPT FAILED. RESTARTING PROCESS."
    return f"\nEXECUTION TIMED OUT BECAUSE THE COMMAND WAS RUNNING FOR MORE THAN {timeout_s:g} SECONDS."


def validation_observation(artefact: str, baseline: Mapping[str, float] | None, metrics: Mapping[str, object]) -> str:
    """What `validate` shows after a successful evaluation: MLGym's three lines, with Python's dict repr.

    >>> print(validation_observation("/w/submission.csv", {"r2": 0.8}, {"r2": 0.9}))
    Your code produced a valid submission artefact at /w/submission.csv.
    Baseline Score: {'r2': 0.8}
    Evaluation Score: {'r2': 0.9}
    """
    shown = dict(baseline) if baseline else "NA (no baseline was there)"
    return (f"Your code produced a valid submission artefact at {artefact}.\nBaseline Score: {shown}\n"
            f"Evaluation Score: {dict(metrics)}")
