import json
from pathlib import Path

import fsspec
import polars as pl
import pytest

from factory.config import PromptsConfig
from factory.prompts import PromptsFileError, load_prompts, prepare_prompts, read_rows

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
    assert (
        "- name: Air Fryer" in user and "capacity: 5.8 qt" in user and user.endswith("||how big?")
    )  # issue 25: no placeholder


DEMO_TEMPLATE = (Path(__file__).resolve().parent.parent / "conf" / "prompts" / "user_template.txt").read_text().strip()


def test_an_empty_history_renders_no_placeholder_and_no_heading():
    """Issue 25: `Conversation so far: (none)` was copied by the demo's 135M model as its answer (and judged 100)."""
    history = [{"role": "user", "content": "blue one?"}, {"role": "assistant", "content": "link 3"}]
    valid, _ = prepare_prompts(rows(GOOD, {**GOOD, "id": "p2", "history": history}), PromptsConfig(), "", DEMO_TEMPLATE)
    empty, full = (m[-1]["content"] for m in valid["messages"].to_list())
    assert "(none)" not in empty and "Conversation so far" not in empty
    assert (
        empty == "Product info:\n- name: Air Fryer\n- price: $79\n- attributes: capacity: 5.8 qt\n- link: 3\n\n"
        "Viewer comment:\nhow big?\n\nReply to the viewer as the host."
    )
    assert "Conversation so far:\nViewer: blue one?\nHost: link 3\n\nViewer comment:" in full
    default, _ = prepare_prompts(rows(GOOD), PromptsConfig())  # the built-in template too
    assert (
        "(none)" not in default["messages"][0][-1]["content"]
        and "Conversation" not in default["messages"][0][-1]["content"]
    )


def test_prompts_speakers_name_the_history_turns():
    history = [{"role": "观众", "content": "有货吗"}, {"role": "主播", "content": "有的哦"}]
    cfg = PromptsConfig(roles={"观众": "user", "主播": "assistant"}, speakers={"user": "观众", "assistant": "主播"})
    valid, _ = prepare_prompts(rows({**GOOD, "history": history}), cfg, "", "{history}")
    assert valid["messages"][0][0]["content"] == "观众: 有货吗\n主播: 有的哦"
    with pytest.raises(Exception, match=r"prompts\.speakers\.viewer"):
        PromptsConfig(speakers={"viewer": "x"})


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
        handle.write(
            json.dumps(GOOD) + "\n{broken\n" + json.dumps({**GOOD, "id": "p3", "question": "another one?"}) + "\n"
        )
    valid, invalid = load_prompts(PromptsConfig(path=url))
    assert valid["prompt_id"].to_list() == ["p1", "p3"]
    assert "line 2: not valid JSON" in invalid["reason"][0]
    limited, _ = load_prompts(PromptsConfig(path=url, limit=1))
    assert limited.height == 1


def test_parquet_input(tmp_path):
    path = tmp_path / "p.parquet"
    pl.DataFrame([{"id": "a", "product_info": "plain text info", "question": "q?", "history": None}]).write_parquet(
        path
    )
    valid, invalid = load_prompts(PromptsConfig(path=str(path)))
    assert valid["prompt_id"].to_list() == ["a"] and valid["product_info"][0] == "plain text info"
    assert invalid.height == 0


def test_missing_file_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="prompts.path"):
        list(read_rows("/no/such/file.jsonl"))


