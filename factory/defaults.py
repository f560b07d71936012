"""The files the library falls back on, shipped inside the package (factory/data/) so that a wheel or an
image made with `pip install .` has them; conf/rubrics/default_*.txt and conf/data/calibration.jsonl in
the checkout are links to these, so configs that name them keep working.

    >>> RUBRIC.name, CALIBRATION.name
    ('default_en.txt', 'calibration.jsonl')
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# files() of a package installed as files (a wheel, an editable checkout) is a real folder; the paths are
# written into summaries (calibrate's rubric_file) and read through fsspec, so they stay plain Paths.
DATA = Path(str(files("factory") / "data"))
RUBRIC = DATA / "rubrics" / "default_en.txt"  # judge.rubric_file = ''
RUBRIC_ZH = DATA / "rubrics" / "default_zh.txt"
CALIBRATION = DATA / "calibration.jsonl"  # factory calibrate without --data
