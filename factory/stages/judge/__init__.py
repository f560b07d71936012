"""The judge stage: a generative reward model scores every usable sample on the rubric.

    rubric.py   the template's fields and checks, request messages, the output's JSON schema
    parse.py    reading a reply: score, dimensions, tags, parse_status
    stage.py    planning (pending votes), the batch function, judgment rows, JudgeStage
    read.py     votes -> per-sample quality, dimensions, tags (what pairs, report and eval read)
"""

from factory.stages.judge.parse import (
    PARSE_FAILURES,
    STATUSES,
    USABLE,
    missing_dimensions,
    parse_judgment,
    parse_tags,
    strip_reasoning,
)
from factory.stages.judge.read import (
    DIMS_DTYPE,
    current_judgments,
    order_quality,
    sample_dims,
    sample_quality,
    sample_tags,
    with_quality,
)
from factory.stages.judge.rubric import (
    DIMENSIONS,
    FREE_TAGS_MAX,
    RUBRIC_FIELDS,
    check_room,
    check_rubric,
    judge_schema,
    minimal_reply,
    reask_messages,
    group_labels,
    group_schema,
    render_group,
    render_rubric,
    rubric_fields,
)
from factory.stages.judge.stage import (
    KEY,
    REQUEST_SCHEMA,
    STATUS_COLUMNS,
    JudgeStage,
    failed_judgments,
    judge_batch,
    judge_fingerprint,
    judgment_row,
    pending_keys,
    plan_judgments,
    prompt_fields,
    render_requests,
)
from factory.stages.judge.group import GroupJudgeStage, group_failed, group_judge_batch
from factory.stages.scored import SAMPLE_KEY, judgeable, of_current_samples, sample_text

__all__ = [
    "DIMENSIONS",
    "DIMS_DTYPE",
    "FREE_TAGS_MAX",
    "KEY",
    "PARSE_FAILURES",
    "REQUEST_SCHEMA",
    "RUBRIC_FIELDS",
    "SAMPLE_KEY",
    "STATUSES",
    "STATUS_COLUMNS",
    "USABLE",
    "GroupJudgeStage",
    "JudgeStage",
    "group_failed",
    "group_judge_batch",
    "order_quality",
    "group_labels",
    "group_schema",
    "render_group",
    "check_room",
    "check_rubric",
    "current_judgments",
    "failed_judgments",
    "judge_batch",
    "judge_fingerprint",
    "judge_schema",
    "judgeable",
    "judgment_row",
    "minimal_reply",
    "missing_dimensions",
    "of_current_samples",
    "parse_judgment",
    "parse_tags",
    "pending_keys",
    "plan_judgments",
    "prompt_fields",
    "reask_messages",
    "render_requests",
    "render_rubric",
    "rubric_fields",
    "sample_dims",
    "sample_quality",
    "sample_tags",
    "sample_text",
    "strip_reasoning",
    "with_quality",
]
