"""Semantic checks Google runs after a body parsed: the `* GenerateContentRequest.x: …` errors."""
from __future__ import annotations

import re
from typing import Any

from proxy.fake import catalog
from proxy.fake import google_errors as errors

Problems = list[tuple[str, str]]

DATA_FIELDS = ("text", "inlineData", "fileData", "functionCall", "functionResponse",
               "executableCode", "codeExecutionResult", "toolCall", "toolResponse")
# Tools Google runs itself; mixing them with function declarations is a per-model matter.
BUILT_IN_TOOLS = ("googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext")
MIXED_TOOLS_UNSUPPORTED = "Tool use with function calling is unsupported"
MIXED_TOOLS_NEED_FLAG = ("Please enable tool_config.include_server_side_tool_invocations to use "
                         "Built-in tools with Function calling.")
# Gemini's prebuilt voices (speechConfig.voiceConfig.prebuiltVoiceConfig.voiceName).
VOICES = frozenset({"Zephyr", "Puck", "Charon", "Kore", "Fenrir", "Leda", "Orus", "Aoede",
                    "Callirrhoe", "Autonoe", "Enceladus", "Iapetus", "Umbriel", "Algieba",
                    "Despina", "Erinome", "Algenib", "Rasalgethi", "Laomedeia", "Achernar",
                    "Alnilam", "Schedar", "Gacrux", "Pulcherrima", "Achird", "Zubenelgenubi",
                    "Vindemiatrix", "Sadachbia", "Sadaltager", "Sulafat"})
MIME_TYPES = ("text/plain", "application/json", "application/xml", "application/yaml",
              "text/x.enum")
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")
SIGNATURE_MESSAGE = ("Function call is missing a thought_signature in functionCall parts. This is "
                     "required for tools to work correctly, and missing thought_signature may lead "
                     "to degraded model performance. Additional data, function call "
                     "`default_api:{name}` , position {position}. Please refer to "
                     "https://ai.google.dev/gemini-api/docs/thought-signatures for more details.")


def check_contents(contents: list[dict[str, Any]], path: str, problems: Problems) -> errors.Error | None:
    """Check roles, non-empty parts and the one-data-field rule of each part."""
    for i, content in enumerate(contents):
        if content.get("role", "") not in ("", "user", "model"):
            return errors.bad_request("Please use a valid role: user, model.")
        check_parts(content.get("parts", []), f"{path}[{i}].parts", problems)
    return None


def check_parts(parts: list[dict[str, Any]], path: str, problems: Problems) -> None:
    """Check that parts exist and each carries exactly one kind of data."""
    if not parts:
        problems.append((path, "contents.parts must not be empty."))
    for j, part in enumerate(parts):
        present = [name for name in DATA_FIELDS if name in part]
        if not present:
            problems.append((f"{path}[{j}].data",
                             "required oneof field 'data' must have one initialized field"))
        elif len(present) > 1:
            problems.append((f"{path}[{j}].data", f"oneof field 'data' is already set. Cannot set "
                                                  f"'{present[1]}'"))
        elif "inlineData" in part and not part["inlineData"].get("mimeType"):
            problems.append((f"{path}[{j}].inline_data.mime_type", "required field is not set"))
        elif "fileData" in part and not part["fileData"].get("fileUri"):
            problems.append((f"{path}[{j}].file_data.file_uri", "required field is not set"))


def check_schema(schema: dict[str, Any], path: str, problems: Problems, *,
                 objects_need_properties: bool = False) -> None:
    """Check an OpenAPI-subset Schema the way the Gemini API does.

    Response schemas must give every OBJECT some properties; function parameters may
    leave them empty (a tool without arguments).
    """
    props = schema.get("properties") or {}
    kind = schema.get("type")
    if props and kind != "OBJECT":
        problems.append((f"{path}.properties", "only allowed for OBJECT type"))
    if kind == "OBJECT" and not props and objects_need_properties:
        problems.append((f"{path}.properties", "should be non-empty for OBJECT type"))
    for i, name in enumerate(schema.get("required", [])):
        if name not in props:
            problems.append((f"{path}.required[{i}]", "property is not defined"))
    for name, sub in props.items():
        check_schema(sub, f'{path}.properties["{name}"]', problems,
                     objects_need_properties=objects_need_properties)
    if "items" in schema:
        check_schema(schema["items"], f"{path}.items", problems,
                     objects_need_properties=objects_need_properties)
    for i, sub in enumerate(schema.get("anyOf", [])):
        check_schema(sub, f"{path}.any_of[{i}]", problems,
                     objects_need_properties=objects_need_properties)




