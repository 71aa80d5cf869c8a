"""Distributed batches: ``elir batch --engine ray`` on Ray Data.

Owns :mod:`.cluster` (starting a small local Ray instance or connecting to a
cluster, with one-line errors), :mod:`.worker` (the model stage: a callable
class that Ray Data runs in an actor pool, one loaded model per actor),
:mod:`.job` (the local batch's plan as a Ray dataset of small rows, streamed
back into the local batch's summary), :mod:`.storage` (input and output
folders given as URLs: s3://, gs://, any pyarrow file system) and
:mod:`.precision` (``--precision auto`` decided once, by the driver).

Ray is an optional dependency (``pip install "elir-cli[ray]"``), imported
only inside functions.

Layer 4. May import: elir_cli.pipeline, elir_cli.faces, elir_cli.images, elir_cli.registry, elir_cli.model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elir_cli._lazy import lazy_exports

if TYPE_CHECKING:
    from .cluster import RayOptions
    from .job import RayBatchResult, StoragePlan, plan_storage, run_ray_batch

_LAZY = {"RayOptions": "cluster", "RayBatchResult": "job", "StoragePlan": "job", "plan_storage": "job",
         "run_ray_batch": "job"}

__all__ = ["RayBatchResult", "RayOptions", "StoragePlan", "plan_storage", "run_ray_batch"]


__getattr__ = lazy_exports(__name__, _LAZY, globals())
