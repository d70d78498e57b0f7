"""Translate function tools, tool choice, calls and results between OpenAI and Gemini."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .fields import expect_dict, expect_list, fail
from .params import Strictness
from .schema import schema_for_gemini

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
_JSON_START = frozenset('{["-0123456789tfn')


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


TOO_DEEP = "Arrays or objects nest too deeply to read; flatten the structure"


def loads_strict(text: str | bytes, **options: Any) -> Any:
    """Parse JSON from a client or upstream; raise ValueError for anything unreadable.

    No NaN/Infinity (Python's extension: Gemini refuses a body holding them). Nesting past
    the decoder's recursion limit raises RecursionError, which callers that catch only
    ValueError would let through as a 500: it becomes a ValueError here.
    """
    try:
        return json.loads(text, parse_constant=_no_constant, **options)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None


def check_name(name: Any, path: str) -> str:
    """Validate a function name against Gemini's rules (letter/_ first, ≤64 of [A-Za-z0-9_.:-])."""
    if not isinstance(name, str) or not name:
        raise fail(path, "must be a non-empty string")
    if not _NAME.fullmatch(name):
        raise fail(path, f"{name[:80]!r} is not a valid function name (start with a letter or _, "
                         "then letters, digits, _ . : -; at most 64 characters)")
    return name


def function_declaration(name: Any, description: Any, parameters: Any,
                         path: str) -> dict[str, Any]:
    """Return a Gemini functionDeclaration for an OpenAI function tool.

    `parameters` goes through schema cleaning; if cleaning would change its
    meaning it is sent untouched as `parametersJsonSchema` instead.
    """
    decl: dict[str, Any] = {"name": check_name(name, f"{path}.name")}
    if description is not None:
        if not isinstance(description, str):
            raise fail(f"{path}.description", "must be a string")
        if description:
            decl["description"] = description
    if parameters is not None:
        as_json, schema = schema_for_gemini(parameters, path=f"{path}.parameters")
        if as_json:
            decl["parametersJsonSchema"] = schema
        elif schema.get("properties") or schema.get("type") not in ("object", None):
            decl["parameters"] = schema
        # else: a function without arguments; Gemini wants no parameters at all.
    return decl


CUSTOM_INPUT = "input"  # the one string argument a custom (free-form) tool's declaration has


def custom_declaration(name: Any, description: Any, fmt: Any, path: str) -> dict[str, Any]:
    """Return a Gemini functionDeclaration for an OpenAI custom (free-form input) tool.

    Gemini calls functions with JSON arguments, so the free-form input becomes one string
    argument. A grammar the input must follow is given to the model in the description;
    Gemini does not enforce it.
    """
    text = description if isinstance(description, str) else ""
    if description is not None and not isinstance(description, str):
        raise fail(f"{path}.description", "must be a string")
    if fmt is not None:
        fmt = expect_dict(fmt, f"{path}.format")
        if fmt.get("type") == "grammar":
            syntax, definition = fmt.get("syntax"), fmt.get("definition")
            if not isinstance(definition, str) or not definition:
                raise fail(f"{path}.format.definition", "must be a non-empty string")
            text += (f"\n\nThe input must follow this {syntax if isinstance(syntax, str) else ''} "
                     f"grammar:\n{definition}")
        elif fmt.get("type") not in (None, "text"):
            raise fail(f"{path}.format.type", "must be text or grammar")
    return function_declaration(name, text.strip() or None, {
        "type": "object", "properties": {CUSTOM_INPUT: {
            "type": "string", "description": "The tool's whole input, as free text."}},
        "required": [CUSTOM_INPUT]}, path)


def custom_input(args: Any) -> str:
    """Return a custom tool's free-form input from the arguments Gemini called it with."""
    if isinstance(args, dict) and isinstance(args.get(CUSTOM_INPUT), str) and len(args) == 1:
        return args[CUSTOM_INPUT]
    return function_call_json(args)


def check_unique(decls: list[dict[str, Any]], path: str) -> None:
    """Reject two declarations with the same name (Gemini 400s on duplicates)."""
    seen: set[str] = set()
    for i, decl in enumerate(decls):
        if decl["name"] in seen:
            raise fail(f"{path}[{i}]", f"duplicate function name {decl['name']!r}")
        seen.add(decl["name"])


def _allowed(tools: Any, path: str, flat: bool) -> tuple[list[str], set[str]]:
    """Return (function names, built-in tool types) an allowed_tools list names."""
    names, kinds = [], set()
    for i, tool in enumerate(expect_list(tools, path)):
        tool = expect_dict(tool, f"{path}[{i}]")
        kind = tool.get("type", "function")
        if not isinstance(kind, str):
            raise fail(f"{path}[{i}].type", "must be a string")
        if flat and kind in ("function", "custom"):  # custom tools are declared functions too
            names.append(check_name(tool.get("name"), f"{path}[{i}].name"))
        elif kind != "function":
            kinds.add(kind)
        else:
            fn = expect_dict(tool.get("function"), f"{path}[{i}].function")
            names.append(check_name(fn.get("name"), f"{path}[{i}].function.name"))
    return names, kinds


@dataclass(slots=True)
class ToolChoice:
    """What an OpenAI `tool_choice` leaves to send: toolConfig, declarations, built-in tools."""

    config: dict[str, Any] | None
    decls: list[dict[str, Any]]
    builtins: list[dict[str, Any]] = field(default_factory=list)


def tool_choice_config(choice: Any, decls: list[dict[str, Any]], path: str, *, flat: bool,
                       strict: Strictness,
                       builtins: list[tuple[str, dict[str, Any]]] | None = None) -> ToolChoice:
    """Return what to send for an OpenAI `tool_choice` over function and built-in tools.

    `builtins` pairs each built-in tool's OpenAI type with its Gemini Tool. `flat` is the
    Responses API spelling ({"type":"function","name":…}) rather than Chat's
    ({"type":"function","function":{"name":…}}). `allowed_tools` narrows the declarations,
    since Gemini only honours allowedFunctionNames together with mode ANY. Gemini decides
    itself when to use its own tools, so a choice that forces one cannot be honoured.
    """
    builtins = builtins or []
    gemini = [tool for _, tool in builtins]
    if choice is None:
        return ToolChoice(None, decls, gemini)
    declared = {d["name"] for d in decls}
    if isinstance(choice, str):
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(choice)
        if mode is None:
            raise fail(path, "must be none, auto, required or a function choice")
        if mode == "NONE":
            gemini = []  # no tool at all, Google's own ones included
        elif mode == "ANY" and not decls and gemini:
            strict.unsupported(path, "required needs a function tool: Gemini decides itself "
                                     "when to use its built-in tools")
        if not decls:
            return ToolChoice(None, decls, gemini)
        return ToolChoice({"functionCallingConfig": {"mode": mode}}, decls, gemini)
    choice = expect_dict(choice, path)
    kind = choice.get("type")
    if kind == "function" or (kind == "custom" and flat):
        if flat:
            name = check_name(choice.get("name"), f"{path}.name")
            npath = f"{path}.name"
        else:
            fn = expect_dict(choice.get("function"), f"{path}.function")
            name = check_name(fn.get("name"), f"{path}.function.name")
            npath = f"{path}.function.name"
        if name not in declared:
            raise fail(npath, f"{name!r} is not one of the declared function tools")
        return ToolChoice({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}},
                          decls, gemini)
    if kind == "allowed_tools":
        spec = choice if flat else expect_dict(choice.get("allowed_tools"), f"{path}.allowed_tools")
        spath = path if flat else f"{path}.allowed_tools"
        mode = spec.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise fail(f"{spath}.mode", "must be auto or required")
        names, kinds = _allowed(spec.get("tools"), f"{spath}.tools", flat)
        for name in names:
            if name not in declared:
                raise fail(f"{spath}.tools", f"{name!r} is not one of the declared function tools")
        kept = [d for d in decls if d["name"] in names]
        gemini = [tool for openai_type, tool in builtins if openai_type in kinds]
        if not kept:
            return ToolChoice(None, [], gemini)
        return ToolChoice({"functionCallingConfig": {"mode": "AUTO" if mode == "auto" else "ANY"}},
                          kept, gemini)
    if not isinstance(kind, str):
        raise fail(f"{path}.type", "must be a string")
    strict.unsupported(f"{path}.type", f"a tool_choice forcing {kind!r} cannot be honoured: "
                                       "Gemini decides itself when to use its built-in tools, and "
                                       "has no custom tools; use auto")
    return ToolChoice(None, decls, gemini)


