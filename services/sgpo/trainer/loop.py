"""The trainer loop: groups from the queue -> optimizer steps -> checkpoints, acknowledgements, published weights.

Exactly-once, by construction:
- a group's id enters `trainer_state.json` in the same atomic checkpoint as the weights it changed;
- its queue entry is acknowledged only after that checkpoint is durable;
- after a crash the trainer resumes from the latest checkpoint; entries it had not acknowledged come back
  (its own pending entries at once, another consumer's after `claim_idle_ms`); those whose group id is
  already in the checkpoint are acknowledged and skipped, the others are trained (again: their earlier
  effect died with the process).
Held entries are `touch`ed by a heartbeat thread so that no other consumer reclaims them while the
trainer is busy. Redis errors are logged (once per outage) and retried; they never stop training, and the
trainer's health is NOT_SERVING while the queue is unreachable (`queue_ok`). Redis restarted empty: the
queue recreates the consumer group on NOGROUP, and the heartbeat re-sets the policy version key (SET NX),
so the orchestrator's staleness bound never waits for a version that is gone (docs/design.md §5).

Under torchrun, rank 0 does all the I/O and broadcasts one command per iteration (a batch, idle, a
checkpoint request, stop); every rank then runs the same collectives.

With `async_publish`, rank 0 writes weights/vN/ and calls UpdateWeights on a publisher thread while the next
steps train. At most one publish is in flight (the next one, a pause, a checkpoint request and the stop wait
for it), and `policy_version` (in Redis and in this process) moves to N only once the generator holds vN:
the orchestrator's staleness bound counts from the weights actually served, never from newer ones.

Several generator replicas: each publish reaches all of them at once, and a replica that missed one (down,
restarted) is sent the newest weights when it answers again (`sgpo.trainer.replicas`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgpo.common.queue import GroupQueue, QueueEntry
from sgpo.core.types import Group
from sgpo.trainer.batch import check_group
from sgpo.trainer.checkpoint import (
    TrainerState,
    append_line,
    clean_temp,
    latest_checkpoint,
    list_checkpoints,
    list_published,
    load_state,
    load_torch,
    prune,
    publish_weights,
    save_checkpoint,
)
from sgpo.trainer.config import TrainerConfig
from sgpo.trainer.distributed import DistContext
from sgpo.trainer.engine import StepResult, TrainEngine
from sgpo.trainer.faults import failpoint
from sgpo.trainer.metrics import TrainerMetrics
from sgpo.trainer.replicas import ReplicaFanout

log = logging.getLogger(__name__)

# One JSON line per step, append-only (safe to tail). After a resume the steps past the checkpoint are
# trained again and logged again: a reader takes the last line of each step.
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainerStatus:
    step: int
    policy_version: int
    paused: bool
    queue_lag: int
    queue_backlog: int
    pending_groups: int
    last_checkpoint: str
    groups_consumed: int
    loaded: bool


def rng_state() -> dict[str, Any]:
    import random

    import numpy as np
    import torch

    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def group_summary(groups: list[Group]) -> dict[str, float]:
    """Signals practitioners look for, per step: zero-std and colored shares, rewards, lengths, policy lag."""
    n = max(len(groups), 1)
    completions = [c for g in groups for c in g.completions]
    rewards = [r for g in groups for r in g.rewards]
    mean_r = sum(rewards) / max(len(rewards), 1)
    return {
        "groups": len(groups),
        "frac_zero_std": sum(all(a == 0.0 for a in g.advantages) for g in groups) / n,
        "frac_colored": sum(g.colored for g in groups) / n,
        "frac_all_negative": sum(g.kind == "all_negative" for g in groups) / n,
        "reward_mean": mean_r,
        "reward_std": (sum((r - mean_r) ** 2 for r in rewards) / max(len(rewards), 1)) ** 0.5,
        "completion_len_mean": sum(len(c.token_ids) for c in completions) / max(len(completions), 1),
        "group_policy_version_mean": sum(g.policy_version for g in groups) / n,
    }


class Trainer:
    """One trainer process (one rank under torchrun): load, then `run(stop)` until stop or max_steps."""

    def __init__(
        self, cfg: TrainerConfig, metrics: TrainerMetrics | None = None, dist: DistContext | None = None
    ) -> None:
        self.cfg = cfg
        self.dist = dist or DistContext()
        self.metrics = metrics or TrainerMetrics()
        self.engine = TrainEngine(cfg, self.dist)
        self.run_dir = Path(cfg.run_dir)
        self.queue: GroupQueue | None = None
        self.step = 0
        self.policy_version = 0
        self.history: list[list[str]] = []
        self.durable_ids: set[str] = set()  # in the last durable checkpoint
        self.trained_ids: set[str] = set()  # trained since
        self.unacked: list[str] = []  # entry ids to acknowledge after the next checkpoint
        self.buffer: list[QueueEntry] = []  # accepted, not yet trained
        self.last_checkpoint: Path | None = None
        self.last_checkpoint_step = -1
        self.loaded = threading.Event()
        self._paused = False
        self._idle = threading.Event()  # set while paused with no step in progress
        self._lock = threading.Lock()
        self._ckpt_requests: list[Future[tuple[str, int]]] = []
        self._read_own_pending = True
        self._last_reclaim = 0.0
        self._redis_backoff = 0.0
        self.queue_ok = threading.Event()  # clear while Redis does not answer (health: NOT_SERVING)
        self.queue_ok.set()
        self._outage_since: float | None = None
        self._version_to_record: int | None = None
        self._version_lock = threading.Lock()  # the loop and the publisher both record versions
        self._publisher: threading.Thread | None = None  # the publish in flight (async_publish)
        self._publish_error: BaseException | None = None
        self.replicas: ReplicaFanout | None = None  # rank 0, with generator targets

    # ------------------------------------------------------------------ load
    def load(self) -> None:
        cfg = self.cfg
        model_path = cfg.require_model()
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            clean_temp(self.run_dir)
        self.dist.barrier()
        ckpt = latest_checkpoint(self.run_dir)
        self.engine.load(ckpt or model_path)
        if ckpt is not None:
            state = load_state(ckpt)
            self.engine.load_optimizer(load_torch(ckpt / "optimizer.pt") if self.dist.is_main else None)
            set_rng_state(load_torch(ckpt / "rng.pt"))
            self.step = state.step
            self.history = state.consumed
            self.durable_ids = state.consumed_ids()
            self.last_checkpoint, self.last_checkpoint_step = ckpt, state.step
            log.info(
                "resumed", extra={"checkpoint": str(ckpt), "step": self.step, "groups": len(self.durable_ids)}
            )
        if self.dist.is_main:
            self.queue = GroupQueue(
                cfg.redis_url,
                cfg.run_id,
                consumer_group=cfg.consumer_group,
                consumer=cfg.consumer,
                max_entry_bytes=cfg.max_entry_bytes,
                claim_idle_ms=cfg.claim_idle_ms,
                password_file=cfg.redis_password_file,
            )
            if cfg.generator_target:
                self.replicas = ReplicaFanout(
                    cfg.generator_target, cfg.update_weights_timeout_s, self._publish_failed
                )
        # The generator must hold weights on this trajectory: republish if the newest published version is
        # not this checkpoint's step (a crash after publishing, or a publish that never happened).
        published = list_published(self.run_dir) if self.dist.is_main else []
        newest = published[-1][0] if published else 0
        if self.replicas is not None and published and newest == self.step:
            self.replicas.latest = published[-1]
        need = self.dist.broadcast_object(newest != self.step)
        if need:
            self._save(checkpoint=False, publish=True)
        else:
            self.policy_version = self.step
            self._version_to_record = self.step
        self.metrics.step.set(self.step)
        self.metrics.policy_version.set(self.policy_version)
        self.loaded.set()

    # ------------------------------------------------------------------ control (thread-safe)
    def pause(self, wait_s: float = 0.0) -> bool:
        """Take no new batch. With `wait_s`, wait until the step in progress, its weights published, is done;
        returns whether the loop is idle (so the served policy is this step's, as long as it stays paused).
        While the model is still loading no step can be in progress: it does not wait then."""
        self._paused = True
        self.metrics.paused.set(1)
        if wait_s > 0 and self.loaded.is_set():
            return self._idle.wait(wait_s)
        return self._idle.is_set()

    def resume(self) -> None:
        self._paused = False
        self._idle.clear()
        self.metrics.paused.set(0)

    def request_checkpoint(self, timeout: float = 600.0) -> tuple[str, int]:
        """Ask the loop for a checkpoint of the current state and wait for its (path, step)."""
        fut: Future[tuple[str, int]] = Future()
        with self._lock:
            self._ckpt_requests.append(fut)
        return fut.result(timeout)

    def status(self) -> TrainerStatus:
        lag = backlog = -1
        if self.queue is not None:
            try:
                s = self.queue.stats()
                lag, backlog = s.lag, s.backlog
            except Exception:
                self.metrics.redis_errors.inc()
        with self._lock:
            pending = len(self.unacked) + len(self.buffer)
        return TrainerStatus(
            step=self.step,
            policy_version=self.policy_version,
            paused=self._paused,
            queue_lag=lag,
            queue_backlog=backlog,
            pending_groups=pending,
            last_checkpoint=str(self.last_checkpoint or ""),
            groups_consumed=sum(len(ids) for ids in self.history),
            loaded=self.loaded.is_set(),
        )

    # ------------------------------------------------------------------ run
    def run(self, stop: threading.Event) -> None:
        """Train until `stop` is set (rank 0's decides) or max_steps; always ends with a durable checkpoint."""
        heartbeat = None
        if self.dist.is_main:
            heartbeat = threading.Thread(
                target=self._heartbeat, args=(stop,), name="trainer-heartbeat", daemon=True
            )
            heartbeat.start()
            if self.replicas is not None:
                self.replicas.watch(self.cfg.replica_check_s)
        try:
            while True:
                cmd = self.dist.broadcast_object(self._next_command(stop) if self.dist.is_main else None)
                if cmd["kind"] == "stop":
                    break
                if cmd["kind"] == "checkpoint":
                    self._save(checkpoint=cmd["write"])
                    self._resolve_requests()
                elif cmd["kind"] == "step":
                    self._train(cmd["groups"])
            if self.step > max(self.last_checkpoint_step, 0):
                self._save(checkpoint=True)
            self._wait_publish()
            self._resolve_requests()
            log.info("trainer stopped", extra={"step": self.step, "checkpoint": str(self.last_checkpoint)})
        finally:
            stop.set()
            if heartbeat is not None:
                heartbeat.join(5)
            if self.replicas is not None:
                self.replicas.close()

    def _next_command(self, stop: threading.Event) -> dict[str, Any]:
        """Rank 0: what every rank does next."""
        if stop.is_set() or (self.cfg.max_steps and self.step >= self.cfg.max_steps):
            return {"kind": "stop"}
        with self._lock:
            if self._ckpt_requests:
                stale = self.step != self.last_checkpoint_step or self.last_checkpoint is None
                return {"kind": "checkpoint", "write": stale}
        if self._paused:
            self._wait_publish()  # a paused trainer serves this step's weights
        self._record_version()
        if self._paused:
            self._idle.set()
            time.sleep(self.cfg.read_block_ms / 1000)
            return {"kind": "idle"}
        if len(self.buffer) < self.cfg.batch_groups:
            self._fill()
        if len(self.buffer) >= self.cfg.batch_groups:
            with self._lock:
                batch, self.buffer = (
                    self.buffer[: self.cfg.batch_groups],
                    self.buffer[self.cfg.batch_groups :],
                )
                self.unacked.extend(e.entry_id for e in batch)  # held until the checkpoint holding them
            return {"kind": "step", "groups": [e.group for e in batch]}
        return {"kind": "idle"}

    def _fill(self) -> None:
        """Rank 0: read from the queue into the buffer (own pending first, then reclaimed, then new)."""
        import redis

        assert self.queue is not None
        q, cfg = self.queue, self.cfg
        if self._redis_backoff:
            time.sleep(self._redis_backoff)
        try:
            entries: list[QueueEntry] = []
            if self._read_own_pending:
                entries = q.read_own_pending()
                q.touch(
                    [e.entry_id for e in entries]
                )  # ours again: fresh, so no other consumer reclaims them
                self._read_own_pending = False
            now = time.monotonic()
            if now - self._last_reclaim > cfg.claim_idle_ms / 2000:
                entries += q.reclaim()
                self._last_reclaim = now
            if not entries:
                entries = q.read(cfg.batch_groups - len(self.buffer), block_ms=cfg.read_block_ms)
            for e in entries:
                self._accept(e)
            self._redis_backoff = 0.0
            self._queue_reachable()
        except (redis.RedisError, OSError) as e:
            self.metrics.redis_errors.inc()
            self._redis_backoff = min(max(self._redis_backoff * 2, 0.1), 5.0)
            self._queue_unreachable(e)

    def _queue_unreachable(self, e: BaseException) -> None:
        """Health NOT_SERVING; one warning per outage (not one per retry)."""
        with self._lock:
            first = self._outage_since is None
            if first:
                self._outage_since = time.monotonic()
        self.queue_ok.clear()
        if first:
            log.warning("redis unavailable; retrying with backoff", extra={"error": str(e)})
        else:
            log.debug("redis still unavailable", extra={"error": str(e)})

    def _queue_reachable(self) -> None:
        with self._lock:
            since, self._outage_since = self._outage_since, None
        self.queue_ok.set()
        if since is not None:
            log.warning("redis reachable again", extra={"outage_s": round(time.monotonic() - since, 1)})

    def _accept(self, e: QueueEntry) -> None:
        assert self.queue is not None
        gid = e.group.group_id
        with self._lock:
            held = {x.entry_id for x in self.buffer} | set(self.unacked)
            if e.entry_id in held:  # a re-delivery of an entry already in hand
                return
            buffered = next((i for i, x in enumerate(self.buffer) if x.group.group_id == gid), None)
            if buffered is not None:
                # Same group, other entry (re-queued after Redis lost the first): hold the new entry, the
                # live one, until the group's checkpoint; the old entry may be gone, release it with the next.
                self.unacked.append(self.buffer[buffered].entry_id)
                self.buffer[buffered] = e
                self.metrics.groups.labels("duplicate").inc()
                return
            if gid in self.trained_ids:
                self.unacked.append(
                    e.entry_id
                )  # same group, other entry: acknowledge with the next checkpoint
                self.metrics.groups.labels("duplicate").inc()
                return
        if gid in self.durable_ids:  # trained and checkpointed before a crash: release it
            self.queue.ack([e.entry_id])
            self.metrics.groups.labels("duplicate").inc()
            log.info(
                "skipped a group already in the checkpoint", extra={"group_id": gid, "entry_id": e.entry_id}
            )
            return
        reason = check_group(e.group, self.engine.vocab_size, self.cfg.max_seq_len)
        if reason is not None:
            self.queue.dead_letter(e.entry_id, reason, gid)
            self.metrics.groups.labels("dead_letter").inc()
            return
        with self._lock:
            self.buffer.append(e)

    def _heartbeat(self, stop: threading.Event) -> None:
        interval = max(self.cfg.claim_idle_ms / 4000, 0.25)
        while not stop.wait(interval):
            with self._lock:
                held = [e.entry_id for e in self.buffer] + list(self.unacked)
            if self.queue is None:
                continue
            try:
                if held:
                    self.queue.touch(held)
                # Redis restarted empty: the version the orchestrator paces on is gone; this trainer owns it.
                if self.loaded.is_set() and self.queue.ensure_policy_version(self.policy_version):
                    log.warning(
                        "policy_version was missing in Redis (restarted empty?); set it again",
                        extra={"version": self.policy_version},
                    )
                self._queue_reachable()
            except Exception as e:
                self.metrics.redis_errors.inc()
                self._queue_unreachable(e)

    # ------------------------------------------------------------------ step, checkpoint, publish
    def _train(self, groups: list[Group]) -> None:
        result = self.engine.train_step(groups, self.step)
        self.step += 1
        ids = [g.group_id for g in groups]
        self.history.append(ids)
        if self.dist.is_main:
            with self._lock:
                self.trained_ids.update(ids)
            self._log_step(result, groups)
        failpoint("step.done")
        ckpt = self.step % self.cfg.checkpoint_every == 0
        pub = self.step % self.cfg.publish_every == 0
        if ckpt or pub:
            self._save(checkpoint=ckpt, publish=pub)
        last = bool(self.cfg.max_steps) and self.step >= self.cfg.max_steps
        if self.cfg.pause_every and self.step % self.cfg.pause_every == 0 and not last:
            self.pause()  # weights published above: whoever resumes it can evaluate exactly this step

    def _log_step(self, r: StepResult, groups: list[Group]) -> None:
        m = self.metrics
        summary = group_summary(groups)
        tokens_per_s = r.forwarded_tokens / r.seconds if r.seconds > 0 else 0.0
        m.step.set(self.step)
        m.loss.set(r.loss)
        m.kl.set(r.kl)
        m.clip.set(r.clip_fraction)
        m.entropy.set(r.entropy)
        m.grad_norm.set(r.grad_norm)
        m.lr.set(r.lr)
        m.tokens_per_s.set(tokens_per_s)
        m.zero_std.set(summary["frac_zero_std"])
        m.colored.set(summary["frac_colored"])
        m.step_seconds.observe(r.seconds)
        m.groups.labels("trained").inc(len(groups))
        m.tokens.inc(r.completion_tokens)
        line: dict[str, Any] = {
            "step": self.step,
            "time_unix": time.time(),
            "policy_version": self.policy_version,
        }
        line.update(r.as_dict())
        line["tokens_per_s"] = tokens_per_s
        line["policy_lag_mean"] = self.step - 1 - summary.pop("group_policy_version_mean")
        line.update(summary)
        if self.queue is not None:
            try:
                s = self.queue.stats()
                m.queue_lag.set(s.lag)
                m.queue_pending.set(s.pending)
                m.queue_dead.set(s.dead)
                line.update(queue_lag=s.lag, queue_pending=s.pending, queue_dead=s.dead)
            except Exception:
                m.redis_errors.inc()
        append_line(self.run_dir / METRICS_FILE, json.dumps(line))
        log.info(
            "step",
            extra={
                k: line[k]
                for k in ("step", "loss", "kl", "clip_fraction", "entropy", "grad_norm", "tokens_per_s")
            },
        )

    def _save(self, *, checkpoint: bool, publish: bool = False) -> None:
        """Checkpoint and/or publish the current weights (a collective: gathers the full state once)."""
        if not (checkpoint or publish):
            return
        t0 = time.perf_counter()
        if checkpoint:
            failpoint("checkpoint.before")
        model_sd, optim_sd = self.engine.gather_state()
        if checkpoint:
            if self.dist.is_main:
                assert model_sd is not None and optim_sd is not None
                self._write_checkpoint(model_sd, optim_sd)
            self.last_checkpoint_step = self.step
            self.metrics.checkpoint_seconds.observe(time.perf_counter() - t0)
        if publish:
            if self.dist.is_main:
                assert model_sd is not None
                weights = self.engine.publishable(model_sd, copy=self.cfg.async_publish)
                if self.cfg.async_publish:
                    self._wait_publish()
                    self._publisher = threading.Thread(
                        target=self._publish_in_background,
                        args=(weights, self.step),
                        name="trainer-publisher",
                        daemon=True,
                    )
                    self._publisher.start()
                else:
                    self._publish(weights, self.step)
            else:
                self.policy_version = self.step
        self.dist.barrier()

    def _publish_in_background(self, model_sd: dict[str, Any], version: int) -> None:
        try:
            self._publish(model_sd, version)
        except BaseException as e:  # raised in the loop by _wait_publish, as a synchronous publish would be
            self._publish_error = e

    def _wait_publish(self) -> None:
        """Rank 0: wait for the publish in flight, if any; re-raise its failure (a disk error, say)."""
        if self._publisher is not None:
            self._publisher.join()
            self._publisher = None
        if self._publish_error is not None:
            e, self._publish_error = self._publish_error, None
            raise e

    def _write_checkpoint(self, model_sd: dict[str, Any], optim_sd: dict[str, Any]) -> None:
        state = TrainerState(step=self.step, policy_version=self.policy_version, consumed=self.history)
        path = save_checkpoint(
            self.run_dir,
            state,
            write_model=lambda d: self.engine.save_model(model_sd, d),
            optim_state=optim_sd,
            rng_state=rng_state(),
            tokenizer_from=self.cfg.model_path,
        )
        failpoint("checkpoint.renamed")
        self.last_checkpoint = path
        with self._lock:
            to_ack, self.unacked = self.unacked, []
            self.durable_ids |= self.trained_ids
            self.trained_ids = set()
        self._ack(to_ack)
        failpoint("checkpoint.acked")
        prune(list_checkpoints(self.run_dir), self.cfg.keep_checkpoints, self.cfg.keep_every)
        log.info("checkpoint", extra={"path": str(path), "step": self.step, "acked": len(to_ack)})

    def _ack(self, entry_ids: list[str]) -> None:
        """Acknowledge entries whose effect is durable; if Redis is down, try again with the next checkpoint
        (a restart in between acknowledges them anyway: their ids are in the checkpoint)."""
        import redis

        assert self.queue is not None
        try:
            self.queue.ack(entry_ids)
            self.queue.trim_acked()
        except (redis.RedisError, OSError) as e:
            self.metrics.redis_errors.inc()
            with self._lock:
                self.unacked.extend(entry_ids)
            log.warning("ack failed; will retry after the next checkpoint", extra={"error": str(e)})

    def _publish(self, model_sd: dict[str, Any], version: int) -> None:
        """Rank 0: weights/v{version}/, UpdateWeights, then policy_version = version (in Redis too)."""
        folder = publish_weights(
            self.run_dir,
            version,
            write_model=lambda d: self.engine.save_model(model_sd, d),
            tokenizer_from=self.cfg.model_path,
            keep=self.cfg.keep_weights,
        )
        if self.replicas is not None:
            self.replicas.publish(version, folder)  # every replica at once; failures go to _publish_failed
        self.policy_version = version
        with self._version_lock:
            self._version_to_record = version
        self._record_version()
        self.metrics.policy_version.set(version)
        log.info("published weights", extra={"version": version, "path": str(folder)})

    def _publish_failed(self, target: str, version: int, e: Exception) -> None:
        self.metrics.publish_failures.inc()
        log.warning(
            "UpdateWeights failed; the replica keeps older weights until it answers again",
            extra={"target": target, "version": version, "error": str(e)},
        )

    def _record_version(self) -> None:
        """Rank 0: store the published version in Redis (retried each iteration until Redis takes it)."""
        with self._version_lock:
            if self._version_to_record is None or self.queue is None:
                return
            try:
                self.queue.set_policy_version(self._version_to_record)
                self._version_to_record = None
            except Exception as e:
                self.metrics.redis_errors.inc()
                log.warning("could not record policy_version", extra={"error": str(e)})

    def _resolve_requests(self) -> None:
        with self._lock:
            reqs, self._ckpt_requests = self._ckpt_requests, []
        for fut in reqs:
            if self.last_checkpoint is not None:
                fut.set_result((str(self.last_checkpoint), self.last_checkpoint_step))
            else:
                fut.set_exception(RuntimeError("no checkpoint could be written"))
