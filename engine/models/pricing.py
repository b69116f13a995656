"""Prices model calls: reads a price table (model name -> USD per million tokens), writes nothing."""

from __future__ import annotations

import re
from typing import Literal

from engine.config import Price
from engine.errors import PricingError
from engine.protocols import Usage

_SNAPSHOT_SUFFIX = re.compile(r"^-(\d{4}-\d{2}-\d{2}|\d{4})$")
"""What may follow a price-table key in a dated snapshot name: gpt-5-2025-08-07, gpt-4-0613."""


def find_price(model: str, prices: dict[str, Price]) -> Price | None:
    """The price of `model`: an exact entry, else the longest entry that the name extends by a date.

    >>> p = {"gpt-5": Price(input_per_mtok=1.25, output_per_mtok=10.0)}
    >>> find_price("gpt-5-2025-08-07", p) is p["gpt-5"], find_price("gpt-5-pro", p)
    (True, None)

    Only a date suffix is accepted, so that a different model sharing a prefix (gpt-5-pro) is never
    priced as its cheaper namesake.
    """
    if model in prices:
        return prices[model]
    candidates = [k for k in prices if model.startswith(k) and _SNAPSHOT_SUFFIX.match(model[len(k):])]
    if not candidates:
        return None
    return prices[max(candidates, key=len)]


def check_priced(model: str, prices: dict[str, Price], unknown: Literal["error", "zero"]) -> None:
    """Fail early (before any call is paid for) when `model` has no price and unknown prices are errors."""
    if unknown == "error" and find_price(model, prices) is None:
        raise PricingError(_unknown_message(model, prices))


def cost_usd(
    model: str,
    usage: Usage,
    prices: dict[str, Price],
    unknown: Literal["error", "zero"] = "error",
    *,
    cached_prompt_tokens: int = 0,
) -> float:
    """USD cost of one call. Reasoning tokens are part of completion_tokens (OpenAI's accounting), so they
    are billed at the output price once. Cached prompt tokens use the cached-input price where one is set.

    >>> p = {"gpt-5": Price(input_per_mtok=1.25, output_per_mtok=10.0, cached_input_per_mtok=0.125)}
    >>> round(cost_usd("gpt-5", Usage(prompt_tokens=1_000_000, completion_tokens=100_000), p), 6)
    2.25
    """
    if unknown not in ("error", "zero"):
        raise PricingError(f"unknown={unknown!r}: expected 'error' or 'zero'")
    price = find_price(model, prices)
    if price is None:
        if unknown == "zero":
            return 0.0
        raise PricingError(_unknown_message(model, prices))
    cached = max(0, min(cached_prompt_tokens, usage.prompt_tokens))
    cached_price = price.input_per_mtok if price.cached_input_per_mtok is None else price.cached_input_per_mtok
    total = (
        (usage.prompt_tokens - cached) * price.input_per_mtok
        + cached * cached_price
        + usage.completion_tokens * price.output_per_mtok
    )
    return total / 1_000_000


def _unknown_message(model: str, prices: dict[str, Price]) -> str:
    known = ", ".join(sorted(prices)) or "(none)"
    return (
        f"model {model!r} has no price in model.prices (known: {known}); add "
        f"model.prices[{model!r}] = {{input_per_mtok: ..., output_per_mtok: ...}} to the config, "
        f"or set model.unknown_price: zero for a self-hosted model"
    )
