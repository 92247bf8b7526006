"""Question/answer datasets as JSONL, read strictly so a bad line is named, not skipped."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError


class DatasetError(ValueError):
    """A dataset line that is not a ``{"question": ..., "answer": ...}`` object."""


class QAPair(BaseModel):
    """One question, its reference answer, and optionally a difficulty label to report by."""

    model_config = ConfigDict(extra="forbid")

    question: str
    answer: str
    difficulty: str | None = None


def load_jsonl(path: str | Path) -> list[QAPair]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    pairs = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{number}: not valid JSON ({e.msg})") from None
            if isinstance(record, dict) and not isinstance(record.get("answer", ""), str):
                record = {**record, "answer": str(record["answer"])}
            try:
                pairs.append(QAPair.model_validate(record))
            except ValidationError as e:
                fields = ", ".join(str(err["loc"][0]) for err in e.errors() if err["loc"])
                raise DatasetError(
                    f"{path}:{number}: expected an object with string 'question' and 'answer'"
                    " (and optionally 'difficulty')" + (f" (bad: {fields})" if fields else "")
                ) from None
    if not pairs:
        raise DatasetError(f"{path}: no questions")
    return pairs
