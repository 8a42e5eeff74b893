from __future__ import annotations

from pathlib import Path

from qexp.fixtures import FIXTURES_DIR, MMLU_SUBJECTS, write_fixtures
from qexp.files import read_jsonl


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _jsonl(path: Path) -> list[dict]:
    return read_jsonl(path)


def test_shipped_fixtures_are_what_the_generator_writes(tmp_path):
    assert _files(write_fixtures(tmp_path)) == _files(FIXTURES_DIR)


def test_arc_has_mixed_labels_and_three_to_five_choices():
    rows = _jsonl(FIXTURES_DIR / "allenai/ai2_arc/ARC-Challenge/test.jsonl") + \
        _jsonl(FIXTURES_DIR / "allenai/ai2_arc/ARC-Easy/test.jsonl")
    assert {len(r["choices"]["text"]) for r in rows} == {3, 4, 5}
    assert any(r["answerKey"].isdigit() for r in rows) and any(r["answerKey"].isalpha() for r in rows)
    assert all(r["answerKey"] in r["choices"]["label"] for r in rows)
    assert all(len(r["choices"]["text"]) == len(r["choices"]["label"]) for r in rows)


def test_hellaswag_has_string_labels_and_bracket_artifacts():
    rows = _jsonl(FIXTURES_DIR / "Rowan/hellaswag/data/validation.jsonl")
    assert all(isinstance(r["label"], str) and len(r["endings"]) == 4 for r in rows)
    assert any("[title]" in r["ctx"] or "[step]" in r["ctx"] for r in rows)
    assert set(rows[0]) == {"ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id",
                            "split", "split_type", "label"}


def test_mmlu_has_all_57_subjects_with_test_and_dev():
    assert len(MMLU_SUBJECTS) == 57
    readme = (FIXTURES_DIR / "cais/mmlu/README.md").read_text()
    for subject in MMLU_SUBJECTS:
        assert f"config_name: {subject}\n" in readme
        for split in ("test", "dev"):
            rows = _jsonl(FIXTURES_DIR / f"cais/mmlu/{subject}/{split}.jsonl")
            assert rows and all(r["subject"] == subject and len(r["choices"]) == 4 and r["answer"] in range(4)
                                for r in rows)


def test_committed_notebook_has_no_outputs():
    import nbformat

    notebook = nbformat.read(Path(__file__).resolve().parents[2] / "notebooks" / "compare.ipynb", as_version=4)
    assert all(not cell.get("outputs") and not cell.get("execution_count")
               for cell in notebook.cells if cell.cell_type == "code")
