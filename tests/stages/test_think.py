"""`<think>` blocks in one pass (factory/stages/think.py): the same blocks and rest as the regex they replace,
in linear time on any text (the sample stage splits every reply with it, the judge parser every verdict)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from factory.stages.think import think_blocks

_REGEX = {
    False: re.compile(r"<think>(.*?)</think>", re.DOTALL),
    True: re.compile(r"<think>(.*?)</think>", re.DOTALL | re.I),
}
PIECES = st.sampled_from(
    ["<think>", "</think>", "<THINK>", "</Think>", "<think", "think>", "</", "a", "b c", "\n", "<"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=14).map("".join), st.booleans())
def test_the_same_blocks_and_rest_as_the_regex(text, ignore_case):
    regex = _REGEX[ignore_case]
    assert think_blocks(text, ignore_case) == (regex.findall(text), regex.sub("", text))


def test_megabytes_of_opening_tags_split_in_linear_time():
    # The regex took minutes here (each of the 300,000 unclosed tags searched to the end); a subprocess with a
    # generous timeout bounds the test either way.
    code = (
        "import json\n"
        "from factory.stages.sample import split_reasoning\n"
        "text = '<think>a' * 300_000 + '</think>answer' + '<think>' * 300_000\n"
        "reasoning, answer = split_reasoning(text)\n"
        "print(json.dumps([len(reasoning), answer[:6], len(answer)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    # one block (its inner opening tags are part of it), then the answer and the unclosed tags after it
    assert json.loads(done.stdout) == [len("<think>a" * 300_000) - len("<think>"), "answer", 6 + 7 * 300_000]
