"""Sphinx directives of the dtlive documentation: the message contracts rendered from their JSON Schema files.

``.. dtlive-schema:: dtlive.monitor/1`` renders the schema file the package ships for that schema id: its title
and description, one table row per field (dotted path, type, required or not, constraints and description,
nested objects and array items flattened) and the file itself, so the page can never disagree with the contract
the code validates against.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.application import Sphinx

_RULES = (("minimum", ">= {}"), ("maximum", "<= {}"), ("exclusiveMinimum", "> {}"), ("exclusiveMaximum", "< {}"),
          ("minLength", "at least {} characters"), ("maxLength", "at most {} characters"),
          ("pattern", "matches {}"), ("format", "format {}"))


def _resolve(node: dict, root: dict) -> dict:
    ref = node.get("$ref")
    if not ref or not ref.startswith("#/"):
        return node
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _type(node: dict, root: dict) -> str:
    node = _resolve(node, root)
    if "const" in node:
        return f"const {json.dumps(node['const'])}"
    if "enum" in node:
        return "one of " + ", ".join(json.dumps(v) for v in node["enum"])
    kinds = node.get("type")
    if isinstance(kinds, list):
        text = " | ".join(kinds)
    elif kinds:
        text = kinds
    elif "oneOf" in node or "anyOf" in node:
        text = " | ".join(_type(n, root) for n in node.get("oneOf", node.get("anyOf", [])))
    else:
        text = "any"
    if kinds == "array" or (isinstance(kinds, list) and "array" in kinds):
        items = node.get("items")
        if isinstance(items, dict):
            text += f" of {_type(items, root)}"
        lo, hi = node.get("minItems"), node.get("maxItems")
        if lo is not None and lo == hi:
            text += f", length {lo}"
        elif lo or hi is not None:
            text += f", length {lo or 0}..{'' if hi is None else hi}"
    return text


def _notes(node: dict, root: dict) -> str:
    node = _resolve(node, root)
    parts = [rule.format(node[key]) for key, rule in _RULES if key in node]
    if node.get("additionalProperties") is False and "properties" in node:
        parts.append("no other fields")
    if node.get("description"):
        parts.append(node["description"])
    return "; ".join(parts)


def fields(schema: dict) -> Iterator[tuple[str, str, bool, str]]:
    """``(dotted path, type, required, notes)`` for every field of ``schema``, nested ones flattened.

    >>> s = {"properties": {"a": {"type": "integer", "minimum": 0}, "b": {"type": "object",
    ...      "properties": {"c": {"const": "x"}}, "required": ["c"]}}, "required": ["a"]}
    >>> list(fields(s))
    [('a', 'integer', True, '>= 0'), ('b', 'object', False, ''), ('b.c', 'const "x"', True, '')]
    """

    def walk(node: dict, prefix: str) -> Iterator[tuple[str, str, bool, str]]:
        node = _resolve(node, schema)
        required = set(node.get("required", ()))
        for name, sub in node.get("properties", {}).items():
            path = prefix + name
            yield path, _type(sub, schema), name in required, _notes(sub, schema)
            resolved = _resolve(sub, schema)
            if "properties" in resolved:
                yield from walk(resolved, path + ".")
            items = resolved.get("items")
            if isinstance(items, dict) and "properties" in _resolve(items, schema):
                yield from walk(items, path + "[].")
            extra = resolved.get("additionalProperties")
            if isinstance(extra, dict) and "properties" in _resolve(extra, schema):
                yield from walk(extra, path + ".<name>.")

    yield from walk(schema, "")


def _table(rows: list[tuple[str, str, bool, str]]) -> nodes.table:
    table = nodes.table(classes=["dtlive-schema-fields"])
    group = nodes.tgroup(cols=4)
    table += group
    for width in (22, 22, 8, 48):
        group += nodes.colspec(colwidth=width)

    def row(cells: list[nodes.Node]) -> nodes.row:
        r = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += cell
            r += entry
        return r

    head = nodes.thead()
    head += row([nodes.paragraph(text=t) for t in ("field", "type", "required", "constraints and meaning")])
    group += head
    body = nodes.tbody()
    for path, kind, required, notes in rows:
        name = nodes.paragraph()
        name += nodes.literal(text=path)
        body += row([name, nodes.paragraph(text=kind), nodes.paragraph(text="yes" if required else ""),
                     nodes.paragraph(text=notes)])
    group += body
    return table


class SchemaDirective(Directive):
    """``.. dtlive-schema:: SCHEMA_ID``: the shipped JSON Schema of one message, as a field table and as a file."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from dtlive.core.schemas import schema, schema_file

        schema_id = self.arguments[0]
        try:
            doc = schema(schema_id)
            filename = schema_file(schema_id)
        except (KeyError, ValueError, OSError) as e:
            raise self.error(f"dtlive-schema: no schema {schema_id!r}: {e}") from e
        out: list[nodes.Node] = []
        intro = nodes.paragraph()
        intro += nodes.strong(text=doc.get("title", schema_id))
        if doc.get("description"):
            intro += nodes.Text(". " + doc["description"])
        out.append(intro)
        out.append(_table(list(fields(doc))))
        where = nodes.paragraph()
        where += nodes.Text("The schema file, ")
        where += nodes.literal(text=f"dtlive/core/schemas/{filename}")
        where += nodes.Text(":")
        out.append(where)
        block = nodes.literal_block(text=json.dumps(doc, indent=1), language="json", classes=["dtlive-schema-json"])
        out.append(block)
        return out


def setup(app: Sphinx) -> dict:
    app.add_directive("dtlive-schema", SchemaDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
