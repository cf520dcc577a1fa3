"""The `Engine` protocol every generator backend implements, and the pieces the backends share.

An engine samples completions (text, token ids, sampled-token logprobs, finish reason, the policy version
that produced them, and each token's character offset in the text) and swaps in new weights atomically.
Sampled-token logprobs are log softmax(logits / temperature) (temperature 1 when greedy), the quantity
`sgpo.trainer.logprobs.compute_token_logprobs` recomputes: of the *unfiltered* distribution in the hf engine;
in the vllm engine, renormalised over the top-p nucleus when top_p < 1 (vLLM's processed logprobs; the gap
is measured in docs/generator.md).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from sgpo.common.server import BadRequestError, ServiceError
from sgpo.core.errors import InvalidInputError
from sgpo.core.types import Completion
from sgpo.generator.sampling import SamplingParams


class WeightsRejectedError(BadRequestError):
    """New weights that cannot be loaded (missing, corrupt, wrong shapes); the old weights keep serving."""


class RequestCancelled(ServiceError):
    """The caller cancelled or went away; the engine dropped the request's work."""

    code = grpc.StatusCode.CANCELLED
    http_status = 499


@dataclass(frozen=True, slots=True)
class PromptResult:
    """The completions of one prompt, with the prompt's token ids."""

    prompt_token_ids: tuple[int, ...]
    completions: tuple[Completion, ...]


class Engine(Protocol):
    """What the generator service needs from a backend (thread-safe; `generate` may be called concurrently)."""

    name: str
    model_name: str
    max_model_len: int

    @property
    def policy_version(self) -> int: ...

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, cancel: threading.Event | None = None
    ) -> list[PromptResult]:
        """`params.n` completions per prompt, in prompt order; once `cancel` is set the request's work is
        dropped and RequestCancelled raised."""
        ...

    def update_weights(self, version: int, uri: str) -> int:
        """Load the weights at `uri` as policy `version`; in-flight requests finish on the old weights."""
        ...

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt text for a chat conversation (the model's chat template)."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def unfinished(self) -> int:
        """Completions the engine is still working on or holding (waiting or decoding) for some caller: 0 once
        every request has been answered or cancelled."""
        ...

    def close(self) -> None: ...


def derive_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The seed of completion `sample_index` of prompt `prompt_index` in a request seeded with `seed`: every
    completion draws from its own stream, so a seeded request does not depend on what it is batched with."""
    digest = hashlib.blake2b(f"{seed}:{prompt_index}:{sample_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


_OUTSIDE = (
    "uri: is outside this generator's weights_root; it loads only the weights the trainer publishes there "
    "(set weights_root to the folder the trainer publishes into)"
)


def confine_weights_uri(uri: str, root: str | Path | None) -> str:
    """`uri` as a resolved path inside `root` (None: unchanged).

    Refused with one message, whether or not the path exists: a path that resolves outside the root (an
    absolute path elsewhere, `..`, a symlink that leaves it), and a folder inside it whose index, weights file
    or shards resolve outside it (symlinks). Shard names must be plain file names (`weight_files`).
    """
    if root is None:
        return uri
    raw = uri.removeprefix("file://")
    if not raw:
        raise WeightsRejectedError("uri: is empty; give the folder the trainer wrote with save_pretrained")
    base = Path(root).resolve()
    resolved = (base / raw).resolve()  # an absolute `raw` replaces base
    if not resolved.is_relative_to(base):
        raise WeightsRejectedError(_OUTSIDE)
    if resolved.is_dir():
        for name in ("model.safetensors.index.json", "model.safetensors"):
            entry = resolved / name
            if (entry.is_symlink() or entry.exists()) and not entry.resolve().is_relative_to(base):
                raise WeightsRejectedError(_OUTSIDE)
    for f in weight_files(str(resolved)):
        if not f.resolve().is_relative_to(base):
            raise WeightsRejectedError(_OUTSIDE)
    return str(resolved)


def _shard(folder: Path, name: object, index: Path) -> Path:
    """A shard named by an index: a plain file name in the index's own folder (no `/`, no `..`)."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise WeightsRejectedError(f"uri: {index} names a shard outside its folder; shards are file names")
    return folder / name


def weight_files(uri: str) -> list[Path]:
    """The safetensors files at `uri`: a file, or a folder with model.safetensors or a sharded index."""
    raw = uri.removeprefix("file://")
    if not raw:
        raise WeightsRejectedError("uri: is empty; give the folder the trainer wrote with save_pretrained")
    path = Path(raw)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise WeightsRejectedError(f"uri: {uri} is not a .safetensors file")
        return [path]
    if not path.is_dir():
        raise WeightsRejectedError(f"uri: {uri} does not exist")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            names = sorted(set(weight_map.values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise WeightsRejectedError(f"uri: {index} is not a safetensors index ({e})") from None
        shards = [_shard(path, n, index) for n in names]
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise WeightsRejectedError(f"uri: shard(s) {missing} named in {index} are missing")
        return shards
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    raise WeightsRejectedError(
        f"uri: {uri} has neither model.safetensors nor model.safetensors.index.json; "
        "write it with save_pretrained(safe_serialization=True)"
    )


def read_state_dict(uri: str) -> dict[str, Any]:
    """All tensors at `uri` (CPU); a truncated or corrupt file is rejected."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for f in weight_files(uri):
        try:
            part = load_file(str(f), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise WeightsRejectedError(f"uri: {f} is not a readable safetensors file ({e})") from None
        dup = set(part) & set(state)
        if dup:
            raise WeightsRejectedError(f"uri: tensor(s) {sorted(dup)[:3]} appear in more than one shard")
        state.update(part)
    if not state:
        raise WeightsRejectedError(f"uri: {uri} holds no tensors")
    return state


class IncrementalDetokenizer:
    """Text of a growing token sequence, one token at a time, and where each token's text starts.

    vLLM's scheme: decode a short window of recent tokens (seeded with the prompt's tail, so leading-space
    rules match continuing text) and emit only what is new; a window ending in an incomplete UTF-8
    sequence emits nothing until it completes. A token that emits nothing starts where the text ends.
    """

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int], context: int = 5) -> None:
        self.tokenizer = tokenizer
        self.ids = list(prompt_ids[-context:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.text = ""
        self.starts: list[int] = []

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def add(self, token_id: int) -> str:
        """Append a token; returns the text it completed (may be empty)."""
        self.starts.append(len(self.text))
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            delta = full[len(prefix) :]
            self.text += delta
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return delta
        return ""


def find_stop(text: str, stop: Sequence[str], new_chars: int) -> int:
    """Index in `text` of the earliest stop string that ends in the last `new_chars` characters, or -1."""
    if not stop or new_chars <= 0:
        return -1
    best = -1
    for s in stop:
        lo = max(0, len(text) - new_chars - len(s) + 1)
        k = text.find(s, lo)
        if k != -1 and (best == -1 or k < best):
            best = k
    return best


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a prompt with the tokenizer's special tokens, unless the text already starts with BOS
    (a rendered chat template), which would otherwise be doubled."""
    bos = getattr(tokenizer, "bos_token", None)
    add = not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add)["input_ids"])


