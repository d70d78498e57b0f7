"""Nothing a client sends or Gemini answers is dropped silently on the OpenAI routes.

The official openai SDK against the real gunicorn server (`shared_live`) and the fake
upstream: each field is mapped to its Gemini meaning, refused with a 400 naming it, or
(where OpenAI calls it advisory) accepted and documented.
"""
import openai
import pytest
import requests

from conftest import USER_KEY

FLASH = "gemini-2.5-flash"
G3 = "gemini-3-flash-preview"
H = {"x-goog-api-key": USER_KEY}


@pytest.fixture
def oai(shared_live, fake):
    return openai.OpenAI(api_key=USER_KEY, base_url=shared_live.url + "/v1", max_retries=0)


def generate_calls(fake):
    return [r for r in fake.requests if ":generateContent" in r["path"]
            or ":streamGenerateContent" in r["path"]]


# -- cached content is pinned to the key that created it ----------------------------------

def _cache(shared_live, fake) -> tuple[str, str]:
    r = requests.post(shared_live.url + "/v1beta/cachedContents", headers=H, timeout=10, json={
        "model": f"models/{FLASH}", "ttl": "300s",
        "contents": [{"role": "user", "parts": [{"text": "a long shared context " * 50}]}]})
    assert r.status_code == 200, r.text
    return r.json()["name"], fake.requests[-1]["key"]


def test_cached_content_through_chat_and_responses_goes_to_its_owner(oai, shared_live, fake):
    name, owner = _cache(shared_live, fake)
    google = {"extra_body": {"google": {"cached_content": name}}}
    for _ in range(4):
        chat = oai.chat.completions.create(model=FLASH, extra_body=google,
                                           messages=[{"role": "user", "content": "hi"}])
        assert chat.usage.prompt_tokens_details.cached_tokens > 0
        resp = oai.responses.create(model=FLASH, input="hi", extra_body=google)
        assert resp.usage.input_tokens_details.cached_tokens > 0
    calls = generate_calls(fake)
    assert len(calls) == 8 and {c["key"] for c in calls} == {owner}
    assert all(c["body"]["cachedContent"] == name for c in calls)
