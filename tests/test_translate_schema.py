"""JSON Schema cleaning for Gemini `parameters` / `responseSchema`."""
import copy
import json

import pytest

from proxy.translate.errors import TranslationError
from proxy.translate.schema import clean_schema, clean_with_report, schema_for_gemini

FORBIDDEN = {"additionalProperties", "$schema", "$id", "const", "$ref", "$defs", "definitions",
             "strict", "propertyNames", "exclusiveMinimum", "exclusiveMaximum", "examples",
             "oneOf", "allOf", "patternProperties", "prefixItems"}
ALLOWED = {"type", "format", "title", "description", "nullable", "enum", "items", "properties",
           "required", "anyOf", "pattern", "default", "example", "propertyOrdering", "minItems",
           "maxItems", "minProperties", "maxProperties", "minLength", "maxLength", "minimum",
           "maximum"}


def walk(schema):
    """Yield every schema node of a cleaned schema."""
    yield schema
    for sub in (schema.get("properties") or {}).values():
        yield from walk(sub)
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"])
    for sub in schema.get("anyOf") or []:
        yield from walk(sub)


def assert_gemini_subset(schema):
    for node in walk(schema):
        assert set(node) <= ALLOWED, set(node) - ALLOWED
        assert not set(node) & FORBIDDEN
        assert not isinstance(node.get("type"), list)
        if "enum" in node:
            assert all(isinstance(v, str) for v in node["enum"])
            assert node.get("type") == "string"
        if node.get("type") == "object" and "properties" in node:
            assert node["properties"]
        if node.get("type") == "array":
            assert "items" in node


def test_typical_openai_strict_schema():
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name", "format": "uri"},
            "unit": {"type": ["string", "null"], "enum": ["c", "f", None]},
            "days": {"type": "integer", "exclusiveMinimum": 0, "maximum": 14},
            "when": {"type": "string", "format": "date-time"},
        },
        "required": ["city", "unit", "ghost"],
        "additionalProperties": False,
        "strict": True,
    }
    original = copy.deepcopy(schema)
    out, lossy = clean_with_report(schema)
    assert schema == original  # input untouched
    assert not lossy
    assert out == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["c", "f"], "nullable": True},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
            "when": {"type": "string", "format": "date-time"},
        },
        "required": ["city", "unit"],
    }
    assert_gemini_subset(out)


def test_const_becomes_single_enum():
    out = clean_schema({"type": "object", "properties": {"kind": {"const": "circle"}}})
    assert out["properties"]["kind"] == {"type": "string", "enum": ["circle"]}


def test_anyof_null_collapses_to_nullable():
    out = clean_schema({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}],
                        "description": "count", "default": None})
    assert out == {"type": "integer", "minimum": 0, "description": "count", "nullable": True}


def test_anyof_several_kept():
    out = clean_schema({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]})
    assert out == {"anyOf": [{"type": "string"}, {"type": "integer"}], "nullable": True}


def test_type_list_of_two_real_types_becomes_anyof():
    out = clean_schema({"type": ["string", "number"], "description": "id"})
    assert out == {"anyOf": [{"type": "string"}, {"type": "number"}], "description": "id"}


def test_oneof_treated_as_anyof():
    out = clean_schema({"oneOf": [{"type": "string"}, {"type": "boolean"}]})
    assert out == {"anyOf": [{"type": "string"}, {"type": "boolean"}]}


