"""The saved figures' format: every key this plugin writes into pytest-benchmark's JSON, and the
schema version each run carries.

One module owns the keys (as pyperf's JSON format is owned by one module, with a version), so that
the writers (the plugin and its chapters) and the readers (the gate, the report, ``compare``) cannot
drift apart. The names below are the JSON keys of saved histories: they never change; a change of
meaning or shape is a new :data:`SCHEMA_VERSION`, and :func:`schema_version` keeps reading the old
ones. Standard library only: the gate imports it without pytest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Schema versions: 1, the runs saved before the version was (no SCHEMA key); 2, the same keys with
# the version saved. A reader accepts every version up to SCHEMA_VERSION.
SCHEMA_VERSION = 2
FIRST_SCHEMA_VERSION = 1

# ---------------------------------------------------------------------------------------------
# machine_info: one object per run (pytest_benchmark_update_machine_info hooks)

SCHEMA = "hpcdemo_schema"  # this module's SCHEMA_VERSION when the run was saved
HARDWARE = "hpcdemo"  # the machine as the plugin sees it (report.claims.hardware_info, numba layer)
FINGERPRINT = "hpcdemo_fingerprint"  # the parallel stack (node.fingerprint)
LIMITS = "hpcdemo_limits"  # the node's measured limits (node.limits)
GPU = "hpcdemo_gpu"  # the CUDA runtime, or why there is none (gpu.plugin)
RAY = "hpcdemo_ray"  # the Ray cluster used (ray.cluster)

MACHINE_KEYS = (SCHEMA, HARDWARE, FINGERPRINT, LIMITS, GPU, RAY)

# ---------------------------------------------------------------------------------------------
# extra_info: one object per benchmark entry (test)

CLAIMS = "claims"  # claim name -> the measurement's figures (core.measure.Measurement.figures)
SCALING = "scaling"  # one scaling point for the report's plot (node.scaling)
MPI = "mpi"  # the MPI run of an mpi_benchmark test (mpi.session)
FOREIGN_LOAD = "foreign_load"  # cores' worth other processes used while the test ran (gate.plugin)
OWN_CPU = "own_cpu"  # cores' worth the test itself used (gate.plugin)
GATE = "gate"  # the test's own gate thresholds, @pytest.mark.gate(...) (gate.plugin)

EXTRA_KEYS = (CLAIMS, SCALING, MPI, FOREIGN_LOAD, OWN_CPU, GATE)


class SchemaError(ValueError):
    """A saved run in a format this version cannot read (a newer plugin saved it)."""


def stamp(machine_info: dict[str, Any]) -> None:
    """Mark a run's machine_info with the schema it is saved in."""
    machine_info[SCHEMA] = SCHEMA_VERSION


def schema_version(machine_info: Mapping[str, Any]) -> int:
    """The schema a saved run was written in (1 when it has none); SchemaError when this plugin
    cannot read it."""
    version = machine_info.get(SCHEMA, FIRST_SCHEMA_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < FIRST_SCHEMA_VERSION:
        raise SchemaError(f"machine_info.{SCHEMA} is {version!r}, not a schema version")
    if version > SCHEMA_VERSION:
        raise SchemaError(f"saved in schema {version} by a newer pytest-hpcdemo; this one reads "
                          f"schemas {FIRST_SCHEMA_VERSION} to {SCHEMA_VERSION}: upgrade it")
    return version
