"""The judge-free exclusions (factory/pairs/prejudge.py): the kernel's own rules on the samples alone."""

import polars as pl
import pytest

from factory import pairs
from factory.config import ConfigError, PairsConfig, TermConfig
from factory.pairs import prejudge


def samples(rows):
    return pl.DataFrame(
        rows,
        schema=["prompt_id", "sample_idx", "completion_tokens", "finish_reason", "error", "answer"],
        orient="row",
    ).with_columns(pl.lit("").alias("reasoning"))


ROWS = [
    ("p1", 0, 40, "stop", None, "Link 3, yes."),
    ("p1", 1, 90, "stop", None, "x" * 120),  # answer_chars above 80
    ("p1", 2, 512, "length", None, "cut"),  # truncated
    ("p1", 3, 41, "stop", None, "link 3,  YES."),  # duplicate of 0
    ("p1", 4, 30, "stop", "HTTP 500", None),  # engine error
    ("p2", 0, 20, "stop", None, "   "),  # empty answer
    ("p2", 1, 25, "stop", None, "Link 4."),
]
RULE = PairsConfig(terms=[TermConfig(source="answer_chars", exclude_above=80)])


def test_each_judge_free_reason_is_the_kernels_own():
    marked = prejudge.passing(samples(ROWS), RULE).sort("prompt_id", "sample_idx")
    assert marked["exclusion"].to_list() == [
        None, "answer_chars", "truncated", "duplicate", "engine_error", "empty_answer", None
    ]  # fmt: skip


def test_judge_terms_and_judge_filters_play_no_part_before_judging():
    cfg = PairsConfig(
        judges=["quality", "reward_rm"],
        terms=[TermConfig(source="quality", name="q", exclude_below=0.9), TermConfig(source="reward_rm", weight=0.3),
               TermConfig(source="answer_chars", exclude_above=80)],
    )  # fmt: skip
    marked = prejudge.passing(samples(ROWS), cfg)  # no quality or reward column: none is read
    assert marked.filter(pl.col("exclusion").is_null()).height == 2


def test_the_build_counts_a_sample_never_judged_under_its_rule_reason_not_no_judgment():
    """The kernel on the scored frame where only the passing samples were judged gives the same
    exclusion counts as when every sample was judged."""
    frame = samples(ROWS)
    passed = prejudge.passing(frame, RULE).filter(pl.col("exclusion").is_null())
    everything = frame.with_columns(pl.lit(0.5).alias("quality"))
    judged_only = everything.join(passed.select("prompt_id", "sample_idx").with_columns(pl.lit(0.5).alias("q")),
                                  on=["prompt_id", "sample_idx"], how="left")  # fmt: skip
    judged_only = judged_only.with_columns(pl.col("q").alias("quality")).drop("q")
    before = pairs.select(everything, RULE)[1]
    after = pairs.select(judged_only, RULE)[1]
    assert after.samples_excluded == before.samples_excluded
    assert after.samples_excluded["no_judgment"] == 0 and after.samples_excluded["duplicate"] == 1
    assert after.pairs_kept == before.pairs_kept


def test_a_missing_dimension_is_its_own_reason():
    frame = samples(
        [("p1", 0, 40, "stop", None, "a"), ("p1", 1, 41, "stop", None, "b"), ("p1", 2, 42, "stop", None, "c")]
    )
    frame = frame.with_columns(pl.lit(0.5).alias("quality"), pl.Series("dim_facts", [3.0, None, 4.0]))
    cfg = PairsConfig(terms=[TermConfig(source="dim_facts", weight=0.2)])
    stats = pairs.select(frame, cfg)[1]
    assert stats.samples_excluded["missing_dimension"] == 1 and stats.samples_excluded["no_judgment"] == 0