def max_token_chars(tokenizer: Any) -> int:
    """The most characters one token of `tokenizer` can stand for (the longest vocabulary entry, at least 1):
    a text of more than `max_model_len * max_token_chars` characters cannot fit the context, whatever it says,
    so it is refused before it is tokenized. Byte-level vocabularies spell a byte per character, so their
    entries' lengths bound the characters too."""
    try:
        vocab = tokenizer.get_vocab()
        longest = max((len(t) for t in vocab), default=1)
    except Exception:  # a tokenizer without a vocabulary listing: no derived bound beyond a generous one
        longest = 64
    return max(1, int(longest))


def check_prompt_chars(prompts: Any, max_chars: int) -> None:
    """Refuse a prompt longer than `max_chars` characters, before any tokenization (a 50 MB prompt tokenized
    under the tokenizer's lock took 11 GB and stalled every other request)."""
    for i, p in enumerate(prompts):
        if len(p) > max_chars:
            raise InvalidInputError(
                f"prompts[{i}]",
                f"has {len(p)} characters; at most {max_chars} (max_prompt_chars) fit the model's context",
            )


def encode_prompts(
    tokenizer: Any, lock: Any, prompts: Any, max_model_len: int, max_chars: int | None = None
) -> list[list[int]]:
    """Every prompt's token ids (encode_prompt, under `lock`: a fast tokenizer mutated from two threads raises
    'Already borrowed'); a prompt longer than `max_chars` is refused before tokenization, and one that
    tokenizes to nothing or fills the model's context is an error naming it."""
    if max_chars is not None:
        check_prompt_chars(prompts, max_chars)
    with lock:
        prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    for i, ids in enumerate(prompt_ids):
        if not ids:
            raise InvalidInputError(f"prompts[{i}]", "tokenizes to no tokens")
        if len(ids) >= max_model_len:
            raise InvalidInputError(
                f"prompts[{i}]",
                f"has {len(ids)} tokens; the model's context is {max_model_len}; shorten the prompt",
            )
    return prompt_ids
