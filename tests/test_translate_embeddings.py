"""Embeddings and model-list translation."""
import array
import base64

import httpx2
import openai
import pytest
from openai.types import CreateEmbeddingResponse, Model

from proxy.translate.embeddings import (EmbedOptions, embeddings_request_to_gemini,
                                        gemini_to_embeddings, split_batches)
from proxy.translate.errors import TranslationError
from proxy.translate.models import gemini_model_to_openai, gemini_models_to_openai, normalise_model


def test_request_single_and_list():
    model, body, opts = embeddings_request_to_gemini({"model": "models/gemini-embedding-001", "input": "hello"})
    assert model == "gemini-embedding-001"
    assert body == {"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello"}]}}]}
    assert opts == EmbedOptions(model="gemini-embedding-001", encoding_format="float", count=1, estimated_tokens=2)
    _, body, opts = embeddings_request_to_gemini({"model": "e", "input": ["a", "b"], "dimensions": 256,
                                                  "encoding_format": "base64", "user": "u"})
    assert [r["outputDimensionality"] for r in body["requests"]] == [256, 256]
    assert opts.count == 2 and opts.encoding_format == "base64"


@pytest.mark.parametrize("value, where", [
    ([1, 2, 3], "input"), ([[1, 2], [3]], "input"), ([], "input"), ("", "input"), (None, "input"),
    (["a", ""], "input[1]"), (["a", None], "input[1]"), ({"text": "a"}, "input"),
])
def test_request_rejects_non_text(value, where):
    with pytest.raises(TranslationError) as e:
        embeddings_request_to_gemini({"model": "e", "input": value})
    assert e.value.message.startswith(where + ":") and e.value.param == "input"
    if isinstance(value, list) and value and not isinstance(value[0], str):
        assert "only text input" in e.value.message


def test_bad_dimensions_and_format():
    for extra in ({"dimensions": 0}, {"dimensions": "x"}, {"encoding_format": "int8"}):
        with pytest.raises(TranslationError):
            embeddings_request_to_gemini({"model": "e", "input": "a", **extra})


def test_split_batches():
    _, body, _ = embeddings_request_to_gemini({"model": "e", "input": [f"t{i}" for i in range(250)]})
    batches = split_batches(body)
    assert [len(b["requests"]) for b in batches] == [100, 100, 50]


def test_answer_float_and_base64():
    resp = {"embeddings": [{"values": [0.5, -1.25, 3.0]}, {"values": [0.0, 1.0, 2.0]}]}
    opts = EmbedOptions(model="e", count=2, estimated_tokens=7)
    out = gemini_to_embeddings(resp, model="e", options=opts)
    CreateEmbeddingResponse.model_validate(out)
    assert out["data"][0] == {"object": "embedding", "index": 0, "embedding": [0.5, -1.25, 3.0]}
    assert out["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    out = gemini_to_embeddings(resp, model="e", options=EmbedOptions(model="e", encoding_format="base64", count=2))
    raw = base64.b64decode(out["data"][1]["embedding"])
    assert array.array("f", raw).tolist() == [0.0, 1.0, 2.0]


def test_answer_errors_are_502():
    for resp in ({}, {"embeddings": [{"values": [1.0]}]}, {"embeddings": [{"values": ["x"]}, {}]}, []):
        with pytest.raises(TranslationError) as e:
            gemini_to_embeddings(resp, model="e", options=EmbedOptions(model="e", encoding_format="base64", count=2))
        assert e.value.status == 502


def test_sdk_decodes_default_base64():
    _, _, opts = embeddings_request_to_gemini({"model": "e", "input": ["a", "b"], "encoding_format": "base64"})
    out = gemini_to_embeddings({"embeddings": [{"values": [0.25, 0.5]}, {"values": [1.5, -2.0]}]},
                               model="e", options=opts)
    client = openai.OpenAI(api_key="sk-test", base_url="http://proxy.test/v1", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(
                               lambda req: httpx2.Response(200, json=out))))
    got = client.embeddings.create(model="e", input=["a", "b"])  # SDK asks for base64 by default
    assert [d.embedding for d in got.data] == [[0.25, 0.5], [1.5, -2.0]]


def test_models_listing():
    models = [{"name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash",
               "supportedGenerationMethods": ["generateContent"]},
              {"name": "models/gemini-embedding-001"}, {"bad": 1}, "junk"]
    out = gemini_models_to_openai(models, aliases={"gpt-4o": "gemini-2.5-flash",
                                                   "gemini-2.5-flash": "gemini-2.5-flash"})
    assert [m["id"] for m in out["data"]] == ["gemini-2.5-flash", "gemini-embedding-001", "gpt-4o"]
    for m in out["data"]:
        Model.model_validate(m)
        assert m["owned_by"] == "google" and m["created"] == 0
    assert gemini_model_to_openai({"name": "models/x"}) == {"id": "x", "object": "model", "created": 0,
                                                             "owned_by": "google"}


def test_normalise_model():
    aliases = {"gpt-4o": "models/gemini-2.5-flash", "default": "gemini-2.5-pro"}
    assert normalise_model("gpt-4o", aliases) == "gemini-2.5-flash"
    assert normalise_model("models/gemini-2.0-flash", aliases) == "gemini-2.0-flash"
    assert normalise_model(None, aliases) == "gemini-2.5-pro"
    assert normalise_model("", aliases) == "gemini-2.5-pro"
    for bad in ("a/b", "x y", "gemini:generate", 5):
        with pytest.raises(TranslationError):
            normalise_model(bad, aliases)
