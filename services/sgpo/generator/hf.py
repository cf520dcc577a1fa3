"""The `hf` engine: transformers models, batched sampling with a KV cache, on CPU or GPU.

Requests are cut into rows (one per completion) and a scheduler thread runs rows from concurrent requests
together: each prompt is prefilled once, its cache is repeated for its `n` rows, then all rows decode in
lock-step and finished rows are dropped from the batch. Every row samples from its own random stream, so a
seeded request gives the same completions whatever it is batched with.

Sharing (docs/design.md, "6. Limits"): a batch is filled round-robin over the waiting requests, one row of
each in turn, so a request of thousands of rows cannot hold a small one behind it for more than one batch; a
cancelled request's rows leave the queue and the running batch at the next decoding step; and when a batch
fails, each of its requests is run again alone, so only the request that fails gets the error.

Weight updates build a new model next to the serving one and swap a (model, version) pair under a lock;
a batch holds the pair it started with, so requests in flight finish on the old weights.
"""

from __future__ import annotations

import collections
import copy
import inspect
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sgpo.common.server import UnavailableError
from sgpo.core.errors import InvalidInputError
from sgpo.core.types import Completion, FinishReason
from sgpo.generator.engine import (
    IncrementalDetokenizer,
    PromptResult,
    RequestCancelled,
    WeightsRejectedError,
    derive_seed,
    encode_prompt,
    encode_prompts,
    find_stop,
    max_token_chars,
    read_state_dict,
)
from sgpo.generator.sampling import SamplingParams, validate_prompts, validate_sampling

log = logging.getLogger(__name__)

# Drop finished rows from the cache once this fraction of the batch is done (a copy of the whole cache).
_PRUNE_FRACTION = 0.25


@dataclass(eq=False)
class _Request:
    params: SamplingParams
    prompt_ids: list[list[int]]
    results: list[list[Completion | None]]
    remaining: int
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    cancel: threading.Event | None = None  # the caller's: the decoding loop checks it at every step

    @property
    def dropped(self) -> bool:
        """Failed, or cancelled by its caller (generate() then fails it; its rows stop decoding right away)."""
        return self.error is not None or (self.cancel is not None and self.cancel.is_set())


@dataclass
class _Row:
    request: _Request
    prompt_index: int
    sample_index: int
    seed: int  # the row's random stream starts here in every batch it runs in (a retry draws the same)


@dataclass
class _Weights:
    model: Any
    version: int


