"""Where independent pieces of work run: in this process (``local``) or as Ray tasks (``ray``).

A backend maps a module-level function over a list of items, with large read-only arguments (``shared``) sent
once: ``backend.map(fn, items, shared={"prices": array})`` returns ``[fn(item, **shared) for item in items]``
in order. The Ray backend puts ``shared`` in the object store once and runs one task per item on the cluster
(``ray.init()`` locally, or the cluster at ``address``); results are the same as the local backend's because
each item is computed by the same function on the same inputs.

Every Ray job of finsae is scheduled by :func:`ray_schedule`: the tasks of :class:`RayBackend` (pair tests,
placebo draws) and the model-replica actors of :mod:`finsae.extract.distributed` (feature extraction).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from finsae.errors import ConfigError, ProviderError

logger = logging.getLogger(__name__)

T = TypeVar("T")


def import_ray() -> Any:
    """The ``ray`` module (an optional extra, imported only when a Ray backend is used)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the Ray backend needs Ray: pip install 'finsae[ray]'") from None
    return ray


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to the cluster at ``address`` (or start a local one); True if this call started it."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        kwargs["address"] = address
    elif num_cpus:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(**kwargs)
    except Exception as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise ProviderError(f"cannot start or reach {where}: {exc}") from exc
    return True


@dataclass(frozen=True)
class LocalBackend:
    """Run everything in this process."""

    name: str = "local"

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *,
            shared: dict[str, Any] | None = None) -> list[Any]:
        shared = shared or {}
        return [fn(item, **shared) for item in items]

    def close(self) -> None:
        pass


def ray_schedule(ray: Any, items: Sequence[T], submit: Callable[[int, T], Any], *, slots: int,
                 describe: Callable[[T], str], replace_slot: Callable[[int], None] | None = None,
                 max_failures: int = 0, on_result: Callable[[T, Any], None] | None = None,
                 lost_hint: str = "") -> tuple[list[Any], int]:
    """Run every item on Ray with at most ``slots`` in flight; return the results in item order and the number
    of lost workers. The one scheduling loop of finsae: Ray tasks (:class:`RayBackend`) and Ray actors (the
    extraction's model replicas, :mod:`finsae.extract.distributed`) both run through it.

    ``submit(slot, item)`` starts ``item`` on ``slot`` (a number below ``slots``) and returns its object
    reference; when it is done, the slot's next item starts there, and ``on_result(item, result)`` is called.
    A worker that dies (:class:`ray.exceptions.RayActorError`) costs one failure: with ``replace_slot`` and at
    most ``max_failures`` failures so far, ``replace_slot(slot)`` makes a new worker and the item starts again
    on it; otherwise the run stops with a :class:`ProviderError` (``lost_hint`` is added to its message). An
    exception raised by the work itself stops the run with a :class:`ProviderError` naming ``describe(item)``.
    """
    results: list[Any] = [None] * len(items)
    queue = deque(range(len(items)))
    pending: dict[Any, tuple[int, int]] = {}

    def start(slot: int, k: int) -> None:
        pending[submit(slot, items[k])] = (slot, k)

    for slot in range(min(slots, len(items))):
        start(slot, queue.popleft())
    failures = 0
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        slot, k = pending.pop(done[0])
        try:
            result = ray.get(done[0])
        except ray.exceptions.RayActorError as exc:
            failures += 1
            logger.warning("Ray worker died on %s (%s); %d failure(s) so far", describe(items[k]),
                           type(exc).__name__, failures)
            if replace_slot is None or failures > max_failures:
                raise ProviderError(f"{failures} Ray worker failures (the last on {describe(items[k])}): "
                                    f"stopping{lost_hint}") from exc
            replace_slot(slot)
            start(slot, k)
            continue
        except ray.exceptions.RayTaskError as exc:
            raise ProviderError(f"{describe(items[k])} failed on a Ray worker: {exc.cause!r}") from exc.cause
        results[k] = result
        if on_result is not None:
            on_result(items[k], result)
        if queue:
            start(slot, queue.popleft())
    return results, failures


class RayBackend:
    """Run each item as a Ray task (see the module docstring).

    Parameters:
        workers: at most this many tasks at once (default: as many as the cluster has CPUs).
        address: a Ray cluster address (``"auto"``, ``"ray://head:10001"``); default: the running cluster,
            or a new local one.
        cpus_per_task: CPUs reserved by each task.
    """

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None,
                 cpus_per_task: float = 1.0) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        self.ray = import_ray()
        self._started = ensure_ray(address, num_cpus=workers)
        self.workers, self.cpus_per_task = workers, cpus_per_task
        self._remote: dict[Callable[..., Any], Any] = {}

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *,
            shared: dict[str, Any] | None = None) -> list[Any]:
        ray = self.ray
        if fn not in self._remote:
            self._remote[fn] = ray.remote(num_cpus=self.cpus_per_task)(fn)
        remote = self._remote[fn]
        refs_shared = {k: ray.put(v) for k, v in (shared or {}).items()}
        limit = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_task))
        name = str(getattr(fn, "__name__", fn))
        results, _ = ray_schedule(ray, items, lambda _slot, item: remote.remote(item, **refs_shared),
                                  slots=limit, describe=lambda _item: name)
        return results

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False


Backend = LocalBackend | RayBackend


def get_backend(kind: str = "local", workers: int | None = None, address: str | None = None) -> Backend:
    """A backend by name: ``local`` or ``ray``."""
    if kind == "local":
        return LocalBackend()
    if kind == "ray":
        return RayBackend(workers=workers, address=address)
    raise ConfigError(f"unknown backend {kind!r}; choose 'local' or 'ray'")
