"""GroupQueue: scored groups from the orchestrator to the trainer on a Redis Stream, at least once, deduped.

Keys, all under `sgpo:{run_id}:`:
  groups          the stream; one entry per Group: {group_id, data = Group protobuf (sgpo.common.convert)}
  group_ids       every group id ever queued; `put` skips an id already there (producer-side dedupe)
  dead            dead-letter stream: {source_id, group_id, reason, size, data?} for entries no trainer can use
  policy_version  the version (trainer step) of the weights the trainer published last; it goes back
                  when a trainer resumes from an older checkpoint (the orchestrator's staleness bound)

Delivery: trainers read through one consumer group. An entry stays pending (in Redis's PEL) until `ack`,
which the trainer calls only once the checkpoint holding the entry's effect is durable. A consumer that
restarts under the same name re-reads its own pending entries first (`read_own_pending`); entries left
pending by a dead consumer are taken over with XAUTOCLAIM once idle past `claim_idle_ms` (`reclaim`); a
live consumer keeps its in-hand entries fresh with `touch`. `trim_acked` drops only entries every consumer
group has acknowledged: unacknowledged entries are never trimmed. Oversized or undecodable entries go to
the dead-letter stream with a reason and are acknowledged: they never stop a consumer.

Connection drops are retried with backoff on a fresh connection (redis-py `Retry`); a blocking read that
loses its connection is re-issued. Anything still failing raises `redis.RedisError` to the caller.

Redis restarted empty (docs/design.md §5): every consumer-side call that meets `NOGROUP` recreates the
consumer group (from the stream's start) and retries once, so a trainer never spins on a group that is gone;
`ensure_policy_version` re-sets the version key if it vanished (SET NX: it never overwrites a newer one).

Secrets: a password comes in the URL (`redis://:PASS@host:port/0`), from `SGPO_REDIS_PASSWORD`, or from a
file (`password_file`); `redact_url` hides it wherever a URL is logged or echoed in an error.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sgpo.common.convert import group_from_bytes, group_to_bytes
from sgpo.core.errors import InvalidInputError
from sgpo.core.types import Group

log = logging.getLogger(__name__)

DEFAULT_MAX_ENTRY_BYTES = 64 * 1024 * 1024
DEAD_LETTER_MAXLEN = 100_000  # the dead stream is a diagnostic log, capped (approximately) at this length
_DEAD_DATA_LIMIT = 1024 * 1024  # payloads up to this size are kept in the dead-letter entry for inspection

# Queue a group unless its id was queued before (atomic: the id set and the stream change together).
_PUT_LUA = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[1], '*', 'group_id', ARGV[1], 'data', ARGV[2])
"""
PutStatus = Literal["queued", "duplicate", "dead_letter"]
Delivery = Literal["new", "own_pending", "reclaimed"]


@dataclass(frozen=True, slots=True)
class PutResult:
    status: PutStatus
    entry_id: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A decoded group with the stream entry it came from (ack that id once its effect is durable)."""

    entry_id: str
    group: Group
    size: int
    delivery: Delivery


@dataclass(frozen=True, slots=True)
class QueueStats:
    length: int
    """Entries in the stream (acknowledged ones stay until `trim_acked`)."""
    lag: int
    """Entries not yet delivered to the consumer group (all of them while no consumer group exists)."""
    pending: int
    """Entries delivered to a consumer and not yet acknowledged."""
    dead: int
    """Entries in the dead-letter stream."""
    consumers: int

    @property
    def backlog(self) -> int:
        """Groups queued and not yet acknowledged (waiting, or held by a trainer until its next checkpoint)."""
        return self.lag + self.pending


def queue_keys(run_id: str) -> dict[str, str]:
    base = f"sgpo:{run_id}"
    return {
        "groups": f"{base}:groups",
        "group_ids": f"{base}:group_ids",
        "dead": f"{base}:dead",
        "policy_version": f"{base}:policy_version",
    }


def _parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(x: Any) -> str:
    """A Redis reply value as text (replies are bytes unless the client decodes them)."""
    return x.decode() if isinstance(x, bytes) else str(x)


PASSWORD_ENV = "SGPO_REDIS_PASSWORD"
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/?#]*)@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***` (userinfo and `?password=`), for logs and error messages."""

    def userinfo(m: re.Match[str]) -> str:
        user, sep, _ = m.group("userinfo").partition(":")
        # `user:secret` keeps the user; a lone name may be a password (some clients read it so): hidden too
        return f"{m.group('scheme')}{user + ':***' if sep else '***'}@"

    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO.sub(userinfo, url, count=1))


