"""pytest-hpcdemo: a pytest plugin and benchmark suite that measures a Python HPC guide's claims.

The public API for a library author's own claims lives here, in ``__all__``: claims and their
verdicts (``at_least``, ``at_most``, ``scaling_floor``, ``Claim``, ``Verdict``), the interleaved
measurement's result and knobs (``Measurement``, ``Settings``), the machine (``Hardware``) and the
executor backends (``get_backend``, ``Backend``). The implementation modules (``core/``, one
subpackage per chapter) are private in all but name; import from here.

Importing the package imports nothing else (the pytest plugin is ``pytest_hpcdemo.plugin``, and
pytest imports it at every start-up): each name is imported from its module on first use (PEP 562),
and ``__version__`` is read from the installed distribution's metadata only when asked for.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)

if TYPE_CHECKING:  # for type checkers and IDEs only; at run time __getattr__ imports on first use
    from .backends import BACKEND_NAMES, Backend, get_backend
    from .core.hardware import Hardware
    from .core.measure import (
        Claim,
        Decision,
        Measurement,
        Round,
        Settings,
        Timing,
        Verdict,
        at_least,
        at_most,
        scaling_floor,
        timed,
    )

# Each public name -> the module (relative to this package) that defines it. Not the function
# ``measure``: ``pytest_hpcdemo.measure`` is a module (the flat layout's import path), and one name
# for both would depend on import order; the ``speedup`` fixture runs it for a test.
_PUBLIC = {
    "Claim": ".core.measure",
    "Decision": ".core.measure",
    "Measurement": ".core.measure",
    "Round": ".core.measure",
    "Settings": ".core.measure",
    "Timing": ".core.measure",
    "Verdict": ".core.measure",
    "at_least": ".core.measure",
    "at_most": ".core.measure",
    "scaling_floor": ".core.measure",
    "timed": ".core.measure",
    "Hardware": ".core.hardware",
    "BACKEND_NAMES": ".backends",
    "Backend": ".backends",
    "get_backend": ".backends",
}

# The public API, in one place (a literal, for linters and ``from pytest_hpcdemo import *``);
# a test checks it against _PUBLIC.
__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "Claim",
    "Decision",
    "Hardware",
    "Measurement",
    "Round",
    "Settings",
    "Timing",
    "Verdict",
    "__version__",
    "at_least",
    "at_most",
    "get_backend",
    "scaling_floor",
    "timed",
]


def __getattr__(name: str) -> object:
    module = _PUBLIC.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("pytest-hpcdemo")
        except PackageNotFoundError:  # run from a checkout that was never installed
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
