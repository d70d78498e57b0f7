"""Clean JSON Schema down to the OpenAPI subset Gemini's `parameters` / `responseSchema` accept.

Gemini's `Schema` message is a protobuf: any keyword it does not know is a 400
("Unknown name "additionalProperties" … Cannot find field"), a `type` list is a
400 ("Proto field is not repeating"), enum values must be strings, and string
`format` only allows `enum` / `date-time`. Cleaning keeps what the subset can
say and drops the rest. When dropping would change what the schema means
(recursive `$ref`, map-typed `additionalProperties`, tuples, "any" values,
non-string enums…) the cleaner flags the result as lossy, and callers send the
original JSON Schema through Gemini's `parametersJsonSchema` /
`responseJsonSchema` fields instead (see `schema_for_gemini`).
"""
from __future__ import annotations

import json
import math
from typing import Any

from .fields import fail, is_int, is_number

_TYPES = frozenset(("string", "number", "integer", "boolean", "array", "object"))
_FORMATS = {
    "string": frozenset(("enum", "date-time")),
    "number": frozenset(("float", "double")),
    "integer": frozenset(("int32", "int64")),
}
# Keywords whose loss changes what values the schema admits.
_LOSSY_KEYWORDS = ("patternProperties", "not", "if", "then", "else", "dependentSchemas",
                   "contains", "unevaluatedProperties", "unevaluatedItems")
_ANNOTATIONS = ("description", "title", "default", "example")

MAX_DEPTH = 40
MAX_NODES = 5000  # inlining $ref can grow a schema exponentially; stop well before that hurts