def parse_arguments(arguments: Any, path: str) -> dict[str, Any]:
    """Parse an OpenAI tool call's `arguments` JSON string into Gemini `args`."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        raise fail(path, "must be a JSON string")
    try:
        args = loads_strict(arguments)
    except ValueError as exc:
        raise fail(path, f"is not valid JSON ({exc})") from None
    if not isinstance(args, dict):
        raise fail(path, "must encode a JSON object")
    return args


def function_call_part(name: str, args: dict[str, Any], signature: str | None) -> dict[str, Any]:
    """Return a Gemini functionCall part, with its thought signature when known."""
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if signature:
        part["thoughtSignature"] = signature
    return part


def response_payload(output: str) -> dict[str, Any]:
    """Wrap a tool result as Gemini `functionResponse.response` (must be an object).

    A JSON object passes as is; any other JSON value, or plain text, goes under
    "result" (text that is not JSON stays text instead of failing).
    """
    stripped = output.lstrip()
    if stripped and stripped[0] in _JSON_START:
        try:
            value = loads_strict(output)
        except ValueError:
            return {"result": output}
        if isinstance(value, dict):
            return value
        return {"result": value}
    return {"result": output}


def function_response_part(name: str, output: str) -> dict[str, Any]:
    """Return a Gemini functionResponse part for a tool result."""
    return {"functionResponse": {"name": name, "response": response_payload(output)}}


def function_call_json(args: Any) -> str:
    """Serialise Gemini `args` as an OpenAI `arguments` string."""
    return json.dumps(args if isinstance(args, dict) else {}, separators=(",", ":"),
                      ensure_ascii=False)
