"""Per-session state kept on the pytest config: parsed options, detected hardware, the claim log."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from . import measure
from .hardware import Hardware, detect_cached
from .report import ClaimLog


@dataclass(frozen=True)
class Options:
    budget_s: float
    confidence: float
    start_method: str

    @property
    def measure_settings(self) -> measure.Settings:
        return measure.Settings(budget_s=self.budget_s, confidence=self.confidence)


OPTIONS_KEY = pytest.StashKey[Options]()
CLAIMS_KEY = pytest.StashKey[ClaimLog]()


def options_of(config: pytest.Config) -> Options:
    return config.stash[OPTIONS_KEY]


def claim_log(config: pytest.Config) -> ClaimLog:
    return config.stash.setdefault(CLAIMS_KEY, ClaimLog())


def hardware_of(config: pytest.Config) -> Hardware:
    """Detected on first use and cached for the process."""
    return detect_cached(options_of(config).start_method)
