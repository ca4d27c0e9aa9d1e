"""Ray executor backend with the ``concurrent.futures`` interface (built in the Ray issue)."""

from __future__ import annotations

from . import Backend


def _unavailable(max_workers: int):
    raise RuntimeError("the Ray executor backend is not built yet")


def ray_backend() -> Backend:
    return Backend("ray", _unavailable, missing="the Ray executor backend is not built yet (issue 6)")