def split_password(url: str) -> tuple[str, str | None]:
    """(`url` without its userinfo password, the password or None): so a launcher can pass the password in
    the environment (SGPO_REDIS_PASSWORD) and write only the bare URL to config files."""
    from urllib.parse import unquote

    m = _USERINFO.match(url)
    if m is None or ":" not in m.group("userinfo"):
        return url, None
    user, _, password = m.group("userinfo").partition(":")
    rest = url[m.end() :]
    return f"{m.group('scheme')}{user + '@' if user else ''}{rest}", unquote(password)


def redis_password(password_file: str | os.PathLike[str] | None = None) -> str | None:
    """The Redis password from `password_file` (first line, stripped) or else `SGPO_REDIS_PASSWORD`; None if
    neither is set. A file that cannot be read is an error that names the file, never its content."""
    if password_file:
        try:
            text = open(password_file, encoding="utf-8").read()  # noqa: SIM115
        except OSError as e:
            raise InvalidInputError(
                "redis_password_file", f"cannot read {password_file}: {e.strerror or type(e).__name__}"
            ) from None
        password = text.strip()
        if not password:
            raise InvalidInputError("redis_password_file", f"{password_file} is empty")
        return password
    return os.environ.get(PASSWORD_ENV) or None


def build_redis_client(
    redis_url: str,
    *,
    client_name: str = "",
    socket_timeout_s: float = 30.0,
    retries: int = 8,
    decode_responses: bool = False,
    password_file: str | os.PathLike[str] | None = None,
) -> Any:
    """A redis-py client that retries connection errors on a fresh connection with exponential backoff.

    The password: the URL's own, else `password_file`'s, else `SGPO_REDIS_PASSWORD`'s (none: no AUTH)."""
    import redis
    from redis.backoff import ExponentialWithJitterBackoff

    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidInputError(
            "redis_url",
            f"must look like redis://host:port/db (or rediss://, unix://); got {redact_url(redis_url)!r}",
        )
    # TCP keepalive exists only for TCP sockets; redis-py rejects the option on unix:// (embedded Redis).
    tcp: dict[str, Any] = {} if redis_url.startswith("unix://") else {"socket_keepalive": True}
    password = redis_password(password_file)
    if password is not None and not _url_has_password(redis_url):
        tcp["password"] = password
    return redis.Redis.from_url(
        redis_url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=min(5.0, socket_timeout_s),
        health_check_interval=15,
        **tcp,
        retry=_retry_class()(ExponentialWithJitterBackoff(cap=2.0, base=0.05), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError],
        client_name=client_name or None,
        decode_responses=decode_responses,
    )


