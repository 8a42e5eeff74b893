from __future__ import annotations

import json

import pytest

from qexp.calibration import load_conversations, select, source_path, tokenize
from qexp.errors import DataError
from qexp.models import build_byte_tokenizer


def _write(path, records, cut: int = 0):
    text = json.dumps(records, indent=1)
    path.write_text(text[: len(text) - cut] if cut else text)
    load_conversations.cache_clear()
    return path


def _record(i: int, turns=None):
    return {"id": f"c{i}", "conversations": turns or [{"from": "human", "value": f"question {i}"},
                                                       {"from": "gpt", "value": f"answer {i}"}]}


def test_truncated_file_keeps_every_complete_record(tmp_path):
    path = _write(tmp_path / "s.json", [_record(i) for i in range(5)], cut=30)
    conversations = load_conversations(path)
    assert [c.id for c in conversations] == ["c0", "c1", "c2", "c3"]


def test_records_without_usable_turns_are_dropped(tmp_path):
    records = [_record(0), {"id": "x"}, _record(1, [{"from": "gpt", "value": "only an answer"}]),
               _record(2, [{"from": "human", "value": "   "}]), "not a dict", _record(3)]
    assert [c.id for c in load_conversations(_write(tmp_path / "s.json", records))] == ["c0", "c3"]


def test_roles_map_to_chat_template_roles(tmp_path):
    path = _write(tmp_path / "s.json", [_record(0, [{"from": "system", "value": "be brief"},
                                                   {"from": "human", "value": "hi"},
                                                   {"from": "gpt", "value": "hello"}])])
    assert load_conversations(path)[0].messages == (("system", "be brief"), ("user", "hi"), ("assistant", "hello"))


def test_not_json_is_a_data_error(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("this is not json")
    load_conversations.cache_clear()
    with pytest.raises(DataError, match="not a JSON array"):
        load_conversations(path)


def test_records_without_conversations_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="No usable conversations"):
        load_conversations(_write(tmp_path / "s.json", [{"id": "a", "text": "x"}]))


def test_selection_is_deterministic_nested_and_seeded(tmp_path):
    conversations = load_conversations(_write(tmp_path / "s.json", [_record(i) for i in range(600)]))
    big = [c.id for c in select(conversations, 512, seed=42)]
    small = [c.id for c in select(conversations, 215, seed=42)]
    assert big == [c.id for c in select(conversations, 512, seed=42)]
    assert small == big[:215]
    assert len(set(big)) == 512
    assert big != [c.id for c in select(conversations, 512, seed=7)]
    assert big[:50] != [f"c{i}" for i in range(50)]  # shuffled, not the file's head


def test_packaged_sharegpt_is_read_despite_truncation():
    conversations = load_conversations(source_path("package", None))
    assert len(conversations) > 17000
    assert all(any(role == "user" for role, _ in c.messages) for c in conversations[:100])


def test_tokenize_truncates_and_keeps_selection_order(tmp_path):
    conversations = load_conversations(_write(tmp_path / "s.json", [_record(i) for i in (7, 3, 5)]))
    tokenizer = build_byte_tokenizer()
    full = tokenize(list(conversations), tokenizer, max_seq_length=1000)
    dataset = tokenize(list(conversations), tokenizer, max_seq_length=20)
    assert dataset.column_names == ["input_ids", "attention_mask"]
    assert all(len(ids) > 20 for ids in full["input_ids"])  # so truncation has something to cut
    assert [len(ids) for ids in dataset["input_ids"]] == [20, 20, 20]
    assert [ids[:20] for ids in full["input_ids"]] == dataset["input_ids"]  # the first tokens are kept
    decoded = [tokenizer.decode(ids) for ids in dataset["input_ids"]]
    assert [d.split("question ")[1][0] for d in decoded] == ["7", "3", "5"]  # in selection order, not sorted


def test_heldout_slice_is_fixed_and_disjoint_from_every_selection():
    from qexp.calibration import HELDOUT_POOL, heldout

    conversations = load_conversations(source_path("package", None))
    held = [c.id for c in heldout(conversations, 100)]
    assert held == [c.id for c in heldout(conversations, 100)]
    assert held[:10] == [c.id for c in heldout(conversations, 10)]
    reserved = {c.id for c in heldout(conversations, HELDOUT_POOL)}
    for seed in (0, 42, 1234):
        for n in (16, 215, 512):
            assert not reserved & {c.id for c in select(conversations, n, seed)}
