"""Renders the Jinja2 prompt templates under `prompts/` (read-only; writes nothing)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2

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
