"""export.*: the trainer-faithful export under the student's chat template (factory/pairs/export.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from factory.config.base import ConfigError, help_


@dataclass
class ExportConfig:
    template: str = help_(
        "The student's chat template: a tokenizer folder (chat_template.jinja or tokenizer_config.json), a "
        "tokenizer_config.json or a .jinja file. Set, `factory run` / `factory pairs` write export/<name>/ (TRL "
        "standard format: prompt = the template with the generation prompt, chosen/rejected = the exact "
        "continuation, reasoning kept) and warn when the template drops pairs/' reasoning. '' = no export.",
        "",
    )
    name: str = help_("The export's folder, export/<name>/; '' = the template's folder or file name.", "")
    enabled: bool = help_(
        "With export.template set, `factory run` and `factory pairs` write the export after pairs/ "
        "(false: they only warn; `factory export` writes it).",
        True,
    )
    keep_bos: bool = help_(
        "Keep the template's leading bos_token in the prompt text (off: the trainer's tokenizer adds it, as "
        "TRL's standard-format tokenization does; kept it would be doubled).",
        False,
    )
    think_open: str = help_("The student's opening think marker; '' = as its template writes it, else <think>.", "")
    think_close: str = help_("The student's closing think marker; '' = as its template writes it, else </think>.", "")

    def __post_init__(self) -> None:
        if self.name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", self.name):
            raise ConfigError(
                f"export.name: {self.name!r} is not letters, digits and _ . + - (it names export/<name>/)"
            )
        if bool(self.think_open) != bool(self.think_close):
            raise ConfigError(
                "export.think_open: give both think markers (export.think_open and export.think_close) or neither"
            )
