"""OpenAI's built-in (hosted) tools: the one table of what Gemini runs in their place."""
from __future__ import annotations

from typing import Any

from .fields import expect_dict, expect_list, fail
from .params import Strictness
from .signatures import requires_signatures

SEARCH = "googleSearch"
CODE = "codeExecution"

# OpenAI tool type → the Gemini Tool that does its job, or None: Gemini has no counterpart
# (the request is refused naming the type, or the tool dropped under drop_params).
BUILTIN_TOOLS: dict[str, str | None] = {
    "web_search": SEARCH,
    "web_search_2025_08_26": SEARCH,
    "web_search_preview": SEARCH,
    "web_search_preview_2025_03_11": SEARCH,
    "code_interpreter": CODE,
    "file_search": None,
    "computer": None,
    "computer_use": None,
    "computer_use_preview": None,
    "image_generation": None,
    "mcp": None,
    "local_shell": None,
    "shell": None,
    "apply_patch": None,
    "tool_search": None,
    "programmatic_tool_calling": None,
}


def builtin_tool(tool: dict[str, Any], path: str, strict: Strictness) -> dict[str, Any] | None:
    """Return the Gemini Tool for an OpenAI built-in tool (None when it is dropped)."""
    kind = tool.get("type")
    if not isinstance(kind, str):
        raise fail(f"{path}.type", "must be a string")
    gemini = BUILTIN_TOOLS.get(kind)
    if gemini is None:
        what = (f"the built-in tool {kind!r} has no Gemini counterpart" if kind in BUILTIN_TOOLS
                else f"unknown tool type {kind!r}")
        strict.unsupported(f"{path}.type", what)
        return None
    if gemini == SEARCH and not search_options(tool, path, strict):
        return None
    if gemini == CODE and not _container(tool.get("container"), f"{path}.container", strict):
        return None
    return {gemini: {}}


def search_options(options: dict[str, Any], path: str, strict: Strictness) -> bool:
    """Check web search options Gemini cannot honour; False if the search tool is dropped.

    search_context_size ("high level guidance") and user_location ("approximate") are
    advisory; a domain filter or a cache-only search would change what is searched.
    """
    filters = options.get("filters")
    if filters is not None:
        domains = expect_dict(filters, f"{path}.filters").get("allowed_domains")
        if domains:
            expect_list(domains, f"{path}.filters.allowed_domains")
            strict.unsupported(f"{path}.filters.allowed_domains",
                               "Google Search cannot be limited to some domains")
            return False
    if options.get("external_web_access") is False:
        strict.unsupported(f"{path}.external_web_access", "Google Search always searches live")
        return False
    return True


def _container(container: Any, path: str, strict: Strictness) -> bool:
    """Accept an automatic container; files in OpenAI's containers do not exist here."""
    if container is None or container == "auto":
        return True
    if isinstance(container, dict) and not container.get("file_ids"):
        return True  # {"type": "auto"}; memory_limit and network_policy are advisory
    strict.unsupported(path, "code execution runs in Gemini's sandbox, without OpenAI's "
                             "containers or their files; use {\"type\": \"auto\"}")
    return False


def mixes_with_functions(model: str) -> bool:
    """Tell whether a model takes built-in tools and function declarations in one request.

    Gemini 2.x answers 400 "Tool use with function calling is unsupported"; Gemini 3
    accepts the mix with toolConfig.includeServerSideToolInvocations.
    """
    return requires_signatures(model)


def assemble(model: str, decls: list[dict[str, Any]], builtins: list[dict[str, Any]],
             config: dict[str, Any] | None, strict: Strictness, path: str
             ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Return (Gemini tools, toolConfig) for function declarations plus built-in tools."""
    if decls and builtins and not mixes_with_functions(model):
        names = ", ".join(next(iter(b)) for b in builtins)
        strict.unsupported(path, f"{model} cannot use built-in tools ({names}) together with "
                                 "function tools (Gemini 2 answers \"Tool use with function "
                                 "calling is unsupported\"); use a Gemini 3 model, or one kind "
                                 "of tool")
        builtins = []
    tools: list[dict[str, Any]] = []
    seen: set[str] = set()
    for tool in builtins:  # web_search and web_search_preview both mean one googleSearch
        name = next(iter(tool))
        if name not in seen:
            seen.add(name)
            tools.append(tool)
    if decls:
        tools.append({"functionDeclarations": decls})
        if builtins:
            config = {**(config or {}), "includeServerSideToolInvocations": True}
    return tools, (config if decls else None)
