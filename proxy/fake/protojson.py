"""Parse request bodies the way Google's proto-JSON front end does.

Google maps JSON onto protobuf messages before any model sees it, so an unknown field,
a list where a single value belongs or a wrong scalar type fails with
`Invalid JSON payload received. …` plus `BadRequest.fieldViolations`. The parser here
accepts camelCase and snake_case names (as Google does), drops nulls, normalises names
to camelCase and collects every violation with Google's paths (`tools[0].function_declarations[0].parameters`,
map entries as `properties[1].value`).
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

Violations = list[tuple[str, str]]

_SCALAR_TYPES = {"string": "TYPE_STRING", "bool": "TYPE_BOOL", "int": "TYPE_INT32",
                 "int64": "TYPE_INT64", "float": "TYPE_FLOAT", "double": "TYPE_DOUBLE",
                 "bytes": "TYPE_BYTES"}
_WELL_KNOWN = {"struct": "google.protobuf.Struct", "duration": "google.protobuf.Duration",
               "timestamp": "google.protobuf.Timestamp"}


class Field:
    """One message field: its kind (scalar, enum, msg, struct, value…) and cardinality."""

    __slots__ = ("name", "proto", "kind", "arg", "repeated", "is_map")

    def __init__(self, kind: str, arg: str | None = None, *, repeated: bool = False,
                 is_map: bool = False) -> None:
        self.name = ""
        self.proto = ""
        self.kind = kind
        self.arg = arg
        self.repeated = repeated
        self.is_map = is_map


def _f(kind: str, arg: str | None = None) -> Field:
    return Field(kind, arg)


def _list(kind: str, arg: str | None = None) -> Field:
    return Field(kind, arg, repeated=True)


def _map(kind: str, arg: str | None = None) -> Field:
    return Field(kind, arg, is_map=True)


ENUMS: dict[str, list[str]] = {
    "Type": ["TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"],
    "HarmCategory": ["HARM_CATEGORY_UNSPECIFIED", "HARM_CATEGORY_DEROGATORY",
                     "HARM_CATEGORY_TOXICITY", "HARM_CATEGORY_VIOLENCE", "HARM_CATEGORY_SEXUAL",
                     "HARM_CATEGORY_MEDICAL", "HARM_CATEGORY_DANGEROUS",
                     "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH",
                     "HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_DANGEROUS_CONTENT",
                     "HARM_CATEGORY_CIVIC_INTEGRITY"],
    "HarmBlockThreshold": ["HARM_BLOCK_THRESHOLD_UNSPECIFIED", "BLOCK_LOW_AND_ABOVE",
                           "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF"],
    "Mode": ["MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"],
    "Modality": ["MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO"],
    "MediaResolution": ["MEDIA_RESOLUTION_UNSPECIFIED", "MEDIA_RESOLUTION_LOW",
                        "MEDIA_RESOLUTION_MEDIUM", "MEDIA_RESOLUTION_HIGH"],
    "ThinkingLevel": ["THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH"],
    "Language": ["LANGUAGE_UNSPECIFIED", "PYTHON"],
    "Outcome": ["OUTCOME_UNSPECIFIED", "OUTCOME_OK", "OUTCOME_FAILED",
                "OUTCOME_DEADLINE_EXCEEDED"],
    "TaskType": ["TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT",
                 "SEMANTIC_SIMILARITY", "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING",
                 "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY"],
    "Behavior": ["UNSPECIFIED", "BLOCKING", "NON_BLOCKING"],
    "Scheduling": ["SCHEDULING_UNSPECIFIED", "SILENT", "WHEN_IDLE", "INTERRUPT"],
    "DynamicMode": ["MODE_UNSPECIFIED", "MODE_DYNAMIC"],
    # The google-genai SDK sends these lowercase ("flex"); enum names match case-blind here.
    "ServiceTier": ["UNSPECIFIED", "STANDARD", "FLEX", "PRIORITY"],
}

MESSAGES: dict[str, dict[str, Field]] = {
    "GenerateContentRequest": {
        "model": _f("string"), "contents": _list("msg", "Content"),
        "systemInstruction": _f("msg", "Content"), "tools": _list("msg", "Tool"),
        "toolConfig": _f("msg", "ToolConfig"), "safetySettings": _list("msg", "SafetySetting"),
        "generationConfig": _f("msg", "GenerationConfig"), "cachedContent": _f("string"),
        "serviceTier": _f("enum", "ServiceTier"),
    },
    "Content": {"role": _f("string"), "parts": _list("msg", "Part")},
    "Part": {
        "text": _f("string"), "inlineData": _f("msg", "Blob"), "fileData": _f("msg", "FileData"),
        "functionCall": _f("msg", "FunctionCall"),
        "functionResponse": _f("msg", "FunctionResponse"),
        "executableCode": _f("msg", "ExecutableCode"),
        "codeExecutionResult": _f("msg", "CodeExecutionResult"),
        "videoMetadata": _f("msg", "VideoMetadata"), "thought": _f("bool"),
        "thoughtSignature": _f("bytes"), "toolCall": _f("struct"), "toolResponse": _f("struct"),
    },
    "Blob": {"mimeType": _f("string"), "data": _f("bytes")},
    "FileData": {"mimeType": _f("string"), "fileUri": _f("string")},
    "FunctionCall": {"id": _f("string"), "name": _f("string"), "args": _f("struct")},
    "FunctionResponse": {"id": _f("string"), "name": _f("string"), "response": _f("struct"),
                         "willContinue": _f("bool"), "scheduling": _f("enum", "Scheduling")},
    "ExecutableCode": {"language": _f("enum", "Language"), "code": _f("string")},
    "CodeExecutionResult": {"outcome": _f("enum", "Outcome"), "output": _f("string")},
    "VideoMetadata": {"startOffset": _f("duration"), "endOffset": _f("duration"),
                      "fps": _f("double")},
    "Tool": {
        "functionDeclarations": _list("msg", "FunctionDeclaration"),
        "googleSearch": _f("msg", "GoogleSearch"),
        "googleSearchRetrieval": _f("msg", "GoogleSearchRetrieval"),
        "codeExecution": _f("msg", "Empty"), "urlContext": _f("msg", "Empty"),
    },
    "Empty": {},
    "GoogleSearch": {"timeRangeFilter": _f("msg", "Interval")},
    "Interval": {"startTime": _f("timestamp"), "endTime": _f("timestamp")},
    "GoogleSearchRetrieval": {"dynamicRetrievalConfig": _f("msg", "DynamicRetrievalConfig")},
    "DynamicRetrievalConfig": {"mode": _f("enum", "DynamicMode"),
                               "dynamicThreshold": _f("float")},
    "FunctionDeclaration": {
        "name": _f("string"), "description": _f("string"), "behavior": _f("enum", "Behavior"),
        "parameters": _f("msg", "Schema"), "parametersJsonSchema": _f("value"),
        "response": _f("msg", "Schema"), "responseJsonSchema": _f("value"),
    },
    "Schema": {
        "type": _f("enum", "Type"), "format": _f("string"), "title": _f("string"),
        "description": _f("string"), "nullable": _f("bool"), "enum": _list("string"),
        "maxItems": _f("int64"), "minItems": _f("int64"), "properties": _map("msg", "Schema"),
        "required": _list("string"), "minProperties": _f("int64"),
        "maxProperties": _f("int64"), "minLength": _f("int64"), "maxLength": _f("int64"),
        "pattern": _f("string"), "example": _f("value"), "anyOf": _list("msg", "Schema"),
        "propertyOrdering": _list("string"), "default": _f("value"),
        "items": _f("msg", "Schema"), "minimum": _f("double"), "maximum": _f("double"),
    },
    "ToolConfig": {"functionCallingConfig": _f("msg", "FunctionCallingConfig"),
                   "retrievalConfig": _f("struct"),
                   "includeServerSideToolInvocations": _f("bool")},
    "FunctionCallingConfig": {"mode": _f("enum", "Mode"),
                              "allowedFunctionNames": _list("string")},
    "SafetySetting": {"category": _f("enum", "HarmCategory"),
                      "threshold": _f("enum", "HarmBlockThreshold")},
    "GenerationConfig": {
        "candidateCount": _f("int"), "stopSequences": _list("string"),
        "maxOutputTokens": _f("int"), "temperature": _f("float"), "topP": _f("float"),
        "topK": _f("int"), "seed": _f("int"), "responseMimeType": _f("string"),
        "responseSchema": _f("msg", "Schema"), "responseJsonSchema": _f("value"),
        "presencePenalty": _f("float"), "frequencyPenalty": _f("float"),
        "responseLogprobs": _f("bool"), "logprobs": _f("int"),
        "enableEnhancedCivicAnswers": _f("bool"),
        "responseModalities": _list("enum", "Modality"), "speechConfig": _f("struct"),
        "thinkingConfig": _f("msg", "ThinkingConfig"), "imageConfig": _f("struct"),
        "mediaResolution": _f("enum", "MediaResolution"),
    },
    "ThinkingConfig": {"includeThoughts": _f("bool"), "thinkingBudget": _f("int"),
                       "thinkingLevel": _f("enum", "ThinkingLevel")},
    "CountTokensRequest": {"contents": _list("msg", "Content"),
                           "generateContentRequest": _f("msg", "GenerateContentRequest")},
    "EmbedContentRequest": {"model": _f("string"), "content": _f("msg", "Content"),
                            "taskType": _f("enum", "TaskType"), "title": _f("string"),
                            "outputDimensionality": _f("int")},
    "BatchEmbedContentsRequest": {"requests": _list("msg", "EmbedContentRequest")},
    "CachedContent": {
        "name": _f("string"), "displayName": _f("string"), "model": _f("string"),
        "contents": _list("msg", "Content"), "systemInstruction": _f("msg", "Content"),
        "tools": _list("msg", "Tool"), "toolConfig": _f("msg", "ToolConfig"),
        "ttl": _f("duration"), "expireTime": _f("timestamp"),
    },
}

_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")
# Lookup per message: accepted JSON name (camel or snake) → Field.
_LOOKUP: dict[str, dict[str, Field]] = {}
for _msg, _fields in MESSAGES.items():
    _LOOKUP[_msg] = {}
    for _name, _field in _fields.items():
        _field.name = _name
        _field.proto = _SNAKE.sub("_", _name).lower()
        _LOOKUP[_msg][_name] = _field
        _LOOKUP[_msg][_field.proto] = _field

_DURATION = re.compile(r"^-?\d+(\.\d{1,9})?s$")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


def snake(name: str) -> str:
    """Return the proto (snake_case) spelling of a camelCase field name."""
    return _SNAKE.sub("_", name).lower()


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _at(path: str) -> str:
    return f" at '{path}'" if path else ""


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def decode_bytes(value: str) -> bytes | None:
    """Decode proto-JSON bytes: standard or URL-safe base64, padding optional."""
    text = value.strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class Parser:
    """Parse one request body; `violations` collects Google-worded failures."""

    def __init__(self, version: str = "v1beta") -> None:
        self.version = version
        self.violations: Violations = []

    def _type_name(self, field: Field) -> str:
        if field.kind in _SCALAR_TYPES:
            return _SCALAR_TYPES[field.kind]
        if field.kind in _WELL_KNOWN:
            return "type.googleapis.com/" + _WELL_KNOWN[field.kind]
        return f"type.googleapis.com/google.ai.generativelanguage.{self.version}.{field.arg}"

    def _invalid(self, path: str, field: Field, value: Any) -> None:
        self.violations.append((path, f"Invalid value at '{path}' ({self._type_name(field)}), "
                                      f"{_show(value)}"))

    def message(self, name: str, value: Any, path: str = "") -> dict[str, Any]:
        """Parse `value` as message `name` (the caller checked it is an object)."""
        lookup = _LOOKUP[name]
        out: dict[str, Any] = {}
        for key, item in value.items():
            field = lookup.get(key)
            if field is None:
                self.violations.append((path, f'Invalid JSON payload received. Unknown name '
                                              f'"{key}"{_at(path)}: Cannot find field.'))
                continue
            if item is None:
                continue
            if field.name in out:
                self.violations.append((path, f'Invalid JSON payload received. Field '
                                              f'"{field.proto}"{_at(path)} is set twice.'))
                continue
            parsed = self._field(field, key, item, path)
            if parsed is not None:
                out[field.name] = parsed
        return out

    def _field(self, field: Field, key: str, value: Any, parent: str) -> Any:
        path = _join(parent, field.proto)
        if field.is_map:
            if not isinstance(value, dict):
                self._invalid(path, field, value)
                return None
            return {k: self._single(field, key, v, f"{path}[{i}].value", parent)
                    for i, (k, v) in enumerate(value.items())}
        if field.repeated:
            # Google's parser takes a lone value for a repeated field as a one-item list.
            items = value if isinstance(value, list) else [value]
            out = []
            for i, item in enumerate(items):
                if isinstance(item, list):
                    self.violations.append((path, f'Invalid JSON payload received. Unknown name '
                                                  f'"{key}"{_at(parent)}: Proto fields cannot '
                                                  f'hold nested lists.'))
                    continue
                if item is not None:
                    out.append(self._single(field, key, item, f"{path}[{i}]", parent))
            return out
        if isinstance(value, list) and field.kind != "value":
            self.violations.append((parent, f'Invalid JSON payload received. Unknown name '
                                            f'"{key}"{_at(parent)}: Proto field is not repeating, '
                                            f'cannot start list.'))
            return None
        return self._single(field, key, value, path, parent)

    def _single(self, field: Field, key: str, value: Any, path: str, parent: str) -> Any:
        kind = field.kind
        if kind == "value":
            return value
        if isinstance(value, dict) and kind not in ("msg", "struct"):
            self.violations.append((parent, f'Invalid JSON payload received. Unknown name '
                                            f'"{key}"{_at(parent)}: Cannot bind a message to a '
                                            f'scalar field.'))
            return None
        if kind == "msg":
            if not isinstance(value, dict):
                self._invalid(path, field, value)
                return None
            return self.message(field.arg or "", value, path)
        if kind == "struct":
            if not isinstance(value, dict):
                self._invalid(path, field, value)
                return None
            return value
        if kind == "string":
            if isinstance(value, str):
                return value
        elif kind == "bool":
            if isinstance(value, bool):
                return value
        elif kind in ("int", "int64"):
            if isinstance(value, bool):
                pass
            elif isinstance(value, int):
                return value
            elif isinstance(value, float) and value.is_integer():
                return int(value)
            elif isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
                return int(value)
        elif kind in ("float", "double"):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
        elif kind == "bytes":
            if isinstance(value, str):
                if decode_bytes(value) is not None:
                    return value
                self.violations.append((path, f"Invalid value at '{path}' (TYPE_BYTES), Base64 "
                                              f"decoding failed for {_show(value)}"))
                return None
        elif kind == "enum":
            values = ENUMS[field.arg or ""]
            if isinstance(value, str) and value.upper() in values:
                return value.upper()
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(values):
                return values[value]
        elif kind == "duration":
            if isinstance(value, str) and _DURATION.match(value):
                return value
        elif kind == "timestamp":
            if isinstance(value, str) and _TIMESTAMP.match(value):
                return value
        self._invalid(path, field, value)
        return None


def parse(message: str, body: Any, version: str = "v1beta") -> tuple[dict[str, Any], Violations]:
    """Parse a whole request body as `message`; return (normalised body, violations)."""
    parser = Parser(version)
    if not isinstance(body, dict):
        kind = "list" if isinstance(body, list) else "value"
        return {}, [("", f'Invalid JSON payload received. Unknown name "": Root element must be '
                         f'a message, got a {kind}.')]
    return parser.message(message, body), parser.violations


def duration_seconds(value: str) -> float:
    """Convert a proto Duration string like "300s" or "1.5s" to seconds."""
    return float(value[:-1])
