"""Wrap the lines ruff's E501 flags (pyproject.toml's line-length, 120) without reformatting anything else:

    python scripts/wrap_long_lines.py [paths ...]      # default: factory tests bench jobs

Three passes, each only on the flagged lines:
1. a statement marked `# fmt: skip` that holds a flagged line loses the marker and is formatted;
2. ruff's formatter wraps each flagged line's statement (`ruff format --range`);
3. a one-line string literal that starts a flagged line inside brackets is split in two adjacent literals
   at the last space before the limit (outside an f-string's braces).
What is left (a comment, a docstring, a string outside brackets) `ruff check` still flags: wrap it by hand.
"""

from __future__ import annotations

import ast
import collections
import io
import json
import re
import shutil
import subprocess
import sys
import tokenize

LIMIT = 120
RUFF = shutil.which("ruff") or "ruff"


def flagged(paths: list[str]) -> dict[str, set[int]]:
    command = [RUFF, "check", "--select", "E501", "--output-format", "json", *paths]
    found = subprocess.run(command, capture_output=True, text=True)
    rows: dict[str, set[int]] = collections.defaultdict(set)
    for error in json.loads(found.stdout or "[]"):
        rows[error["filename"]].add(error["location"]["row"])
    return rows


def format_range(path: str, first: int, last: int) -> None:
    subprocess.run([RUFF, "format", "--range", f"{first}:{last}", path], capture_output=True)


def unskip(path: str, lines: set[int]) -> None:
    text = open(path).read().splitlines(keepends=True)
    blocks = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.For, ast.While, ast.With, ast.Try)
    spans = {
        (node.lineno, node.end_lineno)
        for node in ast.walk(ast.parse("".join(text)))
        if isinstance(node, ast.stmt) and not isinstance(node, blocks) and node.end_lineno is not None
        and any(node.lineno <= n <= node.end_lineno for n in lines) and "# fmt: skip" in text[node.end_lineno - 1]
    }  # fmt: skip
    for first, last in sorted(spans, reverse=True):  # bottom-up: the lines above keep their numbers
        text = open(path).read().splitlines(keepends=True)
        text[last - 1] = re.sub(r"\s*# fmt: skip", "", text[last - 1])
        open(path, "w").write("".join(text))
        format_range(path, first, last)


def literal(part: str, prefix: str, quote: str) -> str:
    """One part of a split string: an f-string part without a brace is a plain string."""
    own = prefix if "{" in part else re.sub("[fF]", "", prefix)
    return f"{own}{quote}{part}{quote}"


def split_strings(path: str, lines: set[int]) -> None:
    source = open(path).read()
    depth, candidates = 0, collections.defaultdict(list)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        elif tok.type == tokenize.STRING and tok.start[0] == tok.end[0] and tok.start[0] in lines and depth > 0:
            candidates[tok.start[0]].append(tok)
    text = source.splitlines(keepends=True)
    for number in sorted(candidates, reverse=True):
        if len(candidates[number]) != 1:
            continue
        tok, line = candidates[number][0], text[number - 1]
        prefix, quote = re.match(r"([rRbBfFuU]*)([\"'])", tok.string).groups()  # type: ignore[union-attr]
        if line[: tok.start[1]].strip() or tok.string.startswith(quote * 3, len(prefix)):
            continue
        body, indent, braces, cut = tok.string[len(prefix) + 1 : -1], tok.start[1], 0, None
        for i, ch in enumerate(body):
            if "f" in prefix.lower():
                braces += (ch == "{") - (ch == "}")
            if ch == " " and braces == 0 and 20 < i <= LIMIT - indent - len(prefix) - 3 and body[i - 1] != "\\":
                cut = i
        if cut is None:
            continue
        first, second = literal(body[: cut + 1], prefix, quote), literal(body[cut + 1 :], prefix, quote)
        wrapped = f"{first}\n{' ' * indent}{second}"
        text[number - 1] = line[: tok.start[1]] + wrapped + line[tok.end[1] :]
    open(path, "w").write("".join(text))


def main(paths: list[str]) -> int:
    for path, lines in flagged(paths).items():
        unskip(path, lines)
    for path, lines in flagged(paths).items():
        for line in sorted(lines, reverse=True):
            format_range(path, line, line)
    for path, lines in flagged(paths).items():
        split_strings(path, lines)
    left = flagged(paths)
    print(f"{sum(len(v) for v in left.values())} line(s) still over {LIMIT}: wrap them by hand (ruff check names them)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["factory", "tests", "bench", "jobs"]))