def test_a_strategy_gate_on_a_verifier_column_is_left_to_the_pair_build():
    # shortest_correct gating on verify_<name> (judge-free) crashed here: the gate has no pairs.terms entry.
    cfg = PairsConfig(strategy="shortest_correct", correct_column="verify_v", correct_min=1.0, terms=RULE.terms)
    assert prejudge.verifier_columns(cfg) == []
    frame = samples(ROWS).with_columns(pl.lit(0.0).alias("verify_v"))
    marked = prejudge.passing(frame, cfg).sort("prompt_id", "sample_idx")
    assert marked["exclusion"].to_list() == [
        None, "answer_chars", "truncated", "duplicate", "engine_error", "empty_answer", None
    ]  # fmt: skip
    gated = PairsConfig(strategy="shortest_correct", correct_column="quality_b", terms=RULE.terms)
    assert (
        prejudge.passing(samples(ROWS), gated)["exclusion"].to_list()
        == prejudge.passing(samples(ROWS), RULE)["exclusion"].to_list()
    )


# -- copies_prompt (issue 25): an answer copied from the prompt's own text -------------------------
def prompts_frame():
    user = (
        "Product info:\n- name: Air Fryer\n- link: 3\n\nConversation so far:\n(none)\n\nViewer comment:\nany coupon rn?"
    )
    return pl.DataFrame(
        {
            "prompt_id": ["p1"],
            "messages": [[{"role": "system", "content": "You are a host."}, {"role": "user", "content": user}]],
            "history": [[]],
        },
        schema_overrides={"history": pl.List(pl.Struct({"role": pl.String, "content": pl.String}))},
    )


COPIES = [
    ("p1", 0, 3, "stop", None, "(none)"),  # the placeholder, copied
    ("p1", 1, 9, "stop", None, "Viewer comment: any coupon rn?"),  # the prompt's own lines
    ("p1", 2, 12, "stop", None, "No coupon in the info, please ask customer service, link 3!"),
    ("p1", 3, 10, "stop", None, "None today, but the air fryer is on link 3."),
    ("p1", 4, 2, "stop", None, "no"),  # a whole word: not inside "(none)"
]
COPY_RULE = PairsConfig(terms=[TermConfig(source="copies_prompt", exclude_above=0.5)], drop_ratio=0.0)


def test_an_answer_copied_from_the_prompt_is_excluded_before_judging_and_by_the_build():
    marked = prejudge.passing(samples(COPIES), COPY_RULE, prompts_frame()).sort("sample_idx")
    assert marked["exclusion"].to_list() == ["copies_prompt", "copies_prompt", None, None, None]
    judged = samples(COPIES).with_columns(pl.Series("quality", [1.0, 1.0, 0.6, 0.5, 0.2]))
    built = pairs.build(judged, prompts_frame(), COPY_RULE)
    assert built.stats.samples_excluded["copies_prompt"] == 2
    kept = built.pairs.row(0, named=True)
    assert kept["chosen_idx"] not in (0, 1) and kept["rejected_idx"] not in (0, 1)
    without = pairs.build(judged, prompts_frame(), PairsConfig(drop_ratio=0.0))  # the junk wins without the rule
    assert without.pairs.row(0, named=True)["chosen_idx"] == 0


def test_copies_prompt_values_on_words_and_characters():
    from factory.pairs import rules

    frame = samples(COPIES).join(
        prompts_frame().select("prompt_id", rules.PROMPT_SIDE[rules.PROMPT_TEXT][1].alias(rules.PROMPT_TEXT)),
        on="prompt_id",
    )
    values = frame.select(rules.overlap(rules.PROMPT_TEXT, 3, "word").alias("v"))["v"].to_list()
    assert values == [1.0, 1.0, 0.0, 0.0, 0.0]
    zh = pl.DataFrame({"answer": ["亲，这款是五号链接哦", "有的哦"], "ref": ["五号链接的锅有货吗", "没有"]})
    share = zh.select(rules.overlap("ref", 2, "char").alias("v"))["v"].to_list()
    assert share[0] == pytest.approx(3 / 9) and share[1] == 0.0  # 五号, 号链, 链接 of 9 distinct bigrams


