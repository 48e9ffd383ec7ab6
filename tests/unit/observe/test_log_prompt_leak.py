"""No prompt reaches a log line unless THAW_LOG_PROMPTS says so (docs/observability.md). diffusers'
pipelines log the part of a prompt their text encoder cut off (`The following part of your input
was truncated because CLIP can only handle sequences up to 77 tokens: [...]`) for every prompt
longer than the encoder takes: that record keeps its first sentence and loses the prompt's text.
"""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest

from runtime.observe.logs import configure_logging
from runtime.settings import LogFormat

SECRET = "a private prompt about my neighbour"
# As diffusers' pipelines word it (StableDiffusionPipeline.encode_prompt, Flux's T5 and SD3's).
MESSAGES = [
    "The following part of your input was truncated because CLIP can only handle sequences up to"
    f" 77 tokens: ['{SECRET}']",
    "The following part of your input was truncated because `max_sequence_length` is set to "
    f" 512 tokens: ['{SECRET}']",
    "The following part of your input was truncated because T5 can only handle sequences up to"
    f" 256 tokens: ['{SECRET}: tokens: more']",
]


@pytest.mark.parametrize("log_format", [LogFormat.JSON, LogFormat.TEXT])
@pytest.mark.parametrize("message", MESSAGES)
def test_the_cut_off_part_of_a_prompt_is_not_logged(log_format: LogFormat, message: str) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    logger = logging.getLogger(f"diffusers.pipelines.test.{uuid.uuid4().hex}")
    try:
        configure_logging("info", log_format, stream)
        logger.warning(message)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    written = stream.getvalue()
    assert SECRET not in written, written
    assert "was truncated because" in written
    assert "tokens" in written
    if log_format is LogFormat.JSON:
        assert json.loads(written)["level"] == "warning"
