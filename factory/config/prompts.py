"""prompts.*: where the prompts are and how they are rendered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from factory.config.base import ConfigError, help_, ranges

@dataclass
class PromptsConfig:
    path: str = help_("Prompts file or folder (.parquet, .jsonl, .json array), any fsspec URL.", "")
    limit: Optional[int] = help_("Use only the first N prompts (in file order).", None)
    id_column: Optional[str] = help_("Column with a stable prompt id; null = hash of the rendered messages.", "id")
    messages_column: str = help_(
        "Column with ready chat messages; used when present instead of the template.", "messages"
    )
    product_info_column: str = help_("Column with the product info (object or text).", "product_info")
    history_column: str = help_("Column with the dialogue history (list of {role, content}).", "history")
    question_column: str = help_("Column with the viewer's question.", "question")
    system_prompt_file: str = help_("Host system prompt (text file); '' = none.", "")
    user_template_file: str = help_("User message template with {product_info}, {history}, {question}.", "")
    dedupe_text: bool = help_(
        "A row whose rendered messages equal an earlier row's (same prompt text under another id) is recorded "
        "in invalid/ as a duplicate instead of being sampled again.",
        True,
    )
    roles: Dict[str, str] = help_(
        "Role names of the input's history and messages mapped to system/user/assistant, e.g. the source's "
        "{观众: user, 主播: assistant} (viewer, host); a role neither mapped nor standard makes the row invalid.",
        factory=dict,
    )
    speakers: Dict[str, str] = help_(
        "How the user template shows the history's turns: role -> speaker name, e.g. {user: 观众, assistant: 主播}; "
        "unnamed roles: Viewer (user), Host (assistant), System.",
        factory=dict,
    )

    def __post_init__(self) -> None:
        self.check(self, "prompts.")

    @staticmethod
    def check(c: Any, p: str) -> None:
        ranges(c, p, {"limit": ">= 1 or null"})
        for name, role in (c.roles or {}).items():
            if role not in ("system", "user", "assistant"):
                raise ConfigError(f"{p}roles.{name}: {role!r} is not one of system, user, assistant")
        for role in c.speakers or {}:
            if role not in ("system", "user", "assistant"):
                raise ConfigError(f"{p}speakers.{role}: {role!r} is not one of system, user, assistant")