class _AuthRefused(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _retry_class() -> Any:
    """redis-py's Retry, except for a refused password: retried with the connection errors it subclasses, a
    wrong or missing password took a minute (retries nested in retries) to surface; it surfaces at once."""
    import redis
    from redis.retry import Retry

    class NoRetryOnAuth(Retry):
        def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
            def attempt() -> Any:
                try:
                    return do()
                except redis.AuthenticationError as e:
                    raise _AuthRefused(e) from e

            try:
                return super().call_with_retry(attempt, fail, *args, **kwargs)
            except _AuthRefused as e:
                raise e.error from None

    return NoRetryOnAuth


def _url_has_password(url: str) -> bool:
    m = _USERINFO.match(url)
    if m is not None and ":" in m.group("userinfo"):
        return True
    return _QUERY_PASSWORD.search(url) is not None


def is_nogroup(e: BaseException) -> bool:
    """Whether a Redis error says the stream or its consumer group is gone (Redis restarted empty)."""
    # UNBLOCKED: a blocking XREADGROUP whose stream was deleted under it (the same loss, seen mid-read)
    return str(e).startswith(("NOGROUP", "UNBLOCKED"))


class GroupQueue:
    """Producer and consumer side of one run's group stream (see the module docstring)."""

    def __init__(
        self,
        redis_url: str,
        run_id: str,
        *,
        consumer_group: str = "trainers",
        consumer: str = "",
        high_water: int = 1024,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        claim_idle_ms: int = 60_000,
        socket_timeout_s: float = 30.0,
        client: Any = None,
        password_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if not run_id or any(c in run_id for c in " \t\n{}*?[]"):
            raise InvalidInputError(
                "run_id", f"must be a non-empty name without spaces or glob characters; got {run_id!r}"
            )
        if high_water < 1:
            raise InvalidInputError(
                "high_water", f"must be >= 1 (groups queued before producers wait); got {high_water}"
            )
        if max_entry_bytes < 1:
            raise InvalidInputError("max_entry_bytes", f"must be >= 1; got {max_entry_bytes}")
        if claim_idle_ms < 1:
            raise InvalidInputError("claim_idle_ms", f"must be >= 1 ms; got {claim_idle_ms}")
        self.run_id = run_id
        self.consumer_group = consumer_group
        self.consumer = consumer or socket.gethostname()
        self.high_water = high_water
        self.max_entry_bytes = max_entry_bytes
        self.claim_idle_ms = claim_idle_ms
        self.keys = queue_keys(run_id)
        self.stream = self.keys["groups"]
        self.dead = self.keys["dead"]
        self._socket_timeout_s = socket_timeout_s
        self.client = client or build_redis_client(
            redis_url,
            client_name=f"sgpo-{run_id}-{self.consumer}"[:120],
            socket_timeout_s=socket_timeout_s,
            password_file=password_file,
        )
        self._probe_args = (redis_url, password_file)
        self._probe: Any = None
        self._put = self.client.register_script(_PUT_LUA)
        self._group_ready = False
        self._group_seen = False  # created or found once: a later NOGROUP means Redis lost it
        self._claim_cursor = "0-0"

    # ---------------------------------------------------------------- producer
    def put(self, group: Group) -> PutResult:
        """Queue a group. A group id queued before is skipped (`duplicate`); an oversized one is dead-lettered."""
        if not group.group_id:
            raise InvalidInputError("group.group_id", "is empty; every group needs a unique id for dedupe")
        data = group_to_bytes(group)
        if len(data) > self.max_entry_bytes:
            reason = f"oversized: {len(data)} bytes > max_entry_bytes {self.max_entry_bytes}"
            self._add_dead("", group.group_id, reason, len(data), None)
            log.warning("group dead-lettered", extra={"group_id": group.group_id, "reason": reason})
            return PutResult("dead_letter", None, reason)
        entry = self._put(keys=[self.stream, self.keys["group_ids"]], args=[group.group_id, data])
        if entry is None:
            return PutResult("duplicate")
        return PutResult("queued", _text(entry))

    def missing(self, group_ids: Sequence[str]) -> list[str]:
        """The ids among `group_ids` this queue never took (or lost: Redis restarted empty or behind)."""
        ids = list(group_ids)
        out: list[str] = []
        for i in range(0, len(ids), 1000):
            part = ids[i : i + 1000]
            known = self.client.smismember(self.keys["group_ids"], part)
            out.extend(g for g, k in zip(part, known, strict=True) if not int(k))
        return out

    def last_entry_id(self) -> str:
        """The id of the newest entry ever added to the stream ("0-0" if there is no stream)."""
        if not self.client.exists(self.stream):
            return "0-0"
        return _text(self.client.xinfo_stream(self.stream)["last-generated-id"])

    def acked_frontier(self) -> tuple[int, int]:
        """(ms, seq): every entry below it was acknowledged by every consumer group ((0, 0) if none exists)."""
        groups = self.client.xinfo_groups(self.stream) if self.client.exists(self.stream) else []
        if not groups:
            return (0, 0)
        bounds: list[tuple[int, int]] = []
        for g in groups:
            ms, seq = _parse_id(_text(g["last-delivered-id"]))
            bounds.append((ms, seq + 1))  # everything up to last-delivered was delivered...
            if int(g["pending"]) > 0:  # ...and the oldest still-pending entry bounds what was acknowledged
                oldest = self.client.xpending(self.stream, _text(g["name"]))["min"]
                if oldest is not None:  # None: another consumer acknowledged the rest since xinfo_groups
                    bounds.append(_parse_id(_text(oldest)))
        return min(bounds)

    def waiting(self) -> int:
        """Groups queued and not yet delivered to any trainer: what the high-water mark bounds.

        Delivered but unacknowledged groups do not count: a trainer holds them until its next checkpoint
        (`checkpoint_every` steps), so counting them would stall producers, and with them the trainer,
        whenever `high_water` <= checkpoint_every x batch_groups.
        """
        return self.stats().lag

    # ---------------------------------------------------------------- consumer
    def ensure_consumer_group(self) -> None:
        """Create the consumer group (from the stream's start, so nothing queued earlier is missed)."""
        import redis

        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.stream, self.consumer_group, id="0", mkstream=True)
            if self._group_seen:
                log.warning(
                    "consumer group recreated: Redis lost it (restarted empty?); reading the stream from its start",
                    extra={"stream": self.stream, "group": self.consumer_group},
                )
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready = self._group_seen = True

    def _grouped(self, call: Any) -> Any:
        """Run a consumer-group command; on NOGROUP (Redis lost the group) recreate the group and retry once."""
        import redis

        self.ensure_consumer_group()
        try:
            return call()
        except redis.ResponseError as e:
            if not is_nogroup(e):
                raise
            self._group_ready = False
            self.ensure_consumer_group()
            return call()

    def read(self, count: int, block_ms: int = 1000) -> list[QueueEntry]:
        """Up to `count` new entries, waiting up to `block_ms` for the first (0: do not wait)."""
        # A blocking read must finish well inside the socket timeout, or the client reads it as a dead link.
        block = min(block_ms, int(self._socket_timeout_s * 1000 / 2)) if block_ms > 0 else None
        reply = self._grouped(
            lambda: self.client.xreadgroup(
                self.consumer_group, self.consumer, {self.stream: ">"}, count=count, block=block
            )
        )
        return self._decode_reply(reply, "new")

    def read_own_pending(self, count: int = 1000) -> list[QueueEntry]:
        """Entries delivered to this consumer name and never acknowledged (read them first after a restart)."""
        out: list[QueueEntry] = []
        start = "0-0"
        while True:
            reply = self._grouped(
                lambda s=start: self.client.xreadgroup(
                    self.consumer_group, self.consumer, {self.stream: s}, count=count
                )
            )
            rows = reply[0][1] if reply else []
            if not rows:
                return out
            out.extend(self._decode_rows(rows, "own_pending"))
            start = _text(rows[-1][0])

    def reclaim(self, count: int = 100, min_idle_ms: int | None = None) -> list[QueueEntry]:
        """Take over entries other consumers left pending for longer than `min_idle_ms` (XAUTOCLAIM)."""
        idle = self.claim_idle_ms if min_idle_ms is None else min_idle_ms
        out: list[QueueEntry] = []
        cursor = "0-0"
        while True:
            reply = self._grouped(
                lambda c=cursor: self.client.xautoclaim(
                    self.stream, self.consumer_group, self.consumer, idle, start_id=c, count=count
                )
            )
            cursor = _text(reply[0])
            out.extend(self._decode_rows(reply[1], "reclaimed"))
            deleted = [_text(x) for x in (reply[2] if len(reply) > 2 else [])]
            for entry_id in deleted:
                # A pending entry whose data vanished (deleted by hand): record it, release it.
                self.dead_letter(entry_id, "entry deleted from the stream while pending", "")
            if cursor == "0-0" or len(out) >= count:
                return out

    def touch(self, entry_ids: Sequence[str]) -> None:
        """Reset the idle time of entries this consumer holds, so no other consumer reclaims them."""
        if not entry_ids:
            return
        for i in range(0, len(entry_ids), 500):
            self._grouped(
                lambda ids=list(entry_ids[i : i + 500]): self.client.xclaim(
                    self.stream, self.consumer_group, self.consumer, 0, ids, justid=True
                )
            )

    def ack(self, entry_ids: Iterable[str]) -> int:
        """Acknowledge entries (their effect is durable); returns how many were pending."""
        ids = list(entry_ids)
        if not ids:
            return 0
        self.ensure_consumer_group()
        n = 0
        for i in range(0, len(ids), 1000):
            n += int(self.client.xack(self.stream, self.consumer_group, *ids[i : i + 1000]))
        return n

    def dead_letter(self, entry_id: str, reason: str, group_id: str, data: bytes | None = None) -> None:
        """Move a pending entry to the dead-letter stream with `reason`, and acknowledge it (atomically)."""
        size = len(data) if data is not None else 0
        keep = data if data is not None and size <= _DEAD_DATA_LIMIT else None
        pipe = self.client.pipeline(transaction=True)
        self._add_dead(entry_id, group_id, reason, size, keep, pipe)
        pipe.xack(self.stream, self.consumer_group, entry_id)
        pipe.execute()
        log.warning(
            "group dead-lettered", extra={"entry_id": entry_id, "group_id": group_id, "reason": reason}
        )

    def trim_acked(self) -> int:
        """Delete entries that every consumer group has acknowledged; returns how many were deleted."""
        ms, seq = self.acked_frontier()
        if (ms, seq) == (0, 0):
            return 0
        return int(self.client.xtrim(self.stream, minid=f"{ms}-{seq}", approximate=False))

    def stats(self) -> QueueStats:
        """Length, lag (undelivered), pending (unacknowledged), dead letters, consumers of this run's queue."""
        pipe = self.client.pipeline(transaction=False)
        pipe.xlen(self.stream)
        pipe.xlen(self.dead)
        length, dead = pipe.execute()
        groups = []
        if length:
            try:
                groups = self.client.xinfo_groups(self.stream)
            except Exception:  # the stream vanished between the calls
                groups = []
        mine = [g for g in groups if _text(g["name"]) == self.consumer_group]
        if not mine:
            return QueueStats(int(length), int(length), 0, int(dead), 0)
        g = mine[0]
        pending = int(g["pending"])
        lag = g.get("lag")
        if lag is None:  # Redis cannot count it (entries deleted mid-stream): bound it by what is left
            lag = max(int(length) - pending, 0)
        return QueueStats(int(length), int(lag), pending, int(dead), int(g["consumers"]))

    # ---------------------------------------------------------------- policy version
    def read_policy_version(self) -> int:
        """The version of the weights the trainer published last (0 before the first publish)."""
        v = self.client.get(self.keys["policy_version"])
        return int(v) if v is not None else 0

    def set_policy_version(self, version: int) -> None:
        """Record the published weights version (the trainer only; it may go back after a resume)."""
        if version < 0:
            raise InvalidInputError("version", f"must be >= 0; got {version}")
        self.client.set(self.keys["policy_version"], int(version))

    def ensure_policy_version(self, version: int) -> bool:
        """Set the version key only if it is missing (Redis restarted empty); True if it was re-set.

        The trainer owns the version and calls this on its heartbeat: without it an orchestrator waiting on
        the staleness bound would wait for a version that no longer exists. SET NX never overwrites a newer
        version recorded meanwhile."""
        if version < 0:
            raise InvalidInputError("version", f"must be >= 0; got {version}")
        return bool(self.client.set(self.keys["policy_version"], int(version), nx=True))

    def has_policy_version(self) -> bool:
        return bool(self.client.exists(self.keys["policy_version"]))

    def reachable(self, timeout_s: float = 1.0) -> bool:
        """One PING on a client of its own without retries: for health checks, which must answer at once."""
        if self._probe is None:
            url, password_file = self._probe_args
            self._probe = build_redis_client(
                url,
                client_name=f"sgpo-{self.run_id}-{self.consumer}-probe"[:120],
                socket_timeout_s=timeout_s,
                retries=0,
                password_file=password_file,
            )
        try:
            return bool(self._probe.ping())
        except Exception:
            return False

    def close(self) -> None:
        self.client.close()
        if self._probe is not None:
            self._probe.close()

    # ---------------------------------------------------------------- internals
    def _add_dead(
        self, entry_id: str, group_id: str, reason: str, size: int, data: bytes | None, pipe: Any = None
    ) -> None:
        fields: dict[str, Any] = {
            "source_id": entry_id,
            "group_id": group_id,
            "reason": reason,
            "size": size,
            "consumer": self.consumer,
            "unix_ms": int(time.time() * 1000),
        }
        if data is not None:
            fields["data"] = data
        (pipe or self.client).xadd(self.dead, fields, maxlen=DEAD_LETTER_MAXLEN, approximate=True)

    def _decode_reply(self, reply: Any, delivery: Delivery) -> list[QueueEntry]:
        if not reply:
            return []
        return self._decode_rows(reply[0][1], delivery)

    def _decode_rows(self, rows: Any, delivery: Delivery) -> list[QueueEntry]:
        out: list[QueueEntry] = []
        for raw_id, fields in rows:
            entry_id = _text(raw_id)
            if fields is None:  # history read of an entry deleted while pending
                self.dead_letter(entry_id, "entry deleted from the stream while pending", "")
                continue
            fields = {_text(k): v for k, v in fields.items()}
            group_id = _text(fields.get("group_id", b""))
            data = fields.get("data")
            if data is None:
                self.dead_letter(entry_id, "undecodable: the entry has no 'data' field", group_id)
                continue
            data = bytes(data)
            if len(data) > self.max_entry_bytes:
                reason = f"oversized: {len(data)} bytes > max_entry_bytes {self.max_entry_bytes}"
                self.dead_letter(entry_id, reason, group_id, data)
                continue
            try:
                group = group_from_bytes(data)
            except Exception as e:  # protobuf DecodeError, a bad enum, a length mismatch...
                self.dead_letter(entry_id, f"undecodable: {type(e).__name__}: {e}", group_id, data)
                continue
            if not group.group_id:
                self.dead_letter(entry_id, "undecodable: the group has no group_id", group_id, data)
                continue
            out.append(QueueEntry(entry_id, group, len(data), delivery))
        return out