# -- the bad-input corpus (tests/data/bad_inputs/make.py writes it): every row accounted -------------
CORPUS = Path(__file__).resolve().parent / "data" / "bad_inputs"
NOT_UTF8 = "not valid UTF-8"
# file -> (valid prompt ids, [(row_index, reason)] in the ledger), or the error that names the file
OUTCOMES = {
    "invalid_utf8.jsonl": (["p1", "p3"], [(1, "invalid_utf8.jsonl line 2: not valid UTF-8 (byte 0xe9 at offset 33)")]),
    "mixed_types.jsonl": (["1", "p2", "3", "p4"], []),
    "bom.jsonl": (["p1", "p2"], []),
    "empty.jsonl": ([], [(None, "empty.jsonl: empty file (0 bytes), no rows")]),
    "blank_lines.jsonl": ([], [(None, "blank_lines.jsonl: no rows (only blank lines)")]),
    "empty.parquet": ([], [(None, "empty.parquet: empty file (0 bytes), no rows")]),
    "zero_rows.parquet": ([], [(None, "zero_rows.parquet: no rows (0-row Parquet file)")]),
    "invalid_utf8.parquet": (["p1", "p3"], [(1, "invalid_utf8.parquet row 2: column question is not valid UTF-8")]),
    "array.json": (["p1", "p2"], [(2, "row is not an object")]),
    "lines.json": (["p1", "p2"], []),
    "truncated.parquet": r"truncated\.parquet is not a readable Parquet file \(ArrowInvalid: ",
    "garbage.parquet": r"garbage\.parquet is not a readable Parquet file \(ArrowInvalid: ",
    "broken_array.json": r"broken_array\.json is not a valid JSON array \(Expecting ',' delimiter at line 3 column 3\)",
    "prompts.csv": r"prompts\.csv is not a prompts file \(CSV cannot hold the product_info object",
    "pathological.jsonl": (
        ["p1", "p6"],
        [
            (1, "pathological.jsonl line 2: not usable JSON (nested deeper than a JSON reader goes)"),
            (
                2,
                "pathological.jsonl line 3: not usable JSON (Exceeds the limit (4300 digits) for integer string "
                "conversion: value has 5000 digits)",
            ),
            (
                3,
                "pathological.jsonl line 4: field 'question' holds text that is not valid Unicode (a lone surrogate "
                "\\ud800), which UTF-8 cannot encode",
            ),
            (4, "pathological.jsonl line 5: nested more than 64 levels deep (field 'product_info')"),
        ],
    ),
    "deep_array.json": (
        r"deep_array\.json is a JSON array that cannot be read \(nested deeper than a JSON reader goes\)"
    ),
}


def test_the_corpus_is_what_the_outcomes_table_covers():
    assert sorted(p.name for p in CORPUS.iterdir() if p.suffix != ".py") == sorted(OUTCOMES)


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_each_bad_input_becomes_ledger_rows_or_one_error_naming_the_file(name):
    expected = OUTCOMES[name]
    cfg = PromptsConfig(path=str(CORPUS / name))
    if isinstance(expected, str):
        with pytest.raises(PromptsFileError, match=r"^prompts\.path: \S*" + expected):
            load_prompts(cfg)
        return
    valid, invalid = load_prompts(cfg)
    ids, ledger = expected
    assert valid["prompt_id"].to_list() == ids
    assert list(zip(invalid["row_index"].to_list(), invalid["reason"].to_list())) == ledger


def test_a_bad_line_keeps_its_text_in_the_ledger():
    _, invalid = load_prompts(PromptsConfig(path=str(CORPUS / "invalid_utf8.jsonl")))
    assert invalid["raw"][0] == '{"id": "p2", "product_info": "caf\ufffd \ufffd", "question": "q"}'


def test_columns_of_mixed_types_are_kept_as_text():
    valid, _ = load_prompts(PromptsConfig(path=str(CORPUS / "mixed_types.jsonl")))
    assert valid["id"].to_list() == ["1", "p2", "3", "p4"]
    assert valid["tag"].to_list() == ["5", "new", "true", '{"a": 1}']


def test_an_input_field_named_like_a_prompts_column_is_kept_apart():
    valid, _ = prepare_prompts(rows({**GOOD, "row_index": "r-7", "prompt_id": "theirs"}), PromptsConfig())
    row = valid.row(0, named=True)
    assert (row["row_index"], row["input_row_index"], row["prompt_id"], row["input_prompt_id"]) == (
        0,
        "r-7",
        "p1",
        "theirs",
    )