def check_tools(req: dict[str, Any], problems: Problems) -> None:
    """Check function names, schemas and the function-calling config."""
    seen: set[str] = set()
    for t, tool in enumerate(req.get("tools", [])):
        for d, decl in enumerate(tool.get("functionDeclarations", [])):
            path = f"tools[{t}].function_declarations[{d}]"
            name = decl.get("name", "")
            if not _FUNCTION_NAME.match(name):
                problems.append((f"{path}.name", "Invalid function name. Must start with a letter "
                                 "or an underscore. Must be alphameric (a-z, A-Z, 0-9), "
                                 "underscores (_), dots (.), colons (:), or dashes (-), with a "
                                 "maximum length of 64."))
            elif name in seen:
                problems.append((f"{path}.name", f"Duplicate function declaration found: {name}"))
            seen.add(name)
            if "parameters" in decl and "parametersJsonSchema" in decl:
                problems.append((path, "parameters and parameters_json_schema cannot both be set"))
            if "parameters" in decl:
                check_schema(decl["parameters"], f"{path}.parameters", problems)
            if "response" in decl:
                check_schema(decl["response"], f"{path}.response", problems)
    calling = req.get("toolConfig", {}).get("functionCallingConfig", {})
    allowed = calling.get("allowedFunctionNames", [])
    if allowed:
        base = "tool_config.function_calling_config.allowed_function_names"
        if calling.get("mode") not in ("ANY", "VALIDATED"):
            problems.append((base, "allowed_function_names can only be set when mode is ANY or "
                                   "VALIDATED."))
        for i, name in enumerate(allowed):
            if name not in seen:
                problems.append((f"{base}[{i}]", f"function {name!r} is not declared in tools."))


def check_generation_config(cfg: dict[str, Any], model_id: str, problems: Problems) -> None:
    """Check ranges and the mutually exclusive generationConfig options."""
    base = "generation_config"
    if not 0.0 <= cfg.get("temperature", 1.0) <= 2.0:
        problems.append((f"{base}.temperature", "temperature must be in the range [0.0, 2.0]."))
    if not 0.0 <= cfg.get("topP", 1.0) <= 1.0:
        problems.append((f"{base}.top_p", "top_p must be in the range [0.0, 1.0]."))
    if len(cfg.get("stopSequences", [])) > 5:
        problems.append((f"{base}.stop_sequences", "at most 5 stop sequences are allowed."))
    if not 1 <= cfg.get("candidateCount", 1) <= 8:
        problems.append((f"{base}.candidate_count", "must be in the range [1, 8]."))
    if cfg.get("maxOutputTokens", 1) < 0:
        problems.append((f"{base}.max_output_tokens", "must be non-negative."))
    mime = cfg.get("responseMimeType", "")
    if mime and mime not in MIME_TYPES:
        problems.append((f"{base}.response_mime_type", "allowed mimetypes are `text/plain`, "
                         "`application/json`, `application/xml`, `application/yaml` and "
                         "`text/x.enum`."))
    if "responseSchema" in cfg and "responseJsonSchema" in cfg:
        problems.append((base, "response_schema and response_json_schema cannot both be set."))
    elif "responseJsonSchema" in cfg and mime != "application/json":
        problems.append((f"{base}.response_mime_type", "response_mime_type must be "
                         "application/json when response_json_schema is set."))
    elif "responseSchema" in cfg:
        if mime not in ("application/json", "text/x.enum"):
            problems.append((f"{base}.response_mime_type", "response_mime_type must be "
                             "application/json or text/x.enum when response_schema is set."))
        check_schema(cfg["responseSchema"], f"{base}.response_schema", problems,
                     objects_need_properties=True)
    thinking = cfg.get("thinkingConfig", {})
    if "thinkingBudget" in thinking and "thinkingLevel" in thinking:
        problems.append((f"{base}.thinking_config", "thinking_budget and thinking_level cannot "
                         "both be set."))
    elif "thinkingLevel" in thinking and not model_id.startswith("gemini-3"):
        problems.append((f"{base}.thinking_config.thinking_level", "thinking_level is not "
                         "supported by this model."))
    elif thinking.get("thinkingBudget") == 0 and catalog.always_thinks(model_id):
        problems.append((f"{base}.thinking_config.thinking_budget", "Budget 0 is invalid. This "
                         "model only works in thinking mode."))


