"""What both transports share in one `sgpo serve judge` process: config, metrics, API keys and the judge
(None until the backend has loaded; requests meanwhile get UNAVAILABLE / 503)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sgpo.common.server import UnavailableError
from sgpo.core import ColoringParams
from sgpo.judge.config import JudgeConfig
from sgpo.judge.metrics import JudgeMetrics
from sgpo.judge.types import StepJudge


@dataclass
class JudgeState:
    cfg: JudgeConfig
    metrics: JudgeMetrics = field(default_factory=JudgeMetrics)
    api_keys: tuple[str, ...] = ()
    judge: StepJudge | None = None

    @property
    def default_coloring(self) -> ColoringParams:
        return self.cfg.algo.coloring

    def require(self) -> StepJudge:
        if self.judge is None:
            raise UnavailableError("the judge backend is still loading; retry in a few seconds")
        return self.judge