def test_copies_prompt_without_the_prompts_names_its_key():
    with pytest.raises(ConfigError, match=r"pairs\.terms\[0\]: needs the column '_prompt_text'"):
        prejudge.passing(samples(COPIES), COPY_RULE)
    with pytest.raises(ConfigError, match=r"pairs\.terms\[0\]: reads the prompts' 'messages' column"):
        pairs.attach(samples(COPIES), prompts_frame().drop("messages"), COPY_RULE)


def test_the_runs_prefilter_reads_the_prompts(tmp_path):
    """factory run's judge stages filter with graph.prefilter: it carries the prompts the rule reads."""
    from factory import config, graph

    path = tmp_path / "c.yaml"
    path.write_text("pairs:\n  terms:\n    - {source: copies_prompt, exclude_above: 0.5}\n")
    prefilter = graph.prefilter(config.load(path), prompts_frame())
    marked = prefilter.passing(samples(COPIES)).sort("sample_idx")
    assert marked["exclusion"].to_list() == ["copies_prompt", "copies_prompt", None, None, None]


# -- repeats_history (issue 25): a reply that repeats an earlier host turn of its dialogue -----------
HOST_SAID = "亲，这款保温杯是3号链接哦，现在下单立减20元"


def dialogue_prompts():
    history = [
        {"role": "user", "content": "保温杯多少钱"},
        {"role": "assistant", "content": HOST_SAID},
        {"role": "user", "content": "能保温多久"},
    ]
    return pl.DataFrame(
        {"prompt_id": ["p1"], "messages": [[{"role": "user", "content": "…"}]], "history": [history]},
        schema_overrides={"history": pl.List(pl.Struct({"role": pl.String, "content": pl.String}))},
    )


REPEATS = [
    ("p1", 0, 20, "stop", None, HOST_SAID),  # the earlier reply again
    ("p1", 1, 22, "stop", None, "宝宝，这款保温杯是3号链接哦，现在下单立减20元"),  # the same with another address
    ("p1", 2, 18, "stop", None, "家人们，商品信息写的是保温12小时，3号链接哈"),
    ("p1", 3, 30, "stop", None, "保温多久商品信息里没写，建议问问客服哦"),
]


def test_a_reply_repeating_a_host_turn_is_penalized_in_s_and_excluded():
    from factory.pairs import rules

    frame = samples(REPEATS).join(
        dialogue_prompts().select("prompt_id", rules.PROMPT_SIDE[rules.HOST_TURNS][1].alias(rules.HOST_TURNS)),
        on="prompt_id",
    )
    values = frame.select(rules.overlap(rules.HOST_TURNS, 3, "char").alias("v"))["v"].to_list()
    assert values[0] == 1.0 and values[1] > 0.8 and values[2] < 0.2 and values[3] == 0.0
    judged = samples(REPEATS).with_columns(pl.Series("quality", [0.9, 0.9, 0.7, 0.6]))
    # A penalty in S: with the term weighted, the repeat is no longer chosen.
    plain = PairsConfig(w_len=0.0, drop_ratio=0.0)
    weighted = PairsConfig(
        w_len=0.0, drop_ratio=0.0, terms=[TermConfig(source="repeats_history", unit="char", weight=0.5)]
    )
    assert pairs.build(judged, dialogue_prompts(), plain).pairs["chosen_idx"].to_list() == [0]
    assert pairs.build(judged, dialogue_prompts(), weighted).pairs["chosen_idx"].to_list() == [2]
    # A filter: excluded before judging and counted by the build under its name.
    rule = PairsConfig(drop_ratio=0.0, terms=[TermConfig(source="repeats_history", unit="char", exclude_above=0.5)])
    marked = prejudge.passing(samples(REPEATS), rule, dialogue_prompts()).sort("sample_idx")
    assert marked["exclusion"].to_list() == ["repeats_history", "repeats_history", None, None]
    built = pairs.build(judged, dialogue_prompts(), rule)
    assert built.stats.samples_excluded["repeats_history"] == 2
    streamed = pairs.build(judged.lazy(), dialogue_prompts().lazy(), rule)  # a Parquet scan's path: the same
    assert streamed.stats.samples_excluded == built.stats.samples_excluded
    assert set(built.pairs.select("chosen_idx", "rejected_idx").row(0)) == {2, 3}