class HFEngine:
    """transformers-backed engine; see the module docstring."""

    name = "hf"

    def __init__(
        self,
        model_path: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_batch_size: int = 256,
        batch_wait_s: float = 0.005,
        max_model_len: int | None = None,
        policy_version: int = 0,
        served_model_name: str | None = None,
        trust_remote_code: bool = False,
        max_prompt_chars: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if dtype == "auto":
            torch_dtype = torch.float32 if self.device.type == "cpu" else torch.bfloat16
        else:
            torch_dtype = getattr(torch, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
        model.to(self.device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model_name = served_model_name or str(model_path)
        ctx = getattr(model.config, "max_position_embeddings", None) or 4096
        self.max_model_len = int(min(max_model_len or ctx, ctx))
        self.max_prompt_chars = max_prompt_chars or self.max_model_len * max_token_chars(self.tokenizer)
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = next(iter(self.eos_ids), 0)
        self._weights = _Weights(model, policy_version)
        self._cache_kw = (
            "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        )
        self._weights_lock = threading.Lock()
        self._update_lock = threading.Lock()
        self._tok_lock = threading.Lock()
        self._rng = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
        # waiting rows per request, in arrival order of the requests (a batch takes one row of each in turn)
        self._pending: collections.OrderedDict[_Request, collections.deque[_Row]] = collections.OrderedDict()
        self._cv = threading.Condition()
        self._closed = False
        self.stats = {"batches": 0, "rows": 0, "tokens": 0}
        self._decoding = 0  # rows the running batch still decodes (cancelled ones leave it at the next step)
        self._worker = threading.Thread(target=self._loop, name="hf-engine", daemon=True)
        self._worker.start()

    # --- public API -------------------------------------------------------------------------------

    @property
    def policy_version(self) -> int:
        return self._weights.version

    def count_tokens(self, text: str) -> int:
        with self._tok_lock:
            return len(encode_prompt(self.tokenizer, text))

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInputError(
                "messages", f"model {self.model_name} has no chat template; use /v1/completions with a prompt"
            )
        return str(
            self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        )

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, cancel: threading.Event | None = None
    ) -> list[PromptResult]:
        """`cancel`, once set, drops the request's rows (waiting or running) and raises RequestCancelled."""
        import torch

        validate_prompts(prompts)
        validate_sampling(params)
        prompt_ids = encode_prompts(
            self.tokenizer, self._tok_lock, prompts, self.max_model_len, self.max_prompt_chars
        )
        req = _Request(
            params, prompt_ids, [[None] * params.n for _ in prompts], len(prompts) * params.n, cancel=cancel
        )
        rows = collections.deque()
        for i in range(len(prompts)):
            for j in range(params.n):
                if params.seed is not None:
                    seed = derive_seed(params.seed, i, j)
                else:
                    seed = int(torch.randint(0, 2**62, (), generator=self._rng))
                rows.append(_Row(req, i, j, seed))
        with self._cv:
            if self._closed:
                raise UnavailableError("the generator is shutting down; retry on another replica")
            self._pending[req] = rows
            self._cv.notify()
        if cancel is None:
            req.done.wait()
        else:
            while not req.done.wait(0.05):
                if cancel.is_set():
                    self.cancel(req)
        if req.error is not None:
            raise req.error
        return [
            PromptResult(tuple(prompt_ids[i]), tuple(c for c in req.results[i] if c is not None))
            for i in range(len(prompts))
        ]

    def update_weights(self, version: int, uri: str) -> int:
        import torch

        if version < 0:
            raise InvalidInputError("version", f"must be >= 0; got {version}")
        with self._update_lock:
            t0 = time.monotonic()
            state = read_state_dict(uri)
            current = self._weights.model
            params = dict(current.named_parameters(remove_duplicate=False))
            params.update(dict(current.named_buffers(remove_duplicate=False)))
            persistent = set(current.state_dict().keys())
            tied = _tied_names(current)
            unexpected = sorted(set(state) - set(params))
            if unexpected:
                raise WeightsRejectedError(
                    f"uri: {uri} has tensors this model does not: {unexpected[:5]}; is it the same architecture?"
                )
            missing = sorted(k for k in persistent - set(state) if k not in tied)
            if missing:
                raise WeightsRejectedError(f"uri: {uri} lacks tensors {missing[:5]} (of {len(missing)})")
            for k, t in state.items():
                if tuple(t.shape) != tuple(params[k].shape):
                    raise WeightsRejectedError(
                        f"uri: tensor {k} has shape {tuple(t.shape)}; the model needs {tuple(params[k].shape)}"
                    )
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise WeightsRejectedError(f"uri: tensor {k} holds NaN or inf; refusing to serve it")
            new = copy.deepcopy(current)
            new_params = dict(new.named_parameters(remove_duplicate=False))
            new_params.update(dict(new.named_buffers(remove_duplicate=False)))
            with torch.no_grad():
                for k, t in state.items():
                    new_params[k].copy_(t)
            with self._weights_lock:
                self._weights = _Weights(new, version)
            log.info(
                "weights updated",
                extra={"version": version, "uri": uri, "seconds": round(time.monotonic() - t0, 3)},
            )
            return version

    def unfinished(self) -> int:
        with self._cv:
            waiting = sum(len(q) for q in self._pending.values())
        return waiting + self._decoding

    def cancel(self, req: _Request) -> None:
        """Drop a request: its waiting rows leave the queue, its running rows stop at the next step."""
        with self._cv:
            self._pending.pop(req, None)
        self._fail(req, RequestCancelled("the request was cancelled by its caller"))

    def close(self) -> None:
        with self._cv:
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
            self._cv.notify_all()
        for req in pending:
            self._fail(req, UnavailableError("the generator shut down before this request ran"))
        self._worker.join(timeout=30)

    # --- scheduler --------------------------------------------------------------------------------

    def _take(self) -> list[_Row]:
        with self._cv:
            while not self._pending and not self._closed:
                self._cv.wait()
            if self._closed:
                return []
            waiting = sum(len(q) for q in self._pending.values())
            if waiting < self.max_batch_size and self.batch_wait_s > 0:
                self._cv.wait(self.batch_wait_s)  # let concurrent requests join the batch
            rows: list[_Row] = []
            while self._pending and len(rows) < self.max_batch_size:
                for req in list(self._pending):  # one row of each waiting request in turn
                    q = self._pending[req]
                    rows.append(q.popleft())
                    if not q:
                        del self._pending[req]
                    if len(rows) >= self.max_batch_size:
                        break
            # rows of one request stay together (they share a prompt's prefill); order does not matter
            rows.sort(key=lambda r: (id(r.request), r.prompt_index, r.sample_index))
            return rows

    @staticmethod
    def _fail(req: _Request, err: BaseException) -> None:
        if req.error is None:
            req.error = err
        req.done.set()

    def _loop(self) -> None:
        while True:
            rows = self._take()
            if not rows:
                return
            live = [r for r in rows if not r.request.dropped]
            with self._weights_lock:
                weights = self._weights
            try:
                self._run_isolated(weights, live)
            finally:
                self._decoding = 0

    def _run_isolated(self, weights: _Weights, rows: list[_Row]) -> None:
        """Run a batch; if it fails, run each of its requests alone, so that only the failing one fails."""
        if not rows:
            return
        try:
            completions = self._run_batch(weights, rows)
        except Exception as e:  # a failed batch fails its requests, never the engine
            by_request: dict[_Request, list[_Row]] = {}
            for r in rows:
                by_request.setdefault(r.request, []).append(r)
            if len(by_request) > 1:
                log.warning("a batch of %d requests failed (%s); running each alone", len(by_request), e)
                for part in by_request.values():
                    self._run_isolated(weights, part)
                return
            # no traceback here: the transport that answers the caller logs it, once
            log.warning("a request failed in the engine: %s: %s", type(e).__name__, e)
            self._fail(rows[0].request, e)
            return
        for r, c in zip(rows, completions, strict=True):
            if c is None or r.request.dropped:
                continue  # cancelled while it ran
            r.request.results[r.prompt_index][r.sample_index] = c
            r.request.remaining -= 1
            if r.request.remaining == 0:
                r.request.done.set()

    # --- one batch --------------------------------------------------------------------------------

    def _run_batch(self, weights: _Weights, rows: list[_Row]) -> list[Completion | None]:
        import torch
        from transformers import DynamicCache

        model, dev = weights.model, self.device
        self.stats["batches"] += 1
        self.stats["rows"] += len(rows)
        # Prefill each distinct prompt once; rows share it through the cache.
        keys: dict[tuple[int, int], int] = {}
        prompts: list[list[int]] = []
        row_prompt = []
        for r in rows:
            key = (id(r.request), r.prompt_index)
            if key not in keys:
                keys[key] = len(prompts)
                prompts.append(r.request.prompt_ids[r.prompt_index])
            row_prompt.append(keys[key])
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        # Positions count real tokens only (as in compute_token_logprobs), so left padding shifts nothing.
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = _growing_cache(model, DynamicCache)
        # transformers 5 renamed `past_key_values` to `cache`; the cache object is updated in place either way.
        kw = {self._cache_kw: cache, "use_cache": True}
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1, **kw)
            index = torch.tensor(row_prompt, device=dev)
            logits = out.logits[:, -1, :].index_select(0, index).float()
            cache.batch_select_indices(index)
            mask = mask.index_select(0, index)
            next_pos = pos[:, -1].index_select(0, index) + 1

            n = len(rows)
            self._decoding = n
            generators = [torch.Generator().manual_seed(r.seed) for r in rows]
            params = [r.request.params for r in rows]
            prompt_lens = [len(prompts[k]) for k in row_prompt]
            budgets = [
                min(p.max_tokens, self.max_model_len - L) for p, L in zip(params, prompt_lens, strict=True)
            ]
            temps = torch.tensor([p.temperature if p.temperature > 0 else 1.0 for p in params], device=dev)
            greedy = torch.tensor([p.temperature == 0 for p in params], device=dev)
            top_p = torch.tensor([p.top_p for p in params], device=dev)
            any_top_p = bool((top_p < 1).any())
            detoks = [IncrementalDetokenizer(self.tokenizer, prompts[k]) for k in row_prompt]
            tokens: list[list[int]] = [[] for _ in range(n)]
            logps: list[list[float]] = [[] for _ in range(n)]
            finish: list[FinishReason | None] = [None] * n
            texts: list[str | None] = [None] * n
            slots = list(range(n))  # batch slot -> row; finished rows linger until the next prune
            while True:
                tok, lp = self._sample(
                    logits, temps, greedy, top_p, any_top_p, [generators[i] for i in slots]
                )
                tok_list, lp_list = tok.tolist(), lp.tolist()
                for s, i in enumerate(slots):
                    if finish[i] is not None:
                        continue
                    if rows[i].request.dropped:  # cancelled (or failed): stop decoding it
                        finish[i] = "abort"
                        continue
                    t = tok_list[s]
                    tokens[i].append(t)
                    logps[i].append(min(lp_list[s], 0.0))
                    before = len(detoks[i].text)
                    delta = detoks[i].add(t)
                    if t in self.eos_ids:
                        finish[i] = "stop"
                    elif params[i].stop and delta:
                        k = find_stop(detoks[i].text, params[i].stop, len(detoks[i].text) - before)
                        if k != -1:
                            finish[i], texts[i] = "stop", detoks[i].text[:k]
                    if finish[i] is None and len(tokens[i]) >= budgets[i]:
                        finish[i] = "length"
                still = [s for s, i in enumerate(slots) if finish[i] is None]
                self.stats["tokens"] += len(still)
                self._decoding = len(still)
                if not still:
                    break
                if len(still) <= (1 - _PRUNE_FRACTION) * len(slots):
                    keep = torch.tensor(still, device=dev)
                    cache.batch_select_indices(keep)
                    mask, next_pos, tok = (
                        mask.index_select(0, keep),
                        next_pos.index_select(0, keep),
                        tok[keep],
                    )
                    temps, greedy, top_p = temps[keep], greedy[keep], top_p[keep]
                    slots = [slots[s] for s in still]
                mask = torch.cat([mask, torch.ones((len(slots), 1), dtype=mask.dtype, device=dev)], dim=1)
                out = model(
                    input_ids=tok.unsqueeze(1),
                    attention_mask=mask,
                    position_ids=next_pos.unsqueeze(1),
                    **kw,
                )
                logits = out.logits[:, -1, :].float()
                next_pos = next_pos + 1
            result: list[Completion | None] = []
            for i in range(n):
                if finish[i] == "abort":
                    result.append(None)
                    continue
                text = texts[i] if texts[i] is not None else detoks[i].text
                starts = tuple(min(s, len(text)) for s in detoks[i].starts)
                result.append(
                    Completion(
                        text=text,
                        token_ids=tuple(tokens[i]),
                        logprobs=tuple(logps[i]),
                        finish_reason=finish[i] or "length",
                        policy_version=weights.version,
                        token_char_starts=starts,
                    )
                )
            return result

    @staticmethod
    def _sample(
        logits: Any, temps: Any, greedy: Any, top_p: Any, any_top_p: bool, generators: Sequence[Any]
    ) -> tuple[Any, Any]:
        """One token per row by inverse-CDF sampling with each row's own generator; logprob of the pick."""
        import torch

        logp = torch.log_softmax(logits / temps.unsqueeze(1), dim=-1)
        probs = logp.exp()
        if any_top_p:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            cum = sorted_p.cumsum(-1)
            drop = (cum - sorted_p) >= top_p.unsqueeze(1)  # keep the smallest prefix with mass >= top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        cdf = probs.cumsum(-1)
        u = torch.stack([torch.rand((), generator=g) for g in generators]).to(cdf.device)
        u = (u * cdf[:, -1]).clamp(min=torch.finfo(cdf.dtype).tiny).unsqueeze(1)
        sampled = torch.searchsorted(cdf, u).squeeze(1).clamp(max=cdf.shape[-1] - 1)
        tok = torch.where(greedy, logits.argmax(-1), sampled)
        return tok, logp.gather(-1, tok.unsqueeze(1)).squeeze(1)


def _tied_names(model: Any) -> set[str]:
    """Parameter names that share storage with an earlier one (e.g. lm_head.weight tied to the embeddings)."""
    seen: dict[int, str] = {}
    tied = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.add(name)
        else:
            seen[id(p)] = name
    return tied


def _growing_cache(model: Any, cache_cls: Any) -> Any:
    """A DynamicCache whose layers append into doubling buffers; a plain one where the layout differs."""
    from transformers import cache_utils

    cache = cache_cls(config=model.config)
    layer_cls = getattr(cache_utils, "DynamicLayer", None)
    layers = getattr(cache, "layers", None)
    if layer_cls is None or not layers or any(type(layer) is not layer_cls for layer in layers):
        return cache
    grow = _growing_layer_class(layer_cls)
    cache.layers = [grow() for _ in layers]
    return cache


_GROWING: dict[type, type] = {}


def _growing_layer_class(base: type) -> type:
    """DynamicLayer with amortised O(1) appends (its torch.cat per token made decoding quadratic in length)."""
    if base in _GROWING:
        return _GROWING[base]

    class GrowingLayer(base):  # type: ignore[valid-type, misc]
        _kbuf: Any = None
        _vbuf: Any = None

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = self.keys.shape[-2] if self.keys.numel() else 0
            need = n + key_states.shape[-2]
            buf = self._kbuf
            stale = buf is None or (n and self.keys.data_ptr() != buf.data_ptr())
            if stale or buf.shape[0] != key_states.shape[0] or need > buf.shape[-2]:
                shape = (*key_states.shape[:-2], max(2 * need, 64), key_states.shape[-1])
                kbuf, vbuf = key_states.new_empty(shape), value_states.new_empty(shape)
                if n:  # carry what is cached (after a batch_select_indices, keys is a fresh tensor)
                    kbuf[..., :n, :] = self.keys
                    vbuf[..., :n, :] = self.values
                self._kbuf, self._vbuf = kbuf, vbuf
            self._kbuf[..., n:need, :] = key_states
            self._vbuf[..., n:need, :] = value_states
            self.keys, self.values = self._kbuf[..., :need, :], self._vbuf[..., :need, :]
            return self.keys, self.values

    _GROWING[base] = GrowingLayer
    return GrowingLayer