def test_a_folder_reads_every_prompts_file_and_accounts_for_an_empty_one(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    (tmp_path / "b.json").write_bytes((CORPUS / "array.json").read_bytes())
    (tmp_path / "c.jsonl").write_bytes(b"")
    (tmp_path / "_SUCCESS").write_bytes(b"")  # marker files (Arrow/Spark rule): not data
    (tmp_path / ".DS_Store").write_bytes(b"\x00")
    valid, invalid = load_prompts(PromptsConfig(path=str(tmp_path)))
    assert valid["prompt_id"].to_list() == ["p1", "p2"]  # b.json's p1 is a duplicate of a.jsonl's
    assert invalid["reason"].to_list() == [
        "duplicate prompt_id 'p1'",
        "row is not an object",
        "c.jsonl: empty file (0 bytes), no rows",
    ]
    assert invalid["row_index"].to_list() == [1, 3, None]


@pytest.mark.parametrize(
    "extra, message",
    [
        ("notes.txt", r"notes\.txt is not a prompts file \(prompts are read from \.parquet, \.jsonl, \.json files\)"),
        ("more.csv", r"more\.csv is not a prompts file \(CSV cannot"),
        ("older/", r"holds a subfolder older/"),
    ],
)
def test_a_folder_with_anything_else_is_one_error_naming_it(tmp_path, extra, message):
    (tmp_path / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    if extra.endswith("/"):
        (tmp_path / extra).mkdir()
        (tmp_path / extra / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    else:
        (tmp_path / extra).write_text("x\n")
    with pytest.raises(PromptsFileError, match=message):
        load_prompts(PromptsConfig(path=str(tmp_path)))


def test_a_folder_without_prompts_files_is_an_error(tmp_path):
    (tmp_path / "_SUCCESS").write_bytes(b"")
    with pytest.raises(PromptsFileError, match=r"holds no prompts file"):
        load_prompts(PromptsConfig(path=str(tmp_path)))


def test_limit_counts_rows_not_empty_files(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"")
    (tmp_path / "b.jsonl").write_text(
        "".join(json.dumps({**GOOD, "id": f"p{i}", "question": f"q{i}?"}) + "\n" for i in range(5))
    )
    valid, invalid = load_prompts(PromptsConfig(path=str(tmp_path), limit=2))
    assert valid["prompt_id"].to_list() == ["p0", "p1"] and invalid["row_index"].to_list() == [None]


def test_the_same_prompt_text_under_another_id_is_a_ledger_row_unless_asked():
    row = {"product_info": {"name": "Mug"}, "history": [], "question": "is it big?"}
    rows = [(0, {"id": "a", **row}), (1, {"id": "b", **row}), (2, {"id": "c", **row, "question": "color?"})]
    valid, invalid = prepare_prompts(rows, PromptsConfig())
    assert valid["prompt_id"].to_list() == ["a", "c"]
    assert invalid["row_index"].to_list() == [1] and invalid["prompt_id"].to_list() == ["b"]
    assert invalid["reason"][0].startswith("duplicate prompt text: the same messages as prompt_id 'a' (row 0)")
    kept, none = prepare_prompts(rows, PromptsConfig(dedupe_text=False))
    assert kept["prompt_id"].to_list() == ["a", "b", "c"] and none.height == 0


# -- prompts.roles (issue 16): the source's own role names ------------------------------------------
SOURCE_HISTORY = [{"role": "观众", "content": "PQQ介绍下呢"}, {"role": "主播", "content": "下个品就是来讲11号宝贝"}]


def test_history_with_the_sources_roles_is_mapped_by_prompts_roles():
    row = {**GOOD, "history": SOURCE_HISTORY, "question": "为啥PQQ单瓶贵很多"}
    _, invalid = prepare_prompts(rows(row), PromptsConfig(), "", "{history}|{question}")
    assert "role '观众': map it with prompts.roles" in invalid["reason"][0]
    cfg = PromptsConfig(roles={"观众": "user", "主播": "assistant"})
    valid, invalid = prepare_prompts(rows(row), cfg, "", "{history}|{question}")
    assert invalid.height == 0
    assert valid["history"][0].to_list() == [
        {"role": "user", "content": "PQQ介绍下呢"},
        {"role": "assistant", "content": "下个品就是来讲11号宝贝"},
    ]
    assert valid["messages"][0][0]["content"] == "Viewer: PQQ介绍下呢\nHost: 下个品就是来讲11号宝贝|为啥PQQ单瓶贵很多"


def test_prompts_roles_map_ready_messages_too_and_leave_standard_roles_alone():
    messages = [{"role": "主播", "content": "在的"}, {"role": "user", "content": "有货吗"}]
    cfg = PromptsConfig(roles={"主播": "assistant"})
    valid, invalid = prepare_prompts(rows({"id": "m", "messages": messages}), cfg)
    assert invalid.height == 0 and [m["role"] for m in valid["messages"][0]] == ["assistant", "user"]


def test_prompts_roles_from_yaml_and_the_command_line_and_a_bad_target_names_its_key(tmp_path):
    from factory.config import ConfigError, load

    path = tmp_path / "c.yaml"
    path.write_text("prompts:\n  roles: {观众: user, 主播: assistant}\n")
    assert load(path).prompts.roles == {"观众": "user", "主播": "assistant"}
    assert load(None, ["prompts.roles.viewer=user"]).prompts.roles == {"viewer": "user"}
    with pytest.raises(ConfigError, match="prompts.roles.主播"):
        load(None, ["prompts.roles.主播=host"])


# -- a prompt's identity for resume is its id and its rendered text ------------------------------------
def _identity_run(tmp_path, questions, *extra, engine=None, **kw):
    """`factory run` (fake engine, in process) on prompts a..c with these questions; the manifest."""
    from tests.fakes import FakeEngine, seeded_reply
    from tests.test_run import local_run, synthetic_cfg

    def reply(request):  # a sample names the question it answered; a judge's reply as usual
        if request.json_schema is not None:
            return seeded_reply(request)
        return (
            f"<think>{'hmm ' * (request.seed % 3)}</think>about " + request.messages[-1]["content"].rsplit(":", 1)[-1]
        )

    path = tmp_path / "prompts.jsonl"
    path.write_text(
        "".join(json.dumps({"id": pid, "product_info": PRODUCT, "question": q}) + "\n" for pid, q in questions.items())
    )
    cfg = synthetic_cfg(tmp_path, 1, f"prompts.path={path}", "pairs.filter_before_judge=false", *extra)
    return local_run(cfg, engine or FakeEngine(reply=reply), **kw)


def _pair_texts(store):
    pairs = store.read("pairs")
    return {
        row["prompt_id"]: (row["prompt"][-1]["content"], row["chosen"][-1]["content"], row["rejected"][-1]["content"])
        for row in pairs.iter_rows(named=True)
    }


def test_a_prompt_whose_text_changed_under_its_id_is_sampled_and_judged_again_never_paired_across_texts(
    tmp_path, capsys
):
    from factory.rundir.store import RunStore

    first = {"a": "is it blue?", "b": "how big is it?", "c": "does it ship free?"}
    _identity_run(tmp_path, first)
    fixed = {**first, "b": "how heavy is it?"}
    manifest = _identity_run(tmp_path, fixed)
    # k=2: the changed prompt's 2 samples and their 2 judgments, nothing else
    assert manifest["requests"] == {"sampler": 2, "judge": 2}
    assert manifest["counts"]["prompts_changed"] == 1
    assert "1 prompt(s) changed text under the same prompt_id since the last run ('b')" in capsys.readouterr().err
    store = RunStore(str(tmp_path / "run"))
    for pid, (prompt, chosen, rejected) in _pair_texts(store).items():
        question = fixed[pid]
        assert prompt.endswith(question) and chosen.endswith(question) and rejected.endswith(question), pid
    samples = store.read("samples")
    assert samples.filter(pl.col("prompt_id") == "b").height == 4  # the old samples stay stored, unused
    for export in ("filter_long", "dp_sft"):  # the SFT exports take the same samples
        sft = store.read(f"sft/{export}")
        assert sft.height and all(
            m[-2]["content"].endswith(fixed[pid]) and m[-1]["content"].endswith(fixed[pid])
            for pid, m in zip(sft["prompt_id"].to_list(), sft["messages"].to_list())
        ), export
    # the read-only rebuild reads the same: only samples of the text in prompts/
    from factory.commands.rebuild import rebuild_pairs

    rebuild_pairs(str(tmp_path / "run"))
    assert all(c.endswith(fixed[p]) and r.endswith(fixed[p]) for p, (_, c, r) in _pair_texts(store).items())
    again = _identity_run(tmp_path, fixed)
    assert again["requests"] == {"sampler": 0, "judge": 0} and again["counts"]["prompts_changed"] == 0
    back = _identity_run(tmp_path, first)  # back to the first text: its stored samples and judgments answer it
    assert back["requests"] == {"sampler": 0, "judge": 0} and back["counts"]["prompts_changed"] == 1
    assert all(c.endswith(first[p]) for p, (_, c, _r) in _pair_texts(store).items())
    grown = _identity_run(tmp_path, first, "sampler.k=3")  # growth asks only the new keys: one per prompt
    assert grown["requests"] == {"sampler": 3, "judge": 3} and grown["counts"]["prompts_changed"] == 0


def _drop_columns(store, table, *names):
    """Rewrite a table's parts without `names`: a run directory of the version before they were kept."""
    for path in store.parts(table):
        part = store.read_part(path)
        store.merge(table, [path], part.drop_columns([n for n in names if n in part.column_names]))


def test_an_old_run_directory_without_prompt_hashes_resumes_and_a_changed_text_is_asked_again(tmp_path, capsys):
    from factory.rundir.store import RunStore

    first = {"a": "is it blue?", "b": "how big is it?", "c": "does it ship free?"}
    _identity_run(tmp_path, first)
    store = RunStore(str(tmp_path / "run"))
    _drop_columns(store, "samples", "prompt_hash")
    _drop_columns(store, "prompts", "prompt_hash")
    _drop_columns(store, "judgments", "sample_created_at")  # older still: judgments not tied to their sample row
    same = _identity_run(tmp_path, first)
    assert same["requests"] == {"sampler": 0, "judge": 0}
    assert "6 stored sample(s) had no prompt_hash" in capsys.readouterr().err
    assert store.read("samples")["prompt_hash"].null_count() == 0
    fixed = {**first, "c": "when does it arrive?"}
    manifest = _identity_run(tmp_path, fixed)
    assert manifest["requests"] == {"sampler": 2, "judge": 2} and manifest["counts"]["prompts_changed"] == 1
    for pid, (prompt, chosen, rejected) in _pair_texts(store).items():
        assert prompt.endswith(fixed[pid]) and chosen.endswith(fixed[pid]) and rejected.endswith(fixed[pid]), pid


@pytest.mark.parametrize(
    "template, message",
    [
        (
            "{product_info}\n{viewer_name} asks: {question}",
            r"prompts\.user_template_file: unknown field \{viewer_name\}",
        ),
        (
            "Info: {product_info} {history}\nQ: {question} (answer in { braces)",
            r"prompts\.user_template_file: the template does not parse: .*'\}'",
        ),
        ("Q: {question} }", r"prompts\.user_template_file: the template does not parse: Single '\}'"),
        ("Q: {}", r"prompts\.user_template_file: a positional field"),
    ],
)
def test_a_user_template_that_cannot_render_fails_preflight_naming_the_key_and_field(tmp_path, template, message):
    from factory.config import ConfigError
    from factory.graph import RunGraph
    from tests.fakes import FakeEngine
    from tests.test_run import local_run, synthetic_cfg

    path = tmp_path / "template.txt"
    path.write_text(template)
    cfg = synthetic_cfg(tmp_path, 2, f"prompts.user_template_file={path}")
    with pytest.raises(ConfigError, match=message):
        RunGraph(cfg).preflight()
    engine = FakeEngine()
    with pytest.raises(ConfigError, match=message):
        local_run(cfg, engine)
    assert engine.requests == [] and not (tmp_path / "run" / "prompts").exists()


def test_an_unknown_url_scheme_for_prompts_path_is_one_error_naming_the_key(tmp_path):
    from factory.config import ConfigError
    from factory.graph import RunGraph
    from tests.test_run import synthetic_cfg

    cfg = synthetic_cfg(tmp_path, 2, "prompts.path=hdfx://bucket/prompts.jsonl")
    with pytest.raises(ConfigError, match=r"prompts\.path: hdfx://bucket/prompts\.jsonl: unknown URL scheme hdfx://"):
        RunGraph(cfg).preflight()
    with pytest.raises(PromptsFileError, match=r"prompts\.path: .*unknown URL scheme hdfx://"):
        load_prompts(PromptsConfig(path="hdfx://bucket/prompts.jsonl"))


def test_a_run_records_every_unusable_row_and_goes_on(tmp_path):
    from factory.rundir.store import RunStore
    from tests.test_run import local_run, synthetic_cfg

    cfg = synthetic_cfg(tmp_path, 1, f"prompts.path={CORPUS / 'pathological.jsonl'}")
    manifest = local_run(cfg)
    counts = manifest["counts"]
    assert (counts["prompts_in"], counts["prompts_valid"], counts["prompts_invalid"]) == (6, 2, 4)
    assert counts["samples_ok"] == 2 * 2 and manifest["requests"]["sampler"] == 4
    ledger = RunStore(str(tmp_path / "run")).read("invalid")
    assert ledger["row_index"].to_list() == [1, 2, 3, 4] and ledger["reason"].null_count() == 0
