"""Prompts: how a problem becomes the policy's input text, and the stop strings that end its answer.

The one renderer of the project. The orchestrator (training and `sgpo record`), `sgpo eval` and the held-out
evaluation of `sgpo train` all build a `Prompter` from a `PromptConfig` and call `render`, so a problem is
rendered identically wherever it is sampled. It lives in `sgpo.common` because the orchestrator service renders
its prompts itself and may import only `sgpo.core` and `sgpo.common`.

Two formats:
- `plain`: `template` with `{problem}` replaced is the whole input (the tiny policy's `"{problem}\\n"`).
- `chat`: the tokenizer's chat template over an optional system message (`system`) and one user message
  (`template` with `{problem}` replaced), with the assistant turn opened (`add_generation_prompt`). A chat
  template that has no system role (Gemma, Mistral) raises on one; the system text is then appended to the
  user message instead.

Stop strings follow from the tokenizer: its EOS token and, for chat, the end-of-turn tokens its vocabulary has
(`<|im_end|>`, `<|eot_id|>`, ...). The token ids of the same strings are `stop_token_ids`: engines decode with
special tokens skipped, so a special token ends a completion only through its id (the generator stops on the
model's `generation_config.eos_token_id`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

PromptFormat = Literal["plain", "chat"]
PLACEHOLDER = "{problem}"
DEFAULT_TEMPLATES: dict[str, str] = {"plain": "{problem}\n", "chat": "{problem}"}
# Qwen2.5-Math's chain-of-thought instruction (its README and evaluation harness).
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# End-of-turn markers of the common chat templates (ChatML/Qwen, Llama 3, Gemma, Phi-3); a tokenizer's own EOS
# is always a stop string.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


class PromptError(ValueError):
    """The prompt configuration cannot apply (no tokenizer for chat, a tokenizer without a chat template)."""


class PromptConfig(BaseModel):
    """How a dataset row's problem is rendered into the policy's input (the `[orchestrator.prompt]` table)."""

    model_config = ConfigDict(extra="forbid")

    format: PromptFormat = "plain"
    """`plain`: `template` is the whole input. `chat`: the tokenizer's chat template over `system` (if set)
    and a user message made from `template`, with the assistant turn opened."""
    template: str | None = None
    """Text holding `{problem}` (replaced by the problem; other braces are kept, e.g. `\\boxed{}`). Default:
    `"{problem}\\n"` for plain (the tiny policy's format), `"{problem}"` (the user message) for chat."""
    system: str | None = None
    """Chat only: the system message, e.g. "Please reason step by step, and put your final answer within
    \\boxed{}." (Qwen2.5-Math). Plain prompts put any instruction into `template` instead."""
    tokenizer: str | None = None
    """Folder or hub id of the policy's tokenizer: its chat template renders chat prompts and its EOS and
    end-of-turn tokens become stop strings. Chat needs it unless the caller passes a loaded tokenizer
    (`sgpo eval` does); `sgpo train` sets it to the policy folder."""
    stop_from_tokenizer: bool = True
    """Add the tokenizer's EOS and end-of-turn strings to the sampling stop strings."""

    @model_validator(mode="after")
    def _check(self) -> PromptConfig:
        if self.template is not None and PLACEHOLDER not in self.template:
            raise ValueError(f"prompt.template must contain {{problem}}; got {self.template!r}")
        if self.format == "plain" and self.system is not None:
            raise ValueError(
                "prompt.system applies to the chat format only; for plain prompts write the instruction into "
                f"prompt.template (e.g. '{{problem}}\\n{BOXED_INSTRUCTION}\\n') or set prompt.format = 'chat'"
            )
        return self

    @property
    def user_template(self) -> str:
        """`template`, or the format's default."""
        return self.template if self.template is not None else DEFAULT_TEMPLATES[self.format]


def load_tokenizer(name: str) -> Any:
    """The tokenizer of a model folder or hub id (only the tokenizer files are read)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise PromptError(
            f"cannot load the tokenizer of {name!r} ({e}); set prompt.tokenizer to the policy's model folder"
        ) from None


@dataclass(frozen=True)
class Prompter:
    """Renders problems under one `PromptConfig` (see `build_prompter`)."""

    config: PromptConfig
    tokenizer: Any = None

    def render(self, problem: str) -> str:
        """The policy's input text for `problem`."""
        user = self.config.user_template.replace(PLACEHOLDER, problem)
        if self.config.format == "plain":
            return user
        system = self.config.system
        if system is None:
            return self._chat([{"role": "user", "content": user}])
        try:
            return self._chat([{"role": "system", "content": system}, {"role": "user", "content": user}])
        except Exception:  # a template without a system role raises (jinja's raise_exception): fold it in
            return self._chat([{"role": "user", "content": f"{user}\n{system}"}])

    def _chat(self, messages: list[dict[str, str]]) -> str:
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop strings that follow from the tokenizer: its EOS and (chat) the end-of-turn tokens it has."""
        tok = self.tokenizer
        if tok is None or not self.config.stop_from_tokenizer:
            return ()
        out: list[str] = []
        if isinstance(getattr(tok, "eos_token", None), str) and tok.eos_token:
            out.append(tok.eos_token)
        if self.config.format == "chat":
            vocab = tok.get_vocab()
            out += [t for t in END_OF_TURN_TOKENS if t in vocab and t not in out]
        return tuple(out)

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """The ids of `stop` (special tokens never appear in decoded text, so engines need them by id)."""
        if self.tokenizer is None:
            return ()
        vocab = self.tokenizer.get_vocab()
        return tuple(vocab[s] for s in self.stop if s in vocab)

    def with_stop(self, stop: tuple[str, ...] | list[str]) -> list[str]:
        """`stop` (a sampling config's own stop strings) followed by this prompter's, without duplicates."""
        return list(dict.fromkeys([*stop, *self.stop]))


def build_prompter(config: PromptConfig, tokenizer: Any = None) -> Prompter:
    """A `Prompter` for `config`. The tokenizer: `tokenizer` if given (an engine's loaded one), else the one of
    `config.tokenizer` (loaded here), else none, which only the plain format accepts."""
    if tokenizer is None and config.tokenizer is not None:
        tokenizer = load_tokenizer(config.tokenizer)
    if config.format == "chat":
        if tokenizer is None:
            raise PromptError(
                "prompt.format = 'chat' needs the policy's tokenizer: set prompt.tokenizer to its model folder"
            )
        if not getattr(tokenizer, "chat_template", None):
            name = config.tokenizer or getattr(tokenizer, "name_or_path", "the tokenizer")
            raise PromptError(
                f"prompt.format = 'chat' but {name} has no chat template; use prompt.format = 'plain' with a "
                "template containing {problem}"
            )
    return Prompter(config, tokenizer)
