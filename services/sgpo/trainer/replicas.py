"""Weight updates to every generator replica, and a watch that brings a replica that lagged back to the newest.

`publish` sends `UpdateWeights(version, folder)` to every replica at once and returns when each has answered
(or failed); the trainer records the policy version after that, so a replica that was up holds the version
before the orchestrator may sample past the staleness bound on it. A replica that was down or restarted (it
comes back with its initial weights and reports their version) is found by `watch`, which asks every replica's
`GetInfo` every `interval_s` and sends the newest published weights to one that reports an older version. The
orchestrator routes only to replicas that report a recent enough version (`sgpo.orchestrator.clients`), so
until then it is passed over.

One lock per replica: a publish and a catch-up never load weights into the same replica at once, and a
catch-up never sends a version older than what the replica already holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)


class ReplicaFanout:
    def __init__(
        self,
        targets: Sequence[str],
        timeout_s: float,
        on_failure: Callable[[str, int, Exception], None] | None = None,
    ) -> None:

        from sgpo.common import auth
        from sgpo.common.server import GRPC_OPTIONS
        from sgpo.v1 import generator_pb2_grpc

        self.targets = list(targets)
        self.timeout_s = timeout_s
        self.on_failure = on_failure
        self._channels = [auth.channel(t, options=GRPC_OPTIONS) for t in self.targets]
        self._stubs = [generator_pb2_grpc.GeneratorServiceStub(c) for c in self._channels]
        self._locks = [threading.Lock() for _ in self.targets]
        self._pool = ThreadPoolExecutor(max(1, len(self.targets)), thread_name_prefix="update-weights")
        self.latest: tuple[int, Path] | None = None
        """The newest published (version, folder): what a replica that lags is sent."""
        self.catch_ups = 0
        """Replicas brought back to the newest weights by `watch` (restarted or missed an update)."""
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()

    def _update(self, i: int, version: int, folder: Path, only_if_behind: bool) -> bool:
        from sgpo.v1 import generator_pb2

        with self._locks[i]:
            if only_if_behind:
                info = self._stubs[i].GetInfo(generator_pb2.GetInfoRequest(), timeout=5.0)
                if info.policy_version >= version:
                    return False
            self._stubs[i].UpdateWeights(
                generator_pb2.UpdateWeightsRequest(version=version, uri=str(folder.resolve())),
                timeout=self.timeout_s,
            )
            return True

    def publish(self, version: int, folder: Path) -> list[str]:
        """UpdateWeights on every replica at once; the targets that failed (each reported to `on_failure`)."""
        self.latest = (version, folder)

        def one(i: int) -> str | None:
            try:
                self._update(i, version, folder, only_if_behind=False)
                return None
            except Exception as e:
                if self.on_failure is not None:
                    self.on_failure(self.targets[i], version, e)
                return self.targets[i]

        return [t for t in self._pool.map(one, range(len(self.targets))) if t is not None]

    def catch_up(self) -> list[str]:
        """Send the newest weights to every replica that answers with an older version; the targets updated."""
        latest = self.latest
        if latest is None:
            return []
        updated = []
        for i, target in enumerate(self.targets):
            try:
                if self._update(i, *latest, only_if_behind=True):
                    updated.append(target)
                    self.catch_ups += 1
                    log.info("replica caught up", extra={"target": target, "version": latest[0]})
            except Exception as e:  # down, or still starting: the next round tries again
                log.debug("replica not reachable", extra={"target": target, "error": str(e)})
        return updated

    def watch(self, interval_s: float) -> None:
        """Call `catch_up` every `interval_s` on a background thread until `close`."""

        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.catch_up()

        self._watcher = threading.Thread(target=loop, name="replica-watch", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(self.timeout_s)
        self._pool.shutdown(wait=True)
        for c in self._channels:
            c.close()
