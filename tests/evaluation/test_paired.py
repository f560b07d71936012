"""The closed loop's paired statistics (factory/evaluation/paired.py) and the seed's reply rules it judges with
(factory/referral.py through the verifier stage), on known inputs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from factory.config import VerifierConfig
from factory.evaluation import paired
from factory.referral import names_link, prices_from_info
from factory.stages import verifier


def test_ratio_interval_is_the_ratio_of_means_with_a_paired_interval():
    base = [100.0, 80.0, 120.0, 60.0]
    cand = [50.0, 40.0, 60.0, 30.0]  # exactly half on every prompt: every resample gives 0.5
    ratio, low, high = paired.ratio_interval(cand, base, 500, 0)
    assert ratio == pytest.approx(0.5) and low == pytest.approx(0.5) and high == pytest.approx(0.5)


def test_ratio_interval_keeps_the_pairing():
    # base lengths vary a lot across prompts, the candidate is 0.8 of each: a paired resample keeps 0.8,
    # resampling the two sides apart would spread it widely
    rng = np.random.default_rng(1)
    base = rng.uniform(10, 300, size=40)
    ratio, low, high = paired.ratio_interval(0.8 * base, base, 1000, 0)
    assert ratio == pytest.approx(0.8) and high - low < 1e-9
    noisy = 0.8 * base * rng.uniform(0.7, 1.3, size=40)
    ratio, low, high = paired.ratio_interval(noisy, base, 1000, 0)
    assert low < ratio < high and 0.6 < low and high < 1.0
    assert paired.ratio_interval(noisy, base, 1000, 0) == (ratio, low, high)  # seeded


def test_ratio_interval_edges():
    assert paired.ratio_interval([], [], 100, 0) == (None, None, None)
    assert paired.ratio_interval([3.0], [0.0], 100, 0) == (None, None, None)
    assert paired.ratio_interval([3.0], [6.0], 100, 0) == (0.5, None, None)
    with pytest.raises(ValueError, match="2 candidate values against 1"):
        paired.ratio_interval([1.0, 2.0], [1.0], 100, 0)


def test_non_inferior_reads_the_lower_end_against_the_margin():
    assert paired.non_inferior(-4.9, 5.0) is True
    assert paired.non_inferior(-5.0, 5.0) is False  # on the margin is not above it
    assert paired.non_inferior(-12.0, 5.0) is False
    assert paired.non_inferior(+1.0, 0.0) is True
    assert paired.non_inferior(None, 5.0) is None
    with pytest.raises(ValueError):
        paired.non_inferior(0.0, -5.0)


def test_paired_ids_keep_only_prompts_every_model_scored_and_count_the_rest_by_reason():
    status = {
        "base": {"p1": None, "p2": None, "p3": "judge unparseable", "p4": None},
        "trained": {"p1": None, "p2": "sample error", "p3": "judge unparseable", "p4": None},
        "brief": {"p1": None, "p2": None, "p3": None},  # never sampled p4
    }
    ids, lost = paired.paired_ids(status, ["p1", "p2", "p3", "p4"])
    assert ids == ["p1"]
    assert lost == {
        "base": {"judge unparseable": 1},
        "trained": {"sample error": 1, "judge unparseable": 1},
        "brief": {"not sampled": 1},
    }


def test_degenerate_names_empty_copies_and_few_word_replies():
    prompt = "Product info: Yoga mat, link 15\n\nConversation so far:\n(none)\n\nViewer comment: which link??"
    answers = pl.Series(["", "  ", "(none)", "which link??", "ok!", "It is link 15, the purple or teal mat!"])
    reasons = paired.degenerate(answers, pl.Series([prompt] * answers.len())).to_list()
    assert reasons == ["empty", "empty", "copies prompt", "copies prompt", "few words", None]
    assert paired.shares(pl.Series("degenerate", reasons)) == pytest.approx(
        {"any": 5 / 6, "copies prompt": 2 / 6, "empty": 2 / 6, "few words": 1 / 6}
    )
    assert paired.shares(pl.Series("degenerate", [], dtype=pl.String)) == {}


INFO = '{"name": "FlexGrip Yoga Mat", "price": "$32.00", "coupons": "$5 off orders over $25", "link": 15}'


def test_link_and_price_rules():
    yes, refer = {"product_info": INFO, "answerable": True}, {"product_info": INFO, "answerable": False}
    assert names_link({"answer": "Grab it at link 15!"}, yes) == 1.0
    assert names_link({"answer": "grab it at Link #15"}, yes) == 1.0
    assert names_link({"answer": "grab it at link 150"}, yes) == 0.0
    assert names_link({"answer": "it's a great mat"}, yes) == 0.0
    assert names_link({"answer": "please check with customer service"}, refer) is None
    assert prices_from_info({"answer": "Only $32.00, and $5 off over $25!"}, yes) == 1.0
    assert prices_from_info({"answer": "It's 32 dollars today"}, yes) == 1.0
    assert prices_from_info({"answer": "Just $19.99 today!"}, yes) == 0.0
    assert prices_from_info({"answer": "no price said, 6 mm thick"}, yes) == 1.0
    assert prices_from_info({"answer": "$10"}, {"product_info": None}) is None


def test_the_rules_run_as_verifier_functions():
    samples = pl.DataFrame({
        "prompt_id": ["a", "b"], "sample_idx": [0, 0], "answer": ["link 15, $32.00!", "only $9"],
        "reasoning": ["", ""], "error": [None, None],
    })  # fmt: skip
    prompts = pl.DataFrame({"prompt_id": ["a", "b"], "product_info": [INFO, INFO], "answerable": [True, True]})
    link = VerifierConfig(rule="function", function="factory.referral:names_link")
    price = VerifierConfig(rule="function", function="factory.referral:prices_from_info")
    assert verifier.verdicts(samples, prompts, link, "v", "k")["v"].to_list() == [1.0, 0.0]
    assert verifier.verdicts(samples, prompts, price, "v", "k")["v"].to_list() == [1.0, 0.0]


def test_the_rules_read_the_rendered_product_info_too():
    rendered = "- name: FlexGrip Yoga Mat\n- price: $32.00\n- coupons: $5 off orders over $25\n- link: 15"
    prompt = {"product_info": rendered, "answerable": "true"}
    assert names_link({"answer": "link 15!"}, prompt) == 1.0 and names_link({"answer": "link 1"}, prompt) == 0.0
    assert prices_from_info({"answer": "$32.00 now"}, prompt) == 1.0
    assert prices_from_info({"answer": "$31 now"}, prompt) == 0.0
