"""pytest-hpcdemo: a pytest plugin and benchmark suite that measures a Python HPC guide's claims.

Importing the package imports nothing else: the pytest plugin is ``pytest_hpcdemo.plugin``, and
``__version__`` is read from the installed distribution's metadata only when asked for.
"""

from __future__ import annotations


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("pytest-hpcdemo")
        except PackageNotFoundError:  # run from a checkout that was never installed
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
