"""The tiny chat policy (`tiny-chat`): a small Qwen2 with a byte-level BPE tokenizer and a ChatML chat template.

The CPU stand-in for a real chat model such as Qwen2.5-Math-Instruct: the same architecture class
(`Qwen2ForCausalLM`), the same kind of tokenizer (byte-level BPE with Qwen's pre-tokenizer: digits one by one),
the same chat template shape (`<|im_start|>role\\n...<|im_end|>`, EOS `<|im_end|>`, pad `<|endoftext|>`), so
every code path that renders chat prompts, stops at end-of-turn or loads `AutoTokenizer` /
`AutoModelForCausalLM` runs on it as it would on the real model. It is built here from nothing: the BPE is
trained in about a second on the arithmetic task's own text (`build_chat_tokenizer`), `transformers` writes the
model folder (`build_chat_policy`), and `sgpo pretrain --preset tiny-chat` SFTs it on the task in the chat
format (`sgpo.tasks.pretrain`, the same recipe code as the tiny policy), cached by the preset's digest. The
package ships the pretrained weights (`sgpo/tasks/policies/tiny-chat-<digest>/`, 1.6 MB, sha256 in
`sgpo.tasks.tiny.SHIPPED_POLICIES`), so first use copies them instead of pretraining; `sgpo pretrain --preset
tiny-chat --force` pretrains them again (2 threads) and says whether its weights match the shipped ones.

Its prompt is `CHAT_PROMPT` (a system instruction and the problem as the user message); `pretrain.json` records
it, and `sgpo eval` and `sgpo train` read it from there (`policy_prompt`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgpo.common.prompts import PromptConfig
from sgpo.tasks.arith import ArithSpec, generate_split, sloppy_solution
from sgpo.tasks.tiny import PRESETS as TINY_PRESETS
from sgpo.tasks.tiny import ModelShape, SftPhase, TinyPreset

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
# ChatML as Qwen2.5 writes it, without Qwen's default system message (the prompt config sets one).
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Qwen2's pre-tokenizer: letters with an optional leading non-letter, single digits, punctuation runs, newlines.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
CHAT_SYSTEM = "Solve step by step."
CHAT_PROMPT = PromptConfig(format="chat", system=CHAT_SYSTEM)
"""How the tiny chat policy is prompted (pretraining, RL, evaluation); `tokenizer` is set to its folder by users."""


@dataclass(frozen=True)
class ChatPreset(TinyPreset):
    """A `TinyPreset` for the Qwen2 chat policy: the same SFT recipe fields plus the tokenizer's and the prompt's."""

    name: str = "tiny-chat"
    model: ModelShape = field(
        default_factory=lambda: ModelShape(
            hidden_size=128, num_layers=2, num_heads=4, intermediate_size=352, max_positions=512
        )
    )
    task: ArithSpec = field(default_factory=lambda: ArithSpec(start_max=9))
    sft_phases: tuple[SftPhase, ...] = (SftPhase(100, (1, 2)), SftPhase(300, (1, 2, 3, 4)))
    eval_per_level: int = 50
    rl_steps: tuple[int, ...] = (1, 2, 3, 4)
    """RL levels: greedy accuracy 0.64 / 0.30 / 0.10 / 0.04 after SFT (pretrain.json), so mixed groups at 1-2
    and mostly all-negative groups to color at 3-4. Not part of the cache key."""
    num_kv_heads: int = 2
    """Grouped-query attention as in Qwen2 (2 key/value heads for 4 query heads)."""
    vocab_size: int = 320
    """Byte-level BPE vocabulary: 256 bytes, 3 special tokens, the rest merges learned on the task's text (the
    task's text has about 70 merges that occur twice or more, so more would not be used)."""
    tokenizer_corpus: int = 4000
    """Problems (with solutions) the BPE is trained on."""
    system: str = CHAT_SYSTEM
    """The system instruction of every prompt."""

    @property
    def prompt(self) -> PromptConfig:
        return PromptConfig(format="chat", system=self.system)


