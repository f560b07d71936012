import json

import fsspec
import polars as pl
import pytest

from factory.config import PromptsConfig
from factory.prompts import load_prompts, prepare_prompts, read_rows

PRODUCT = {"name": "Air Fryer", "price": "$79", "attributes": {"capacity": "5.8 qt"}, "link": 3}
GOOD = {"id": "p1", "product_info": PRODUCT, "history": [], "question": "how big?"}


def rows(*items):
    return list(enumerate(items))


def test_fields_are_rendered_with_the_template_and_system_prompt():
    valid, invalid = prepare_prompts(rows(GOOD), PromptsConfig(), "SYSTEM", "{product_info}|{history}|{question}")
    assert invalid.height == 0
    row = valid.row(0, named=True)
    assert row["prompt_id"] == "p1"
    assert row["messages"][0] == {"role": "system", "content": "SYSTEM"}
    user = row["messages"][1]["content"]
    assert "- name: Air Fryer" in user and "capacity: 5.8 qt" in user and user.endswith("|(none)|how big?")


def test_history_is_rendered_as_speaker_turns():
    history = [{"role": "user", "content": "blue one?"}, {"role": "assistant", "content": "link 3"}]
    valid, _ = prepare_prompts(rows({**GOOD, "history": history}), PromptsConfig(), "", "{history}")
    assert valid["messages"][0][0]["content"] == "Viewer: blue one?\nHost: link 3"
    assert valid["history"][0].to_list() == history


@pytest.mark.parametrize(
    "row, reason",
    [
        ({**GOOD, "question": ""}, "empty field 'question'"),
        ({"id": "x", "history": [], "question": "q"}, "missing field 'product_info'"),
        ({**GOOD, "product_info": {}}, "empty field 'product_info'"),
        ({**GOOD, "history": "not a list"}, "history is not a list"),
        ({**GOOD, "history": [{"role": "robot", "content": "x"}]}, "history has a turn"),
        ({**GOOD, "question": 42}, "is not text"),
    ],
)
def test_bad_rows_are_recorded_with_their_reason_and_the_rest_goes_on(row, reason):
    valid, invalid = prepare_prompts(rows(GOOD | {"id": "ok"}, row), PromptsConfig())
    assert valid["prompt_id"].to_list() == ["ok"]
    assert invalid.height == 1
    record = invalid.row(0, named=True)
    assert reason in record["reason"] and record["row_index"] == 1 and record["stage"] == "prompts"
    assert json.loads(record["raw"]) == row


def test_duplicate_ids_keep_the_first_row():
    valid, invalid = prepare_prompts(rows(GOOD, GOOD), PromptsConfig())
    assert valid.height == 1 and "duplicate prompt_id 'p1'" in invalid["reason"][0]


def test_messages_column_is_used_as_is_and_id_defaults_to_a_hash():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]
    cfg = PromptsConfig(id_column=None)
    a, _ = prepare_prompts(rows({"messages": messages}), cfg)
    b, _ = prepare_prompts(rows({"messages": messages, "other": 1}), cfg)
    assert a["messages"][0].to_list() == messages and a["question"][0] == "hi"
    assert a["prompt_id"][0] == b["prompt_id"][0] and len(a["prompt_id"][0]) == 16
    _, bad = prepare_prompts(rows({"messages": [{"role": "assistant", "content": "x"}]}), cfg)
    assert "must end with a non-empty user message" in bad["reason"][0]


def test_jsonl_on_memory_fs_with_limit_and_a_broken_line():
    url = "memory://prompts-test/p.jsonl"
    with fsspec.open(url, "w") as handle:
        handle.write(json.dumps(GOOD) + "\n{broken\n" + json.dumps({**GOOD, "id": "p3"}) + "\n")
    valid, invalid = load_prompts(PromptsConfig(path=url))
    assert valid["prompt_id"].to_list() == ["p1", "p3"]
    assert "line 2: not valid JSON" in invalid["reason"][0]
    limited, _ = load_prompts(PromptsConfig(path=url, limit=1))
    assert limited.height == 1


def test_parquet_input(tmp_path):
    path = tmp_path / "p.parquet"
    pl.DataFrame([{"id": "a", "product_info": "plain text info", "question": "q?", "history": None}]).write_parquet(path)
    valid, invalid = load_prompts(PromptsConfig(path=str(path)))
    assert valid["prompt_id"].to_list() == ["a"] and valid["product_info"][0] == "plain text info"
    assert invalid.height == 0


def test_missing_file_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="prompts.path"):
        list(read_rows("/no/such/file.jsonl"))
