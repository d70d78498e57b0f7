"""The parameter tables: every OpenAI field is mapped, refused, unsupported or advisory."""
import re
from pathlib import Path

import openai
import pytest

from proxy.translate.chat import chat_request_to_gemini
from proxy.translate.embeddings import embeddings_request_to_gemini
from proxy.translate.errors import TranslationError
from proxy.translate.params import (ADVISORY, MAPPED, REFUSED, TABLES, UNSUPPORTED,
                                    markdown_table)
from proxy.translate.responses import responses_request_to_gemini

README = Path(__file__).resolve().parent.parent / "README.md"
SDK = Path(openai.__file__).parent / "types"
TRANSLATE = {"chat": (chat_request_to_gemini, {"model": "gemini-2.5-flash",
                                               "messages": [{"role": "user", "content": "hi"}]}),
             "responses": (responses_request_to_gemini, {"model": "gemini-2.5-flash", "input": "hi"}),
             "embeddings": (embeddings_request_to_gemini, {"model": "gemini-embedding-001",
                                                           "input": "hi"})}


def test_readme_table_is_the_code_table():
    text = README.read_text()
    block = re.search(r"<!-- openai-params:start -->\n(.*?)<!-- openai-params:end -->", text, re.S)
    assert block, "README lost its parameter table markers"
    assert block.group(1) == markdown_table(), (
        "README's OpenAI parameter table is stale; regenerate it with "
        "python -c 'from proxy.translate.params import markdown_table; print(markdown_table(), end=\"\")'")


@pytest.mark.parametrize("route, source", [
    ("chat", "chat/completion_create_params.py"),
    ("responses", "responses/response_create_params.py"),
    ("embeddings", "embedding_create_params.py")])
def test_every_sdk_parameter_has_a_treatment(route, source):
    """The installed openai SDK's request parameters all appear in the table."""
    code = (SDK / source).read_text()
    first = code[code.index("\nclass "):]
    first = first[:first.index("\nclass ", 10)] if "\nclass " in first[10:] else first
    params = set(re.findall(r"^    (\w+):", first, re.M))
    assert params and params <= set(TABLES[route]), params - set(TABLES[route])


@pytest.mark.parametrize("route", list(TABLES))
def test_each_treatment_behaves_as_the_table_says(route):
    translate, base = TRANSLATE[route]
    samples = {"logit_bias": {"1": 5}, "verbosity": "low", "truncation": "auto",
               "background": True, "conversation": "conv_1", "previous_response_id": "resp_1",
               "prompt": {"id": "p"}, "max_tool_calls": 3, "moderation": {"input": True},
               "background_options": {"window": "2h"}, "context_management": [{"type": "x"}],
               "access_programs": {"x": 1}, "image": {"size": "1k"}}
    for key, param in TABLES[route].items():
        if param.treatment in (REFUSED, UNSUPPORTED):
            body = {**base, key: samples[key]}
            with pytest.raises(TranslationError) as err:
                translate(body)
            assert err.value.param == key
            if param.treatment == UNSUPPORTED:
                *_, opts = translate({**body, "drop_params": True})
                assert opts.dropped == [key]
            else:  # refused whatever the client tolerates: it would change what is answered
                with pytest.raises(TranslationError):
                    translate({**body, "drop_params": True})
        elif param.treatment == ADVISORY:
            *_, opts = translate({**base, key: "x"})
            assert opts.dropped == []
        else:
            assert param.treatment == MAPPED


def test_unknown_parameters_are_refused_like_openai_does():
    for route, (translate, base) in TRANSLATE.items():
        with pytest.raises(TranslationError) as err:
            translate({**base, "frobnicate": 1})
        assert err.value.param == "frobnicate" and "unrecognized request argument" in err.value.message
        *_, opts = translate({**base, "frobnicate": 1}, tolerant=True)
        assert opts.dropped == ["frobnicate"], route