CHAT_PRESET = ChatPreset()
PRESETS: dict[str, TinyPreset] = {**TINY_PRESETS, "tiny-chat": CHAT_PRESET}
"""Every pretraining preset (`sgpo pretrain --preset NAME`)."""


def _corpus(preset: ChatPreset) -> list[str]:
    """Chat transcripts of arithmetic problems of every eval level (the text the BPE learns its merges from)."""
    import random

    rng = random.Random(f"sgpo-chat-bpe:{preset.seed}")
    per_level = max(1, preset.tokenizer_corpus // len(preset.eval_steps))
    problems = generate_split("bpe", preset.eval_steps, per_level, preset.seed, preset.task)
    out = []
    for p in problems:
        solution = sloppy_solution(p, rng, preset.slip_prob)
        out.append(
            f"{IM_START}system\n{preset.system}{IM_END}\n{IM_START}user\n{p.problem}{IM_END}\n"
            f"{IM_START}assistant\n{solution}{IM_END}\n"
        )
    return out


def build_chat_tokenizer(preset: ChatPreset = CHAT_PRESET) -> Any:
    """A `PreTrainedTokenizerFast` with a byte-level BPE trained on the task's chat transcripts (deterministic)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=preset.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(preset), trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        clean_up_tokenization_spaces=False,
        padding_side="left",
        model_max_length=preset.model.max_positions,
    )
    hf.chat_template = CHATML_TEMPLATE
    return hf


def build_chat_policy(out_dir: Path, preset: ChatPreset = CHAT_PRESET, seed: int | None = None) -> Path:
    """Write a randomly initialised small Qwen2 and its BPE tokenizer (HF format, safetensors) to `out_dir`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_chat_tokenizer(preset)
    vocab = tokenizer.get_vocab()
    shape = preset.model
    config = Qwen2Config(
        vocab_size=len(vocab),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=preset.num_kv_heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=True,
        bos_token_id=vocab[ENDOFTEXT],
        eos_token_id=vocab[IM_END],
        pad_token_id=vocab[ENDOFTEXT],
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(preset.seed if seed is None else seed)
        model = Qwen2ForCausalLM(config)
    # Like Qwen2.5's instruct models: a completion ends at the end of the turn or of the text.
    model.generation_config.eos_token_id = [vocab[IM_END], vocab[ENDOFTEXT]]
    model.generation_config.pad_token_id = vocab[ENDOFTEXT]
    model.generation_config.bos_token_id = vocab[ENDOFTEXT]
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def policy_prompt(model_path: Path | str) -> PromptConfig | None:
    """The prompt a policy folder (or a run checkpoint of it) was pretrained with: from its pretrain.json (the
    tiny policy's predates the record: plain `"{problem}\\n"`), else from its tokenizer's chat template being the
    tiny chat policy's or the tiny policy's (a checkpoint carries the tokenizer, not pretrain.json); None for any
    other model. A chat prompt gets `tokenizer` = the folder; a plain one none (no stop strings: the tiny
    policy's runs sample exactly as before the prompt module)."""
    folder = Path(model_path)
    record_path = folder / "pretrain.json"
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            return None
        fields = record.get("prompt") or {"format": "plain", "template": "{problem}\n"}
        if fields.get("format") == "chat":
            fields = {**fields, "tokenizer": str(folder)}
        return PromptConfig(**fields)
    config_path = folder / "tokenizer_config.json"
    template_path = folder / "chat_template.jinja"
    template = template_path.read_text() if template_path.is_file() else None
    if template is None and config_path.is_file():
        try:
            template = json.loads(config_path.read_text()).get("chat_template")
        except ValueError:
            return None
    if template == CHATML_TEMPLATE:
        return CHAT_PROMPT.model_copy(update={"tokenizer": str(folder)})
    from sgpo.tasks.tiny import CHAT_TEMPLATE as TINY_TEMPLATE

    if template == TINY_TEMPLATE:
        return PromptConfig(format="plain", template="{problem}\n")
    return None
