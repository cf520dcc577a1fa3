"""The `vllm` engine: vLLM's async engine in-process (GPU; `pip install 'sgpo[vllm]'`), behind `Engine`.

vLLM is imported only when this engine is built. The engine's event loop runs in a background thread so
the (threaded) gRPC and HTTP handlers call it synchronously. Weight updates are atomic by a gate: new
requests wait, requests in flight finish on the old weights, then every worker loads the checked
safetensors files (`SgpoWorkerExtension.sgpo_load_weights`), the prefix cache is reset and the version
bumped. Sampled-token logprobs come from vLLM with `logprobs_mode = "processed_logprobs"` where the
installed vLLM has it (temperature applied, as the trainer recomputes them).

NOT exercised on this project's CPU CI: its tests are marked `gpu` and skip without vLLM and CUDA.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sgpo.core.errors import InvalidInputError
from sgpo.core.types import Completion
from sgpo.generator.engine import (
    IncrementalDetokenizer,
    PromptResult,
    WeightsRejectedError,
    encode_prompt,
    read_state_dict,
    weight_files,
)
from sgpo.generator.sampling import SamplingParams, validate_prompts, validate_sampling

log = logging.getLogger(__name__)


def _checkpoint_shapes(files: Sequence[Path]) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():  # noqa: SIM118 (safe_open is not a dict)
                shapes[k] = tuple(sf.get_slice(k).get_shape())
    return shapes


class SgpoWorkerExtension:
    """Mixed into vLLM's workers (`worker_extension_cls`): load weights from safetensors files on disk."""

    def sgpo_load_weights(self, files: list[str]) -> int:
        from safetensors.torch import load_file

        model = self.model_runner.model  # type: ignore[attr-defined]
        n = 0
        for f in files:
            state = load_file(f, device="cpu")
            model.load_weights(weights=iter(state.items()))
            n += len(state)
        return n


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
    ) -> None:
        try:
            import vllm
            from vllm.engine.arg_utils import AsyncEngineArgs
        except ImportError as e:  # pragma: no cover - depends on the install
            raise RuntimeError(
                f"engine 'vllm' needs vLLM ({e}); install it with `pip install 'sgpo[vllm]'` on a GPU machine, "
                "or set engine = 'hf'"
            ) from None
        from transformers import AutoTokenizer

        self._vllm = vllm
        self.model_name = served_model_name or model_path
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        try:
            self._reference_shapes = _checkpoint_shapes(weight_files(model_path))
        except WeightsRejectedError:
            self._reference_shapes = {}  # a hub id: the first update is checked by vLLM itself
        kwargs: dict[str, Any] = dict(
            model=model_path,
            served_model_name=self.model_name,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            trust_remote_code=trust_remote_code,
            worker_extension_cls=f"{__name__}.SgpoWorkerExtension",
        )
        if "logprobs_mode" in AsyncEngineArgs.__dataclass_fields__:
            kwargs["logprobs_mode"] = "processed_logprobs"
        args = AsyncEngineArgs(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-loop", daemon=True)
        self._thread.start()
        self._llm = self._call(self._build(args))
        self.max_model_len = int(self._llm.model_config.max_model_len)
        self._version = policy_version
        self._gate = threading.Condition()
        self._in_flight = 0
        self._updating = False

    async def _build(self, args: Any) -> Any:
        try:
            from vllm.v1.engine.async_llm import AsyncLLM

            return AsyncLLM.from_engine_args(args)
        except ImportError:  # older vLLM
            return self._vllm.AsyncLLMEngine.from_engine_args(args)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def policy_version(self) -> int:
        return self._version

    def count_tokens(self, text: str) -> int:
        return len(encode_prompt(self.tokenizer, text))

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInputError(
                "messages", f"model {self.model_name} has no chat template; use /v1/completions"
            )
        return str(
            self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        )

    async def _one(self, prompt_ids: list[int], sp: Any) -> Any:
        from vllm.inputs import TokensPrompt

        final = None
        async for out in self._llm.generate(TokensPrompt(prompt_token_ids=prompt_ids), sp, uuid.uuid4().hex):
            final = out
        return final

    async def _many(self, prompt_ids: list[list[int]], sps: list[Any]) -> list[Any]:
        return await asyncio.gather(*(self._one(p, sp) for p, sp in zip(prompt_ids, sps, strict=True)))

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[PromptResult]:
        validate_prompts(prompts)
        validate_sampling(params)
        prompt_ids = [encode_prompt(self.tokenizer, p) for p in prompts]
        sps = [
            self._vllm.SamplingParams(
                n=params.n,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_tokens,
                stop=list(params.stop) or None,
                seed=None if params.seed is None else (params.seed + i) % (2**63),
                logprobs=0,
            )
            for i in range(len(prompts))
        ]
        with self._gate:
            while self._updating:
                self._gate.wait()
            self._in_flight += 1
            version = self._version
        try:
            outs = self._call(self._many(prompt_ids, sps))
        finally:
            with self._gate:
                self._in_flight -= 1
                self._gate.notify_all()
        results = []
        for ids, out in zip(prompt_ids, outs, strict=True):
            comps = []
            for o in sorted(out.outputs, key=lambda o: o.index):
                toks = list(o.token_ids)
                lps = [min(0.0, float(d[t].logprob)) for t, d in zip(toks, o.logprobs or [], strict=False)]
                lps += [0.0] * (len(toks) - len(lps))
                detok = IncrementalDetokenizer(self.tokenizer, ids)
                for t in toks:
                    detok.add(t)
                text = o.text
                comps.append(
                    Completion(
                        text=text,
                        token_ids=tuple(toks),
                        logprobs=tuple(lps),
                        finish_reason=o.finish_reason if o.finish_reason in ("stop", "length") else "abort",
                        policy_version=version,
                        token_char_starts=tuple(min(s, len(text)) for s in detok.starts),
                    )
                )
            results.append(PromptResult(tuple(ids), tuple(comps)))
        return results

    def update_weights(self, version: int, uri: str) -> int:
        import torch

        if version < 0:
            raise InvalidInputError("version", f"must be >= 0; got {version}")
        files = weight_files(uri)
        state = read_state_dict(uri)  # rejects unreadable files before anything changes
        if self._reference_shapes:
            unexpected = sorted(set(state) - set(self._reference_shapes))
            missing = sorted(set(self._reference_shapes) - set(state))
            if unexpected or missing:
                raise WeightsRejectedError(
                    f"uri: {uri} does not match the served model (unexpected {unexpected[:3]}, missing {missing[:3]})"
                )
            for k, t in state.items():
                if tuple(t.shape) != self._reference_shapes[k]:
                    raise WeightsRejectedError(f"uri: tensor {k} has shape {tuple(t.shape)}")
        for k, t in state.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise WeightsRejectedError(f"uri: tensor {k} holds NaN or inf; refusing to serve it")
        del state
        with self._gate:
            self._updating = True
            while self._in_flight:
                self._gate.wait()
        try:
            self._call(self._llm.collective_rpc("sgpo_load_weights", args=([str(f) for f in files],)))
            self._call(self._llm.reset_prefix_cache())
            self._version = version
        finally:
            with self._gate:
                self._updating = False
                self._gate.notify_all()
        return version

    def close(self) -> None:
        try:
            self._llm.shutdown()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