class _Cleaner:
    """One cleaning pass over one root schema (holds the root for `$ref` lookups)."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.lossy = False
        self.nodes = 0

    # -- references -------------------------------------------------------------------
    def resolve(self, ref: Any, path: str) -> Any:
        if not isinstance(ref, str):
            raise fail(f"{path}.$ref", "must be a string")
        if ref == "#":
            return self.root
        if not ref.startswith("#/"):
            raise fail(f"{path}.$ref", f"only local references (#/...) are supported, got {ref!r}")
        cur = self.root
        for token in ref[2:].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(cur, dict) and token in cur:
                cur = cur[token]
            elif isinstance(cur, list) and token.isdigit() and int(token) < len(cur):
                cur = cur[int(token)]
            else:
                raise fail(f"{path}.$ref", f"cannot resolve {ref!r}")
        if not isinstance(cur, (dict, bool)):
            raise fail(f"{path}.$ref", f"{ref!r} does not point at a schema")
        return cur

    # -- the walk -----------------------------------------------------------------------
    def clean(self, node: Any, path: str, depth: int, refs: tuple[str, ...]) -> dict[str, Any]:
        if isinstance(node, bool):
            # true = "anything", false = "nothing": neither exists in the subset.
            self.lossy = True
            return {}
        if not isinstance(node, dict):
            raise fail(path, "must be a JSON Schema object")
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            self.lossy = True
            return {"type": "object"}

        if "$ref" in node:
            ref = node["$ref"]
            target = self.resolve(ref, path)
            if ref in refs:
                # A recursive type: the subset cannot express it; cut the loop here.
                self.lossy = True
                out: dict[str, Any] = {"type": "object"}
                if isinstance(node.get("description"), str):
                    out["description"] = node["description"]
                return out
            merged: dict[str, Any] = {}
            if isinstance(target, dict):
                merged.update(target)
            else:
                self.lossy = True
            for key, value in node.items():
                if key != "$ref":
                    merged[key] = value  # siblings (description, nullable…) win
            return self.clean(merged, path, depth + 1, refs + (ref,))

        if "allOf" in node:
            return self._all_of(node, path, depth, refs)
        if "anyOf" in node or "oneOf" in node:
            return self._any_of(node, path, depth, refs)
        return self._plain(node, path, depth, refs)

    def _all_of(self, node: dict[str, Any], path: str, depth: int,
                refs: tuple[str, ...]) -> dict[str, Any]:
        branches = node["allOf"]
        if not isinstance(branches, list):
            raise fail(f"{path}.allOf", "must be an array")
        merged = {k: v for k, v in node.items() if k != "allOf"}
        inlined: list[str] = []  # refs expanded here are ancestors of the merged result
        for i, branch in enumerate(branches):
            bpath = f"{path}.allOf[{i}]"
            chain = refs
            while isinstance(branch, dict) and "$ref" in branch and len(chain) < len(refs) + 8:
                ref = branch["$ref"]
                target = self.resolve(ref, bpath)
                if ref in chain:
                    self.lossy = True
                    branch = None
                    break
                chain = chain + (ref,)
                if ref not in inlined:
                    inlined.append(ref)
                rest = {k: v for k, v in branch.items() if k != "$ref"}
                branch = dict(target) if isinstance(target, dict) else {}
                branch.update(rest)
            if branch is None or branch is True:
                continue
            if not isinstance(branch, dict):
                raise fail(bpath, "must be a JSON Schema object")
            for key, value in branch.items():
                if key == "properties" and isinstance(value, dict):
                    props = merged.get("properties")
                    props = dict(props) if isinstance(props, dict) else {}
                    for name, sub in value.items():
                        props.setdefault(name, sub)
                    merged["properties"] = props
                elif key == "required" and isinstance(value, list):
                    req = merged.get("required")
                    req = list(req) if isinstance(req, list) else []
                    req.extend(r for r in value if r not in req)
                    merged["required"] = req
                else:
                    merged.setdefault(key, value)
        return self.clean(merged, path, depth + 1, refs + tuple(inlined))

    def _any_of(self, node: dict[str, Any], path: str, depth: int,
                refs: tuple[str, ...]) -> dict[str, Any]:
        key = "anyOf" if "anyOf" in node else "oneOf"
        if "anyOf" in node and "oneOf" in node:
            self.lossy = True
        alts = node[key]
        if not isinstance(alts, list):
            raise fail(f"{path}.{key}", "must be an array")
        nullable = node.get("nullable") is True
        kept: list[dict[str, Any]] = []
        for i, alt in enumerate(alts):
            if _is_null_schema(alt):
                nullable = True
                continue
            kept.append(self.clean(alt, f"{path}.{key}[{i}]", depth + 1, refs))
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}
        typed = [k for k in kept if "type" in k or "anyOf" in k]
        structural = any(k in rest for k in ("type", "properties", "items", "enum", "const"))

        if not typed:
            # No alternatives, or only constraint-style ones ({"required": [...]}).
            if kept:
                self.lossy = True
            if nullable:
                rest["nullable"] = True
            return self._plain(rest, path, depth, refs)

        if structural:
            self.lossy = True
        if len(kept) == 1:
            out = dict(kept[0])
        else:
            if len(typed) != len(kept):
                self.lossy = True
            out = {"anyOf": typed}
        for ann in _ANNOTATIONS:
            value = rest.get(ann)
            if value is not None and (ann not in ("description", "title") or isinstance(value, str)):
                out.setdefault(ann, value)
        if nullable:
            out["nullable"] = True
        return out

    def _plain(self, node: dict[str, Any], path: str, depth: int,
               refs: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        nullable = node.get("nullable") is True

        raw_type = node.get("type")
        if raw_type is None:
            raw_types: list[Any] = []
        elif isinstance(raw_type, str):
            raw_types = [raw_type]
        elif isinstance(raw_type, list):
            raw_types = raw_type
        else:
            raise fail(f"{path}.type", "must be a string or an array of strings")
        types: list[str] = []
        for t in raw_types:
            if not isinstance(t, str):
                raise fail(f"{path}.type", "must be a string or an array of strings")
            t = t.lower()
            if t == "null":
                nullable = True
            elif t in _TYPES:
                if t not in types:
                    types.append(t)
            else:
                self.lossy = True  # "any" and friends

        if len(types) > 1:
            # ["string", "integer"] → anyOf of one branch per type.
            rest = {k: v for k, v in node.items()
                    if k not in ("type", "nullable") and k not in _ANNOTATIONS}
            out["anyOf"] = [self._plain({**rest, "type": t}, path, depth + 1, refs)
                            for t in types]
            self._annotations(node, out)
            if nullable:
                out["nullable"] = True
            return out

        typ = types[0] if types else None
        if typ is None:
            if "properties" in node:
                typ = "object"
            elif "items" in node or "prefixItems" in node:
                typ = "array"

        enum = node.get("enum")
        if enum is None and "const" in node:
            enum = [node["const"]]
        if enum is not None:
            if not isinstance(enum, list):
                raise fail(f"{path}.enum", "must be an array")
            values = [v for v in enum if v is not None]
            if len(values) != len(enum):
                nullable = True
            if values:
                if typ in (None, "string"):
                    if typ is None and not all(isinstance(v, str) for v in values):
                        self.lossy = True
                    typ = "string"
                    out["enum"] = [_enum_str(v) for v in values]
                else:
                    # Gemini enums are strings only; keep the type and say the values instead.
                    self.lossy = True
                    allowed = ", ".join(_enum_str(v) for v in values)
                    desc = node.get("description")
                    desc = desc + " " if isinstance(desc, str) and desc else ""
                    out["description"] = f"{desc}Allowed values: {allowed}."

        if typ is not None:
            out["type"] = typ
        else:
            self.lossy = True  # an unconstrained value cannot be said in the subset
        fmt = node.get("format")
        if isinstance(fmt, str) and typ is not None and fmt in _FORMATS.get(typ, ()):
            out["format"] = fmt
        self._annotations(node, out)
        if nullable:
            out["nullable"] = True
        for key in _LOSSY_KEYWORDS:
            if key in node:
                self.lossy = True

        if typ == "object":
            self._object(node, out, path, depth, refs)
        elif typ == "array":
            self._array(node, out, path, depth, refs)
        elif typ == "string":
            _copy_count(node, out, ("minLength", "maxLength"))
            if isinstance(node.get("pattern"), str):
                out["pattern"] = node["pattern"]
        elif typ in ("number", "integer"):
            for bound, exclusive, step in (("minimum", "exclusiveMinimum", 1),
                                           ("maximum", "exclusiveMaximum", -1)):
                if is_number(node.get(bound)):
                    out[bound] = node[bound]
                elif is_number(node.get(exclusive)):
                    value = node[exclusive]
                    if typ == "integer":
                        value = (math.floor(value) + 1) if step > 0 else (math.ceil(value) - 1)
                    out[bound] = value
        return out

    def _annotations(self, node: dict[str, Any], out: dict[str, Any]) -> None:
        for key in ("description", "title"):
            value = node.get(key)
            if isinstance(value, str) and key not in out:
                out[key] = value
        if "default" in node and node["default"] is not None:
            out["default"] = node["default"]
        if "example" in node and node["example"] is not None:
            out["example"] = node["example"]
        elif isinstance(node.get("examples"), list) and node["examples"]:
            if node["examples"][0] is not None:
                out["example"] = node["examples"][0]

    def _object(self, node: dict[str, Any], out: dict[str, Any], path: str, depth: int,
                refs: tuple[str, ...]) -> None:
        props = node.get("properties")
        cleaned: dict[str, Any] = {}
        if props is not None:
            if not isinstance(props, dict):
                raise fail(f"{path}.properties", "must be an object")
            for name, sub in props.items():
                if sub is False:
                    self.lossy = True
                    continue
                cleaned[name] = self.clean(sub, f"{path}.properties.{name}", depth + 1, refs)
        if cleaned:
            # Gemini rejects an OBJECT with empty properties, so only send non-empty ones.
            out["properties"] = cleaned
            required = node.get("required")
            if isinstance(required, list):
                req: list[str] = []
                for r in required:
                    if isinstance(r, str) and r in cleaned and r not in req:
                        req.append(r)
                if req:
                    out["required"] = req
            order = node.get("propertyOrdering")
            if isinstance(order, list):
                order = [p for p in order if isinstance(p, str) and p in cleaned]
                if order:
                    out["propertyOrdering"] = order
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            self.lossy = True  # a map type ({str: X}) has no subset spelling
        _copy_count(node, out, ("minProperties", "maxProperties"))

    def _array(self, node: dict[str, Any], out: dict[str, Any], path: str, depth: int,
               refs: tuple[str, ...]) -> None:
        items = node.get("items")
        prefix = node.get("prefixItems")
        if prefix is not None:
            self.lossy = True
        if isinstance(items, (dict, bool)):
            out["items"] = self.clean(items, f"{path}.items", depth + 1, refs)
        else:
            tuple_items = items if isinstance(items, list) else prefix
            self.lossy = True
            if isinstance(tuple_items, list) and tuple_items:
                branches = [self.clean(s, f"{path}.items[{i}]", depth + 1, refs)
                            for i, s in enumerate(tuple_items)]
                out["items"] = branches[0] if len(branches) == 1 else {"anyOf": branches}
            else:
                # Gemini insists on `items` for ARRAY ("items: missing field").
                out["items"] = {"type": "string"}
        _copy_count(node, out, ("minItems", "maxItems"))


def _is_null_schema(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    t = node.get("type")
    if t == "null" or t == ["null"]:
        return True
    return ("const" in node and node["const"] is None) or node.get("enum") == [None]


def _enum_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _copy_count(node: dict[str, Any], out: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = node.get(key)
        if is_int(value) and value >= 0:
            out[key] = int(value)


def clean_with_report(schema: Any, *, path: str = "schema") -> tuple[dict[str, Any], bool]:
    """Clean schema and tell whether cleaning lost meaning (see module docstring)."""
    cleaner = _Cleaner(schema)
    out = cleaner.clean(schema, path, 0, ())
    return out, cleaner.lossy


def clean_schema(schema: dict[str, Any], *, path: str = "schema") -> dict[str, Any]:
    """Return a copy of schema in the OpenAPI subset Gemini accepts; never mutates schema.

    Invalid schema structure raises TranslationError naming `path`.
    """
    return clean_with_report(schema, path=path)[0]


def json_schema_for_gemini(schema: dict[str, Any]) -> dict[str, Any]:
    """Return schema for `parametersJsonSchema` / `responseJsonSchema` (root meta keys dropped)."""
    return {k: v for k, v in schema.items() if k not in ("$schema", "strict")}


def _bare_object(schema: dict[str, Any]) -> bool:
    """Tell whether a cleaned schema has an OBJECT without properties anywhere."""
    if schema.get("type") == "object" and not schema.get("properties"):
        return True
    subs = list((schema.get("properties") or {}).values()) + list(schema.get("anyOf") or [])
    if isinstance(schema.get("items"), dict):
        subs.append(schema["items"])
    return any(_bare_object(sub) for sub in subs)


def schema_for_gemini(schema: Any, *, path: str, response: bool = False) -> tuple[bool, dict[str, Any]]:
    """Choose how to send a client's JSON Schema: (as_json_schema, schema).

    Cleaned OpenAPI-subset schemas work on every Gemini model, so they are the
    default; a schema the subset cannot express faithfully goes as JSON Schema.
    A response schema also needs properties on every object (free-form objects
    are fine for function parameters, not for `responseSchema`).
    """
    if not isinstance(schema, dict):
        raise fail(path, "must be a JSON Schema object")
    cleaned, lossy = clean_with_report(schema, path=path)
    if lossy or (response and _bare_object(cleaned)):
        return True, json_schema_for_gemini(schema)
    return False, cleaned