def test_refs_and_defs_inlined():
    schema = {
        "type": "object",
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"},
                                                             "y": {"type": "number"}},
                            "required": ["x", "y"]}},
        "properties": {"a": {"$ref": "#/$defs/Point", "description": "start"},
                       "b": {"$ref": "#/definitions/Old"}},
        "definitions": {"Old": {"type": "string"}},
    }
    out, lossy = clean_with_report(schema)
    assert not lossy
    assert out["properties"]["a"] == {"type": "object", "description": "start",
                                      "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                                      "required": ["x", "y"]}
    assert out["properties"]["b"] == {"type": "string"}
    assert_gemini_subset(out)


def test_pydantic_allof_ref_pattern():
    schema = {"$defs": {"Color": {"enum": ["red", "green"], "title": "Color", "type": "string"}},
              "properties": {"color": {"allOf": [{"$ref": "#/$defs/Color"}], "description": "c"}},
              "required": ["color"], "title": "Paint", "type": "object"}
    out = clean_schema(schema)
    assert out["properties"]["color"] == {"type": "string", "enum": ["red", "green"],
                                          "title": "Color", "description": "c"}


def test_recursive_ref_is_cut_and_flagged():
    schema = {"type": "object",
              "properties": {"name": {"type": "string"},
                             "children": {"type": "array", "items": {"$ref": "#"}}}}
    out, lossy = clean_with_report(schema)
    assert lossy
    assert_gemini_subset(out)
    as_json, sent = schema_for_gemini(schema, path="p")
    assert as_json and sent is not schema and sent == schema


def test_mutual_recursion_through_allof_terminates():
    schema = {"$defs": {"A": {"allOf": [{"$ref": "#/$defs/B"}]},
                        "B": {"allOf": [{"$ref": "#/$defs/A"}]}},
              "$ref": "#/$defs/A"}
    out, lossy = clean_with_report(schema)
    assert lossy
    json.dumps(out)


def test_exponential_refs_are_bounded():
    defs = {"L0": {"type": "string"}}
    for i in range(1, 30):
        defs[f"L{i}"] = {"type": "object", "properties": {
            "a": {"$ref": f"#/$defs/L{i-1}"}, "b": {"$ref": f"#/$defs/L{i-1}"}}}
    out, lossy = clean_with_report({"$defs": defs, "$ref": "#/$defs/L29"})
    assert lossy
    assert len(json.dumps(out)) < 2_000_000


def test_map_type_additional_properties_is_lossy():
    schema = {"type": "object", "additionalProperties": {"type": "integer"}}
    as_json, sent = schema_for_gemini(schema, path="p")
    assert as_json and sent == schema
    assert clean_schema(schema) == {"type": "object"}


def test_empty_properties_dropped():
    assert clean_schema({"type": "object", "properties": {}, "required": []}) == {"type": "object"}


def test_array_without_items_gets_items():
    out, lossy = clean_with_report({"type": "array"})
    assert out == {"type": "array", "items": {"type": "string"}} and lossy


def test_tuple_items():
    out, lossy = clean_with_report({"type": "array", "prefixItems": [{"type": "string"},
                                                                     {"type": "integer"}]})
    assert lossy
    assert out["items"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}


def test_numeric_enum_kept_as_description():
    out, lossy = clean_with_report({"type": "integer", "enum": [1, 2, 3], "description": "Level."})
    assert lossy
    assert out == {"type": "integer", "description": "Level. Allowed values: 1, 2, 3."}


def test_untyped_enum_becomes_string_enum():
    assert clean_schema({"enum": ["a", "b"]}) == {"type": "string", "enum": ["a", "b"]}
    out, lossy = clean_with_report({"enum": ["a", 1, True]})
    assert out == {"type": "string", "enum": ["a", "1", "true"]} and lossy


def test_examples_to_example_and_unknown_keys_dropped():
    out = clean_schema({"type": "string", "examples": ["x"], "$id": "i", "contentEncoding": "b",
                        "deprecated": True, "readOnly": True})
    assert out == {"type": "string", "example": "x"}


def test_untyped_any_is_lossy():
    schema = {"type": "object", "properties": {"value": {"description": "anything"}}}
    as_json, _ = schema_for_gemini(schema, path="p")
    assert as_json


def test_json_schema_passthrough_drops_root_meta_only():
    schema = {"$schema": "x", "strict": True, "type": "object", "additionalProperties": {"type": "string"}}
    as_json, sent = schema_for_gemini(schema, path="p")
    assert as_json and sent == {"type": "object", "additionalProperties": {"type": "string"}}


@pytest.mark.parametrize("bad, where", [
    ({"type": 5}, "schema.type"),
    ({"type": "object", "properties": []}, "schema.properties"),
    ({"type": "object", "properties": {"a": 3}}, "schema.properties.a"),
    ({"$ref": "#/$defs/missing"}, "schema.$ref"),
    ({"$ref": "http://example.com/s.json"}, "schema.$ref"),
    ({"anyOf": {}}, "schema.anyOf"),
    ({"enum": "abc"}, "schema.enum"),
    ("nope", "schema"),
])
def test_malformed_schema_names_the_field(bad, where):
    with pytest.raises(TranslationError) as err:
        clean_schema(bad)
    assert err.value.message.startswith(where + ":")


def test_deep_nesting_is_bounded():
    node = {"type": "string"}
    for _ in range(200):
        node = {"type": "object", "properties": {"x": node}}
    out, lossy = clean_with_report(node)
    assert lossy
    json.dumps(out)
