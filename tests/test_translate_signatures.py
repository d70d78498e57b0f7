"""Thought signatures carried inside tool call ids."""
import base64
import json
import re

from hypothesis import given, settings, strategies as st
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from proxy.translate.signatures import (SKIP_SIGNATURE, add_signature_bypass, decode_call_id,
                                        encode_call_id, requires_signatures, signature_of)

SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")


def test_plain_id_has_no_signature():
    call_id = encode_call_id(None)
    assert re.fullmatch(r"call_[0-9a-f]{24}", call_id)
    assert decode_call_id(call_id) is None
    assert encode_call_id(None) != call_id


def test_base64_signature_costs_no_size():
    sig = base64.b64encode(bytes(range(256)) * 4).decode()
    call_id = encode_call_id(sig)
    assert SAFE_ID.fullmatch(call_id)
    assert len(call_id) <= len(sig) + len("call_") + 24 + len("__ts_b")
    assert decode_call_id(call_id) == sig


def test_foreign_ids_decode_to_nothing():
    for foreign in ("call_abc123", "toolu_01ABC", "fc_1", "", None, 5, "x__ts_", "x__ts_q123",
                    "x__ts_b!!!", "x__ts_uA", "call_x__ts_bA", "x__ts_u_-8"):
        assert decode_call_id(foreign) is None


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(min_size=1, max_size=300).map(lambda b: base64.b64encode(b).decode()),
                 st.text(min_size=1, max_size=100)))
def test_round_trip_through_json_and_sdk(sig):
    call_id = encode_call_id(sig)
    assert SAFE_ID.fullmatch(call_id)
    wire = json.loads(json.dumps({"id": call_id, "type": "function",
                                  "function": {"name": "f", "arguments": "{}"}}))
    model = ChatCompletionMessageFunctionToolCall.model_validate(wire)
    assert decode_call_id(model.id) == sig
    assert decode_call_id(json.loads(model.model_dump_json())["id"]) == sig


def test_signature_of_prefers_extra_content():
    call = {"id": encode_call_id("QUJD"), "extra_content": {"google": {"thought_signature": "WFla"}}}
    assert signature_of(call, call["id"]) == "WFla"
    assert signature_of({"extra_content": "junk"}, call["id"]) == "QUJD"


def test_bypass():
    assert requires_signatures("gemini-3-pro-preview") and requires_signatures("gemini-3.1-pro")
    assert not requires_signatures("gemini-2.5-pro") and not requires_signatures("gemma-3-27b-it")
    contents = [{"role": "model", "parts": [{"text": "x"}, {"functionCall": {"name": "a", "args": {}}},
                                            {"functionCall": {"name": "b", "args": {}}}]},
                {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}}, "thoughtSignature": "S"}]},
                {"role": "user", "parts": [{"functionCall": {"name": "a", "args": {}}}]}]
    add_signature_bypass(contents, "gemini-3-flash-preview")
    assert contents[0]["parts"][1]["thoughtSignature"] == SKIP_SIGNATURE
    assert "thoughtSignature" not in contents[0]["parts"][2]
    assert contents[1]["parts"][0]["thoughtSignature"] == "S"
    assert "thoughtSignature" not in contents[2]["parts"][0]
