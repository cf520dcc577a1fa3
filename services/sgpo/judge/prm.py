"""The `prm` backend: a process reward model run with transformers; the first step scored below a threshold.

Input: `prompt_template` (with the problem) then each step followed by `step_tag`, then `suffix`. Pieces are
tokenized separately and concatenated, so the position of each step's tag is exact; a step's score is
softmax(logits)[positive_label] at the last token of its tag (how Qwen2.5-Math-PRM and Math-Shepherd-style
PRMs are read). For Qwen2.5-Math-PRM: model_class = "auto", trust_remote_code = true, step_tag = "<extra_0>",
and its chat template as prompt_template / suffix (docs/judge.md). An input longer than `max_length` is
`failed`, never truncated. torch and transformers are imported when the backend is built.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from sgpo.judge.config import PrmBackend
from sgpo.judge.types import Located


class PrmLocator:
    name = "prm"

    def __init__(self, cfg: PrmBackend) -> None:
        import torch
        from transformers import AutoModel, AutoModelForTokenClassification, AutoTokenizer

        assert cfg.model_path is not None  # the config validator guarantees it
        if not cfg.model_path.is_dir():
            raise FileNotFoundError(
                f"prm model_path {cfg.model_path} is not a folder; point [judge.backend] model_path at a local "
                "Hugging Face model folder (config.json, weights, tokenizer)"
            )
        self.cfg = cfg
        self.torch = torch
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("prm device = 'cuda' but no CUDA GPU is visible; set device = 'cpu' or 'auto'")
        self.device = torch.device(device)
        dtype_name = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
        dtype = getattr(torch, dtype_name)
        loader: Any = AutoModel if cfg.model_class == "auto" else AutoModelForTokenClassification
        self.tokenizer = AutoTokenizer.from_pretrained(
            cfg.model_path, trust_remote_code=cfg.trust_remote_code
        )
        self.model = loader.from_pretrained(
            cfg.model_path, dtype=dtype, trust_remote_code=cfg.trust_remote_code
        ).to(self.device)
        self.model.eval()
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self._lock = (
            threading.Lock()
        )  # one forward pass at a time: the model is shared by all request threads

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def encode(self, problem: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Token ids of the whole input and the position of each step's score."""
        ids = self._encode(self.cfg.prompt_template.replace("{problem}", problem))
        positions = []
        for step in steps:
            ids += self._encode(step + self.cfg.step_tag)
            positions.append(len(ids) - 1)
        ids += self._encode(self.cfg.suffix)
        return ids, positions

    def scores(self, problem: str, step_lists: Sequence[Sequence[str]]) -> list[list[float] | str]:
        """Per response, the probability that each step is correct, or why it could not be scored."""
        torch = self.torch
        encoded = [self.encode(problem, steps) for steps in step_lists]
        out: list[list[float] | str] = []
        for b in range(0, len(encoded), self.cfg.batch_size):
            batch = encoded[b : b + self.cfg.batch_size]
            fits = [e for e in batch if len(e[0]) <= self.cfg.max_length]
            results: dict[int, list[float]] = {}
            if fits:
                width = max(len(ids) for ids, _ in fits)
                input_ids = torch.full((len(fits), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(fits), width), dtype=torch.long)
                for r, (ids, _) in enumerate(fits):  # right padding: positions stay as encoded
                    input_ids[r, : len(ids)] = torch.tensor(ids)
                    mask[r, : len(ids)] = 1
                with self._lock, torch.inference_mode():
                    output = self.model(
                        input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)
                    )
                logits = output.logits if hasattr(output, "logits") else output[0]
                probs = torch.softmax(logits.float(), dim=-1)[..., self.cfg.positive_label].cpu()
                for r, (_, positions) in enumerate(fits):
                    results[id(fits[r])] = [float(probs[r, p]) for p in positions]
            for e in batch:
                if id(e) in results:
                    out.append(results[id(e)])
                else:
                    out.append(f"input of {len(e[0])} tokens exceeds max_length {self.cfg.max_length}")
        return out

    def locate(
        self, problem: str, reference_solution: str, step_lists: Sequence[Sequence[str]]
    ) -> list[Located]:
        out = []
        for s in self.scores(problem, step_lists):
            if isinstance(s, str):
                out.append(Located(None, f"prm failed: {s}"))
                continue
            low = next((k for k, p in enumerate(s) if p < self.cfg.threshold), -1)
            shown = ", ".join(f"{p:.3f}" for p in s[:32])
            what = (
                f"first step below {self.cfg.threshold}: {low}" if low >= 0 else "no step below the threshold"
            )
            out.append(Located(low, f"prm: {what} (scores {shown}{', ...' if len(s) > 32 else ''})"))
        return out

    def close(self) -> None:
        pass
