"""template.json: what a template folder declares, so the fill never branches on a model's name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.repository import GENERATED_FILES, TEMPLATES, TemplateNeeds


def test_a_folder_without_template_json_needs_nothing(tmp_path: Path) -> None:
    assert TemplateNeeds.load(tmp_path) == TemplateNeeds()


def test_template_json_is_read_and_checked(tmp_path: Path) -> None:
    (tmp_path / "template.json").write_text(
        json.dumps({"files": ["prompt.json"], "snippets": {"steps": "snippets/x.pbtxt"}, "variables": {"a": "1"}})
    )
    assert TemplateNeeds.load(tmp_path) == TemplateNeeds(("prompt.json",), {"steps": "snippets/x.pbtxt"}, {"a": "1"})
    (tmp_path / "template.json").write_text(json.dumps({"file": ["prompt.json"]}))
    with pytest.raises(ValueError, match="unknown keys"):
        TemplateNeeds.load(tmp_path)
    (tmp_path / "template.json").write_text(json.dumps({"files": ["nothing.json"]}))
    with pytest.raises(ValueError, match="no generator"):
        TemplateNeeds.load(tmp_path)


def test_every_declared_need_exists() -> None:
    """Each template.json in the tree names generators and snippet files that exist."""
    declared = sorted(TEMPLATES.glob("*/template.json"))
    assert declared, "the prompt builders and audio ensembles declare their needs"
    for path in declared:
        needs = TemplateNeeds.load(path.parent)
        assert set(needs.files) <= set(GENERATED_FILES), path
        for snippet in needs.snippets.values():
            assert (TEMPLATES / snippet).is_file(), f"{path}: {snippet}"
