"""Errors that say what to do, as a developer with the official SDK reads them: which models the
key may use, what a gateway key looks like and who issues it.

Real parts: the session's gateway over Redis and the simulator, the ``openai`` package.
"""

from __future__ import annotations

import openai
import pytest

from gateway.money.pricing import DEFAULT_PRICES_USD
from tests.support import MODEL, Gateway, openai_sdk


def test_an_unknown_model_names_the_models_this_key_may_use(gateway: Gateway) -> None:
    key, _ = gateway.create_key(team="guidance", models=[MODEL])
    everything, _ = gateway.create_key(team="guidance")
    with pytest.raises(openai.NotFoundError) as caught:
        openai_sdk(gateway.url, key, max_retries=0).images.generate(model="dall-e-3", prompt="x")
    assert caught.value.body["message"] == (
        f"The model 'dall-e-3' does not exist or is not served by this gateway. This key may use: '{MODEL}'."
    )
    with pytest.raises(openai.NotFoundError) as caught:
        openai_sdk(gateway.url, everything, max_retries=0).models.retrieve("dall-e-3")
    assert all(f"'{model}'" in caught.value.body["message"] for model in DEFAULT_PRICES_USD)


@pytest.mark.parametrize(
    ("presented", "first_words"),
    [
        ("sk-proj-" + "a" * 48, "This is not a key of this gateway"),
        ("sk-gw-aaaaaaaaaaaa_" + "b" * 43, "Invalid API key: no active key of this gateway matches it."),
    ],
    ids=["a provider's key", "a gateway-shaped key never issued"],
)
def test_a_wrong_key_says_what_a_gateway_key_looks_like_and_who_issues_it(
    gateway: Gateway, presented: str, first_words: str
) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        openai_sdk(gateway.url, presented, max_retries=0).images.generate(model=MODEL, prompt="x")
    message = caught.value.body["message"]
    assert message.startswith(first_words)
    assert "A gateway key looks like sk-gw-<12 letters and digits>_<secret>" in message
    assert "your gateway's admin issues them" in message
    assert presented not in message
