"""What every target kind's settings model shares. Each connector owns its model (``kind``
tells them apart); :mod:`jmlsync.targets.registry` lists the kinds once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field


class TargetSection(BaseModel):
    """Keys every target kind has: a ``[targets.NAME]`` table of the configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    if TYPE_CHECKING:
        # Declared by each kind's model as a Literal (the union's discriminator), after
        # max_concurrency, so the keys keep their order in messages and dumps.
        kind: str

    max_concurrency: Annotated[int, Field(ge=1, le=256)] = 4

    def role_problem(self, role: str) -> str | None:
        """Why ``role`` cannot be a role of this target (None when it can, or when the kind
        does not check role syntax before connecting)."""
        return None
