"""``tf.distribute`` strategy from a flag value, and the chief/worker roles of a run.

* ``default``: the default (no-op) strategy: one device, the first GPU if any, else the CPU.
* ``mirrored``: ``MirroredStrategy`` over every local GPU (synchronous data parallelism, NCCL
  all-reduce); without GPUs it falls back to the CPU (one replica) unless ``devices`` is given
  (tests pass two logical CPU devices).
* ``multi_worker``: ``MultiWorkerMirroredStrategy``; the cluster and this process's role come from
  the ``TF_CONFIG`` environment variable (``{"cluster": {"worker": ["host:port", ...]},
  "task": {"type": "worker", "index": i}}``). Worker 0 is the chief: it alone writes summaries
  and the real checkpoints; the others save to a scratch folder that is deleted afterwards (every
  worker must take part in a save because variables are synchronised by collectives).

The global batch (``--batch_size``) is split evenly over ``num_replicas_in_sync`` replicas.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from training.config import STRATEGIES  # noqa: F401  (the --strategy names, no TensorFlow)


def make_strategy(name: str = "default", devices=None) -> tf.distribute.Strategy:
    """Builds the strategy named by ``--strategy``; ``ValueError`` on a bad name or setup."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "--strategy=multi_worker needs the TF_CONFIG environment variable describing the "
                'cluster, e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}.'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")


def task_info(strategy: tf.distribute.Strategy) -> tuple[str | None, int | None]:
    """``(task_type, task_id)`` of this process in a multi-worker cluster, else ``(None, None)``."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the process that writes outputs: single-process runs, the chief, or worker 0."""
    task_type, task_id = task_info(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return task_type == "worker" and task_id == 0 and not has_chief


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line for the run summary: strategy class, replica count and devices."""
    try:
        devices = tuple(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has no device list
        devices = ()
    task_type, task_id = task_info(strategy)
    role = f", task {task_type}:{task_id}" if task_type is not None else ""
    return (
        f"{type(strategy).__name__} ({strategy.num_replicas_in_sync} replica(s)"
        f"{role}; devices {', '.join(devices) or 'default'})"
    )
