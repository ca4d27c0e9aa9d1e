"""Per-session state kept on the pytest config: parsed options, detected hardware, the claim log.

Imports of the measurement modules happen on first use, so that a session that runs none of our
fixtures never pays for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import pytest

if TYPE_CHECKING:
    from ..report.claims import ClaimLog
    from .hardware import Hardware
    from .measure import Settings


class Options(NamedTuple):
    budget_s: float
    confidence: float
    start_method: str
    strict: bool = False  # --hpc-strict: undecided claims can fail the session
    strict_undecided: float = 0.25  # --hpc-strict-undecided: the share of undecided claims allowed

    @property
    def measure_settings(self) -> Settings:
        from .measure import Settings

        return Settings(budget_s=self.budget_s, confidence=self.confidence)


OPTIONS_KEY = pytest.StashKey[Options]()
CLAIMS_KEY = pytest.StashKey["ClaimLog"]()


def options_of(config: pytest.Config) -> Options:
    return config.stash[OPTIONS_KEY]


def claim_log(config: pytest.Config) -> ClaimLog:
    if CLAIMS_KEY not in config.stash:
        from ..report.claims import ClaimLog

        config.stash[CLAIMS_KEY] = ClaimLog()
    return config.stash[CLAIMS_KEY]


def under_xdist(config: pytest.Config) -> bool:
    """This process is a pytest-xdist worker (its controller collects the reports)."""
    return hasattr(config, "workerinput")


def has_claims(config: pytest.Config) -> bool:
    return CLAIMS_KEY in config.stash


STRICT_KEY = pytest.StashKey[str]()


def strict_failure(config: pytest.Config) -> str | None:
    """Why --hpc-strict fails this session (kept for the summary), or None."""
    options = options_of(config)
    if not options.strict or not has_claims(config):
        return None
    why = claim_log(config).strict_failure(options.strict_undecided)
    if why:
        config.stash[STRICT_KEY] = why
    return why


SESSION_PLUGINS_KEY = pytest.StashKey[list[str]]()


def register_session(config: pytest.Config, plugin: object, name: str) -> None:
    """Register a chapter's session object as a plugin, which a chapter does only when it is active
    (pytest-xdist's DSession pattern): its hooks need no "am I active" guard. A session that does
    not use this plugin has them unregistered after collection, with the chapter modules."""
    config.pluginmanager.register(plugin, name)
    names = config.stash.setdefault(SESSION_PLUGINS_KEY, [])
    if name not in names:
        names.append(name)


def session_plugins(config: pytest.Config) -> list[str]:
    """The names of the chapters' session objects registered so far."""
    return config.stash.get(SESSION_PLUGINS_KEY, [])


def hardware_of(config: pytest.Config) -> Hardware:
    """Detected on first use and cached for the process."""
    from .hardware import detect_cached

    return detect_cached(options_of(config).start_method)
