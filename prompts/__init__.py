"""Jinja2 templates for every model prompt; `PROMPTS_DIR` locates them inside the installed wheel."""

from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent
