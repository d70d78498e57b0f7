"""The official google-genai SDK against the real gunicorn + gevent server and the fake upstream."""
import pytest
from google import genai
from google.genai import types

from conftest import GOOGLE_KEYS, USER_KEY


@pytest.fixture(params=["v1", "v1beta"])
def sdk(request, shared_live, fake):
    return genai.Client(api_key=USER_KEY, http_options=types.HttpOptions(
        base_url=shared_live.url, api_version=request.param))


def test_generate_content(sdk, fake):
    before = len(fake.requests)
    resp = sdk.models.generate_content(model="gemini-2.5-flash", contents="Hello proxy")
    assert "Hello proxy" in resp.text
    assert resp.usage_metadata.prompt_token_count > 0
    seen = fake.requests[before:]
    assert seen and all(r["key"] in GOOGLE_KEYS for r in seen)


def test_generate_content_stream(sdk):
    chunks = list(sdk.models.generate_content_stream(model="gemini-2.5-flash",
                                                     contents="one two three four five six"))
    assert len(chunks) > 1
    text = "".join(c.text or "" for c in chunks)
    assert "one two three four five six" in text
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP


def test_count_tokens(sdk):
    assert sdk.models.count_tokens(model="gemini-2.5-flash",
                                   contents="count these words").total_tokens > 0


def test_embed_content(sdk):
    resp = sdk.models.embed_content(model="gemini-embedding-001", contents=["alpha", "beta"])
    assert len(resp.embeddings) == 2 and len(resp.embeddings[0].values) > 0


def test_models_list(sdk):
    names = [m.name for m in sdk.models.list()]
    assert "models/gemini-2.5-flash" in names


def test_files_upload_and_use_in_a_later_request(sdk, tmp_path, fake):
    path = tmp_path / "notes.txt"
    path.write_text("The secret word is marmalade.\n" * 50)
    before = len(fake.requests)
    uploaded = sdk.files.upload(file=str(path), config={"mime_type": "text/plain"})
    assert uploaded.name.startswith("files/")
    # every request that touches the file goes with the key that created it
    upload_keys = {r["key"] for r in fake.requests[before:] if "upload" in r["path"]}
    resp = sdk.models.generate_content(model="gemini-2.5-flash",
                                       contents=[uploaded, "What is the secret word?"])
    assert resp.text
    use_key = [r["key"] for r in fake.requests if ":generateContent" in r["path"]][-1]
    assert len(upload_keys) == 1 and use_key in upload_keys
    got = sdk.files.get(name=uploaded.name)
    assert got.name == uploaded.name
