"""The pieces the documentation is generated from, checked without building it: the schema tables list every
field of every message contract, and every page the site links to exists."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from dtlive.core.schemas import SCHEMA_IDS, schema

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
import dtlive_docs  # noqa: E402


@pytest.mark.parametrize("schema_id", SCHEMA_IDS)
def test_the_schema_table_lists_every_field_with_whether_it_is_required(schema_id):
    doc = schema(schema_id)
    rows = {path: (kind, required) for path, kind, required, _ in dtlive_docs.fields(doc)}
    for name in doc["properties"]:
        assert name in rows, name
        assert rows[name][1] == (name in doc.get("required", ())), name
    assert all(kind for kind, _ in rows.values())


def test_nested_fields_and_constraints_are_flattened():
    rows = {path: (kind, required, notes) for path, kind, required, notes in
            dtlive_docs.fields(schema("dtlive.monitor/1"))}
    assert rows["schema"][0] == 'const "dtlive.monitor/1"'
    assert rows["window.first_orbit"] == ("integer", True, ">= -1; -1: not known")
    assert rows["hits_per_chamber"][0].startswith("array of integer") and "length 4" in rows["hits_per_chamber"][0]
    status = {path: kind for path, kind, _, _ in dtlive_docs.fields(schema("dtlive.status/1"))}
    assert status["state"].startswith("one of ") and '"running"' in status["state"]


def test_every_message_contract_has_its_section_and_every_notebook_its_page():
    contracts = (DOCS / "contracts.md").read_text()
    assert sorted(re.findall(r"```\{dtlive-schema\} (\S+)", contracts)) == sorted(SCHEMA_IDS)
    listed = re.findall(r"^notebooks/(\S+)$", (DOCS / "notebooks.md").read_text(), re.M)
    assert listed == sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    assert (DOCS / "notebooks").resolve() == (ROOT / "notebooks").resolve()


def test_the_pages_link_only_to_pages_that_exist():
    for page in DOCS.rglob("*.md"):
        if "_build" in page.parts or page.name.startswith("dtlive."):
            continue
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.relative_to(ROOT)} -> {target}"