def check_tool_mix(req: dict[str, Any], model_id: str) -> errors.Error | None:
    """Enforce Google's rule for built-in tools next to function declarations.

    Gemini 2.x refuses the mix outright; Gemini 3 takes it only when the request asks for
    the server-side tool invocations to be returned (toolConfig.includeServerSideToolInvocations).
    """
    tools = req.get("tools", [])
    functions = any(t.get("functionDeclarations") for t in tools)
    built_in = any(name in t for t in tools for name in BUILT_IN_TOOLS)
    if not (functions and built_in):
        return None
    if not catalog.needs_thought_signatures(model_id):
        return errors.bad_request(MIXED_TOOLS_UNSUPPORTED)
    if not req.get("toolConfig", {}).get("includeServerSideToolInvocations"):
        return errors.bad_request(MIXED_TOOLS_NEED_FLAG)
    return None


def check_output(req: dict[str, Any], model_id: str) -> errors.Error | None:
    """Check logprobs and the output modalities against what the model can do."""
    cfg = req.get("generationConfig", {})
    if "logprobs" in cfg:
        if not cfg.get("responseLogprobs"):
            return errors.bad_request("logprobs can only be set when response_logprobs is true.")
        if not 0 <= cfg["logprobs"] <= 20:
            return errors.bad_request("logprobs must be in the range [0, 20].")
    modalities = cfg.get("responseModalities", [])
    if catalog.speaks(model_id):
        if modalities != ["AUDIO"]:
            return errors.bad_request("The requested combination of response modalities "
                                      f"({', '.join(modalities) or 'TEXT'}) is not supported by "
                                      "the model. Supported: AUDIO.")
        voice = (cfg.get("speechConfig", {}).get("voiceConfig", {})
                 .get("prebuiltVoiceConfig", {}).get("voiceName"))
        if voice is not None and voice not in VOICES:
            return errors.bad_request(f"Voice name {voice} is not supported.")
    elif "AUDIO" in modalities:
        return errors.bad_request("The requested combination of response modalities (AUDIO) "
                                  "is not supported by the model.")
    elif "IMAGE" in modalities and not catalog.draws(model_id):
        return errors.bad_request("Model does not support the requested response modalities: image,text")
    return None


def check_generate(req: dict[str, Any], model_id: str) -> errors.Error | None:
    """Run every content-independent check on a parsed GenerateContentRequest."""
    problems: Problems = []
    contents = req.get("contents", [])
    if not contents:
        problems.append(("contents", "contents is not specified"))
    failed = check_contents(contents, "contents", problems)
    if failed:
        return failed
    if "systemInstruction" in req:
        check_parts(req["systemInstruction"].get("parts", []), "system_instruction.parts", problems)
    check_tools(req, problems)
    check_generation_config(req.get("generationConfig", {}), model_id, problems)
    if problems:
        return errors.request_checks("GenerateContentRequest", problems)
    failed = check_tool_mix(req, model_id) or check_output(req, model_id)
    if failed:
        return failed
    if req.get("cachedContent") and any(k in req for k in ("systemInstruction", "tools", "toolConfig")):
        return errors.bad_request("CachedContent can not be used with GenerateContent request "
                                  "setting system_instruction, tools or tool_config.\n\nProposed "
                                  "fix: move those values to CachedContent from GenerateContent "
                                  "request.")
    if catalog.needs_thought_signatures(model_id):
        return check_signatures(contents)
    return None


def _starts_turn(content: dict[str, Any]) -> bool:
    """Tell whether a content is a user message (not a tool result) that opens a new turn."""
    parts = content.get("parts", [])
    return (content.get("role", "user") in ("", "user")
            and any("text" in p for p in parts)
            and not any("functionResponse" in p for p in parts))


def check_signatures(contents: list[dict[str, Any]]) -> errors.Error | None:
    """Enforce Gemini 3's rule: each step of the current turn echoes its first call's signature."""
    start = 0
    for i, content in enumerate(contents):
        if _starts_turn(content):
            start = i + 1
    for i in range(start, len(contents)):
        content = contents[i]
        if content.get("role") != "model":
            continue
        calls = [p for p in content.get("parts", []) if "functionCall" in p]
        if calls and not calls[0].get("thoughtSignature"):
            name = calls[0]["functionCall"].get("name", "")
            return errors.bad_request(SIGNATURE_MESSAGE.format(name=name, position=i + 1))
    return None


def file_ids(contents: list[dict[str, Any]]) -> list[str]:
    """Return the Files API ids that fileData parts reference (external URIs excluded)."""
    out = []
    for content in contents:
        for part in content.get("parts", []):
            uri = part.get("fileData", {}).get("fileUri")
            if uri and not is_external_uri(uri):
                match = re.search(r"(?:^|/)files/([^/?#]+)", uri)
                out.append(match.group(1) if match else uri)
    return out


def is_external_uri(uri: str) -> bool:
    """Tell whether a fileUri points outside the Files API (YouTube links are allowed)."""
    return bool(re.match(r"^https?://(www\.)?(youtube\.com|youtu\.be)/", uri))