def test_repeats_history_reads_host_turns_only_and_an_empty_history_repeats_nothing():
    from factory.pairs import rules

    viewer_only = dialogue_prompts().with_columns(
        pl.Series(
            "history",
            [[{"role": "user", "content": HOST_SAID}]],
            dtype=pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
        )
    )
    for prompts in (viewer_only, dialogue_prompts().with_columns(pl.col("history").list.head(0))):
        frame = pairs.attach(
            samples(REPEATS[:1]), prompts, PairsConfig(terms=[TermConfig(source="repeats_history", weight=1.0)])
        )
        assert frame.select(rules.overlap(rules.HOST_TURNS, 3, "char").alias("v"))["v"].to_list() == [0.0]


# -- flag_contradiction (issue 25): the teacher's can-answer flag against its own reply ------------
FLAGGED = [
    ("p1", 0, 10, "stop", None, "亲，3号链接49元哦。", True),  # says it can, answers: fine
    ("p1", 1, 10, "stop", None, "亲，这个问题问问客服哈。", True),  # says it can, refers: contradiction
    ("p1", 2, 10, "stop", None, "亲，这个要联系客服哦。", False),  # says it cannot, refers: fine
    ("p1", 3, 10, "stop", None, "亲，5号链接有货哦。", False),  # says it cannot, answers: contradiction
    ("p1", 4, 10, "stop", None, "亲，问客服吧。", None),  # no flag (unparsed): nothing to contradict
    ("p1", 5, 10, "stop", None, "Please contact customer service.", True),  # the English referral too
]
FLAG_RULE = PairsConfig(terms=[TermConfig(source="flag_contradiction", exclude_above=0)], drop_ratio=0.0)


def flagged_samples(rows=FLAGGED):
    return samples([r[:6] for r in rows]).with_columns(pl.Series("can_answer", [r[6] for r in rows], pl.Boolean))


def test_a_sample_whose_flag_contradicts_its_reply_is_excluded_before_judging_and_counted():
    marked = prejudge.passing(flagged_samples(), FLAG_RULE).sort("sample_idx")
    reason = "flag_contradiction"
    assert marked["exclusion"].to_list() == [None, reason, None, reason, None, reason]
    judged = flagged_samples().with_columns(pl.Series("quality", [0.5, 1.0, 0.4, 0.9, 0.3, 0.95]))
    built = pairs.build(judged, prompts_frame(), FLAG_RULE)
    assert built.stats.samples_excluded[reason] == 3 and built.stats.samples_valid == 3
    kept = built.pairs.row(0, named=True)
    assert {kept["chosen_idx"], kept["rejected_idx"]} <= {0, 2, 4}
    without = pairs.build(judged, prompts_frame(), PairsConfig(drop_ratio=0.0))  # the contradiction wins without it
    assert without.pairs.row(0, named=True)["chosen_idx"] == 1


def test_flag_contradiction_takes_its_own_referral_pattern_and_names_a_missing_flag_column():
    own = PairsConfig(terms=[TermConfig(source="flag_contradiction", pattern="联系", exclude_above=0)])
    marked = prejudge.passing(flagged_samples(), own).sort("sample_idx")
    # only 联系 marks a referral now: sample 1 (问问客服) answers as its flag says, sample 2 refers as its flag says
    assert marked["exclusion"].to_list() == [None, None, None, "flag_contradiction", None, None]
    with pytest.raises(ConfigError, match=r"pairs\.terms\[0\]: needs the column 'can_answer'"):
        prejudge.passing(samples([r[:6] for r in FLAGGED]), FLAG_RULE)
    with pytest.raises(ConfigError, match=r"pairs\.terms\[0\]\.pattern: not a valid regex"):
        PairsConfig(terms=[TermConfig(source="flag_contradiction", pattern="(")])
