"""The prompt renderer (strict about missing variables) and the agent templates rendered with real values."""

from pathlib import Path

import jinja2
import pytest

from engine.prompting import PromptRenderer, default_renderer, render
from engine.tasks.spec import TaskConfig


def test_renderer_is_strict_and_keeps_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("Hello {{ name }}!\n")
    r = PromptRenderer(tmp_path)
    assert r.render("t.j2", name="agent") == "Hello agent!\n"
    with pytest.raises(jinja2.UndefinedError):
        r.render("t.j2")


def test_default_renderer_is_built_once() -> None:
    assert default_renderer() is default_renderer()


def test_system_prompt_states_format_commands_and_limits() -> None:
    text = render("agent/system.j2", max_steps=50, command_timeout_s=25.0, training_timeout_s=1800.0,
                  window_lines=100, scroll_lines=98)
    assert "Exactly ONE fenced code block that holds exactly ONE command." in text
    for signature in ('open "<path>" [<line_number>]', "goto <line_number>", "scroll_up", "scroll_down",
                      "create <filename>", "edit <start_line>:<end_line>\n<replacement lines>\nend_of_edit",
                      "insert <line_number>\n<lines>\nend_of_insert", "search_file <term> [<file>]",
                      "search_dir <term> [<dir>]", "find_file <name> [<dir>]", "validate", "submit"):
        assert f"\n{signature}\n" in text, signature
    assert "is interrupted after 25 seconds" in text
    assert "may run for up to 1800 seconds" in text
    assert "You have 50 steps in total" in text
    assert "down by 98 lines" in text
    assert "after 3 such replies in a row" in text


def _task(**kw: object) -> TaskConfig:
    return TaskConfig(id="t1", name="Iris", description="Classify irises.", metric="accuracy", **kw)


def test_task_prompt_with_baseline_and_artefact() -> None:
    text = render("agent/task.j2", task=_task(baseline_paths=["baseline.py"]), description="Classify irises.\n",
                  baseline={"accuracy": 0.81, "f1": 0.8}, artefact="submission.csv", extras=True,
                  baseline_code=["baseline.py"])
    assert text.startswith("TASK\nClassify irises.\n\nWHAT YOU HAND IN\nYour submission is the file `submission.csv`")
    assert "The primary metric is `accuracy`; higher is better." in text
    assert "The baseline solution scores accuracy = 0.81, f1 = 0.8.\n" in text
    assert "The baseline code: baseline.py.\n" in text
    assert "WORKSPACE" not in text


def test_task_prompt_without_baseline_with_listing() -> None:
    text = render("agent/task.j2", task=_task(direction="min", task_entrypoint="ModelSubmissionTasks"),
                  description="Fly.", baseline={}, artefact=None, workspace_listing="a.py\ndata/",
                  workdir="/home/agent/workspace", extras=True, baseline_code=[])
    assert "the first `*.yaml` file in the workspace" in text
    assert "lower is better" in text
    assert "This task publishes no baseline score" in text
    assert "\nWORKSPACE (/home/agent/workspace)\na.py\ndata/\n" in text


def test_format_error_names_the_reason() -> None:
    text = render("agent/format_error.j2", reason="it holds 2 fenced code blocks.")
    assert text.startswith("Your last reply was not run: it holds 2 fenced code blocks.\n")
    assert "```\nopen \"baseline.py\"\n```" in text
