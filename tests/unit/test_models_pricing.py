"""Pricing: exact matches, dated snapshots by longest prefix, cached input, unknown models."""

import pytest

from engine.config import DEFAULT_PRICES, Price
from engine.errors import PricingError
from engine.models.pricing import check_priced, cost_usd, find_price
from engine.protocols import Usage

PRICES = {
    "gpt-5": Price(input_per_mtok=1.25, output_per_mtok=10.0, cached_input_per_mtok=0.125),
    "gpt-5-mini": Price(input_per_mtok=0.25, output_per_mtok=2.0, cached_input_per_mtok=0.025),
    "local": Price(input_per_mtok=2.0, output_per_mtok=4.0),
}


def test_exact_match_cost():
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=500_000, reasoning_tokens=100_000)
    # reasoning tokens are inside completion_tokens: billed once, at the output price
    assert cost_usd("gpt-5", usage, PRICES) == pytest.approx(1.25 + 5.0, abs=1e-12)


def test_cached_prompt_tokens_use_the_cached_price():
    usage = Usage(prompt_tokens=1000, completion_tokens=200)
    got = cost_usd("gpt-5", usage, PRICES, cached_prompt_tokens=400)
    assert got == pytest.approx((600 * 1.25 + 400 * 0.125 + 200 * 10.0) / 1e6, abs=1e-15)


def test_cached_tokens_without_a_cached_price_cost_the_input_price():
    usage = Usage(prompt_tokens=1000, completion_tokens=0)
    assert cost_usd("local", usage, PRICES, cached_prompt_tokens=1000) == pytest.approx(2000 / 1e6, abs=1e-15)


def test_cached_tokens_are_clamped_to_the_prompt():
    usage = Usage(prompt_tokens=100, completion_tokens=0)
    assert cost_usd("gpt-5", usage, PRICES, cached_prompt_tokens=10_000) == pytest.approx(100 * 0.125 / 1e6, abs=1e-15)


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("gpt-5", "gpt-5"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),  # longest prefix wins
        ("gpt-5-mini", "gpt-5-mini"),
        ("local-0613", "local"),
    ],
)
def test_find_price_exact_then_dated_snapshot(model, key):
    assert find_price(model, PRICES) is PRICES[key]


@pytest.mark.parametrize("model", ["gpt-5-pro", "gpt-50", "gpt-5.1", "gpt-5-2025-08", "Qwen/Qwen3-8B", "gpt"])
def test_find_price_refuses_other_models_sharing_a_prefix(model):
    assert find_price(model, PRICES) is None


def test_unknown_model_error_names_model_and_fix():
    with pytest.raises(PricingError) as e:
        cost_usd("Qwen/Qwen3-8B", Usage(prompt_tokens=1), PRICES)
    msg = str(e.value)
    assert "'Qwen/Qwen3-8B'" in msg
    assert "model.prices['Qwen/Qwen3-8B']" in msg
    assert "unknown_price: zero" in msg


def test_unknown_model_zero():
    assert cost_usd("Qwen/Qwen3-8B", Usage(prompt_tokens=10, completion_tokens=10), PRICES, "zero") == 0.0


def test_check_priced():
    check_priced("gpt-5-2025-08-07", PRICES, "error")
    check_priced("nope", PRICES, "zero")
    with pytest.raises(PricingError, match="'nope'"):
        check_priced("nope", PRICES, "error")


def test_default_table_prices_gpt5_snapshot():
    usage = Usage(prompt_tokens=2_000_000, completion_tokens=1_000_000)
    assert cost_usd("gpt-5-2025-08-07", usage, DEFAULT_PRICES) == pytest.approx(2.5 + 10.0, abs=1e-12)
