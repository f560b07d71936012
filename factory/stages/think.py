"""`<think>...</think>` blocks, found in one pass over the tags: linear in the text on any input (the
pattern `<think>(.*?)</think>` searches to the end of the text from every opening tag that has no closing
one, which is quadratic on a reply of many opening tags).

    think_blocks("<think>a</think>b<think>c</think>d")   -> (["a", "c"], "bd")
    think_blocks("x<think>unclosed")                      -> ([], "x<think>unclosed")
"""

from __future__ import annotations

import re

_TAGS = {False: re.compile(r"<(/?)think>"), True: re.compile(r"<(/?)think>", re.IGNORECASE)}


def think_blocks(text: str, ignore_case: bool = False) -> tuple[list[str], str]:
    """(the inside of each closed block, the text without them): what re.findall and re.sub of
    `<think>(.*?)</think>` (DOTALL) give. A block runs from an opening tag to the next closing tag (an
    opening tag inside it is part of it); an opening tag with no closing one after it stays in the text,
    and so does a closing tag with no opening one before it."""
    blocks: list[str] = []
    kept: list[str] = []
    start, opened = 0, None
    for tag in _TAGS[ignore_case].finditer(text):
        if not tag.group(1):
            if opened is None:
                opened = tag
        elif opened is not None:
            blocks.append(text[opened.end() : tag.start()])
            kept.append(text[start : opened.start()])
            start, opened = tag.end(), None
    kept.append(text[start:])
    return blocks, "".join(kept)
