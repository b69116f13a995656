"""Renders the Jinja2 prompt templates under `prompts/`, or reads MLGym's prose templates from an MLGym checkout
(read-only; writes nothing)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from engine.errors import ConfigError
from prompts import PROMPTS_DIR


class PromptRenderer:
    """A Jinja2 environment over one template folder.

    Undefined variables are errors (StrictUndefined), so a template never silently renders an empty hole,
    and trailing newlines are kept so that a template's last line ends the way its file does.

    >>> PromptRenderer().render("agent/format_error.j2", reason="no code block").startswith("Your last reply")
    True
    """

    def __init__(self, root: Path = PROMPTS_DIR):
        self.root = Path(root)
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.root),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )

    def render(self, template: str, **ctx: Any) -> str:
        """Render `template` (a path relative to the root, e.g. "agent/system.j2") with `ctx`."""
        return self._env.get_template(template).render(**ctx)


@functools.cache
def default_renderer() -> PromptRenderer:
    """The renderer over the templates shipped in the wheel, built once per process."""
    return PromptRenderer(PROMPTS_DIR)


def render(template: str, **ctx: Any) -> str:
    """Render one of the shipped templates; a missing variable raises jinja2.UndefinedError."""
    return default_renderer().render(template, **ctx)


# --- MLGym's own prompt prose, read at run time from an MLGym checkout (never shipped with synthscale) ----------


@dataclass(frozen=True)
class MLGymPrompts:
    """The prose templates of an MLGym agent config (Python `str.format` templates, filled as MLGym fills them)."""

    system_template: str
    task_template: str
    next_step_template: str
    next_step_no_output_template: str
    format_error_template: str | None
    env_variables: dict[str, Any]
    command_docs: str

    def system(self, values: dict[str, Any]) -> str:
        """The system message: `values` (the task's fields, e.g. description and training_timeout) with the
        command docs and the tool variables (WINDOW, …) over them."""
        return self.system_template.format(**{**values, **self.env_variables, "command_docs": self.command_docs})

    def task(self, values: dict[str, Any]) -> str:
        """The first user message: `values` must hold description, current_step, remaining_steps, open_file,
        working_dir."""
        return self.task_template.format(**{**values, **self.env_variables, "command_docs": self.command_docs})


def load_mlgym_prompts(config_path: Path, overrides: dict[str, Any] | None = None) -> MLGymPrompts:
    """Read MLGym's agent config YAML (`<checkout>/configs/agents/default.yaml`) and the command files it names
    (relative to the checkout root, two folders above `configs/agents/`). `overrides` replaces tool variables
    such as WINDOW and OVERLAP, so that the prose states the window this environment really shows.

    Example: a YAML with ``system_template: "W={WINDOW}\\n{command_docs}"`` and a command file documenting `goto`
    gives a system prompt ``W=1000`` followed by ``goto:\\n  docstring: …\\n  signature: goto <line_number>``.
    """
    config_path = Path(config_path)
    try:
        raw = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{config_path}: cannot read MLGym agent config ({e}); set agent.mlgym_config to "
                          "<checkout>/configs/agents/default.yaml or to null") from None
    if not isinstance(raw, dict) or "system_template" not in raw or "task_template" not in raw:
        raise ConfigError(f"{config_path}: not an MLGym agent config (no system_template/task_template)")
    tools = raw.get("tools") or {}
    env_variables = {**(tools.get("env_variables") or {}), **(overrides or {})}
    root = config_path.resolve().parents[2]
    commands: list[dict[str, Any]] = []
    for name in tools.get("command_files") or []:
        path = Path(name) if Path(name).is_absolute() else root / name
        if path.suffix == ".sh":
            try:
                commands += parse_command_docs(path.read_text())
            except OSError as e:
                raise ConfigError(f"{config_path}: command file {path} cannot be read ({e})") from None
    next_step = raw.get("next_step_template") or raw["task_template"]
    return MLGymPrompts(
        system_template=raw["system_template"], task_template=raw["task_template"], next_step_template=next_step,
        next_step_no_output_template=raw.get("next_step_no_output_template") or next_step,
        format_error_template=raw.get("format_error_template"), env_variables=env_variables,
        command_docs=render_command_docs(commands, env_variables),
    )


def parse_command_docs(text: str) -> list[dict[str, Any]]:
    """The documented commands of an MLGym command file: each `# @yaml` comment block (YAML behind `# `) with the
    name of the shell function that follows it.

    >>> parse_command_docs("# @yaml\\n# signature: goto <n>\\n# docstring: moves\\ngoto() {\\n}\\n")
    [{'signature': 'goto <n>', 'docstring': 'moves', 'name': 'goto'}]
    """
    out: list[dict[str, Any]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "# @yaml":
            i += 1
            continue
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].startswith("#"):
            body.append(lines[i][2:] if lines[i].startswith("# ") else lines[i][1:])
            i += 1
        m = re.match(r"\s*(?:function\s+)?([A-Za-z_][\w-]*)\s*\(\)", lines[i]) if i < len(lines) else None
        if m is not None:
            doc = yaml.safe_load("\n".join(body)) or {}
            out.append({**doc, "name": m.group(1)})
    return out


def render_command_docs(commands: list[dict[str, Any]], variables: dict[str, Any]) -> str:
    """The command documentation block MLGym's detailed command parser writes into `{command_docs}`."""
    docs = ""
    for cmd in commands:
        docs += f"{cmd['name']}:\n"
        if cmd.get("docstring") is not None:
            docs += f"  docstring: {str(cmd['docstring']).format(**variables)}\n"
        docs += f"  signature: {cmd.get('signature') or _signature(cmd)}\n"
        if cmd.get("arguments"):
            docs += "  arguments:\n"
            for param, settings in cmd["arguments"].items():
                need = "required" if settings.get("required") else "optional"
                docs += f"    - {param} ({settings.get('type')}) [{need}]: {settings.get('description')}\n"
        docs += "\n"
    return docs


def _signature(cmd: dict[str, Any]) -> str:
    params = [f" <{p}>" if s.get("required") else f" [<{p}>]" for p, s in (cmd.get("arguments") or {}).items()]
    return cmd["name"] + "".join(params)
