"""The base of every config model: unknown keys are errors, values are validated on assignment."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base for every config section (Optimum/pydantic `extra="forbid"` style: a wrong key names itself)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
