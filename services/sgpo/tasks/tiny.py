"""The tiny policy: a character-level Llama-style causal LM the project builds and pretrains itself.

`build_tiny_policy` writes a randomly initialised model and its tokenizer in Hugging Face format (so the
same `AutoTokenizer` / `AutoModelForCausalLM` loading code serves real models); `ensure_tiny_policy` returns
the folder of the pretrained one, running `sgpo pretrain --preset tiny` first if the cache lacks it.
`TINY_PRESET` is the one place that fixes the model shape, the SFT recipe and the RL / eval levels.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from sgpo.tasks.arith import ArithSpec

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
# Printable ASCII plus space and newline, one token each; anything else is <unk>.
CHARS = tuple(c for c in string.printable if c not in "\t\r\x0b\x0c")
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}\n{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class ModelShape:
    """A Llama-style decoder."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 352
    max_positions: int = 512


@dataclass(frozen=True)
class SftPhase:
    """`iters` optimizer steps on problems whose difficulty is drawn uniformly from `steps`."""

    iters: int
    steps: tuple[int, ...]


@dataclass(frozen=True)
class TinyPreset:
    """Everything that determines the pretrained tiny policy (its hash names the cache folder)."""

    name: str = "tiny"
    model: ModelShape = field(default_factory=ModelShape)
    task: ArithSpec = field(default_factory=lambda: ArithSpec(start_max=9))
    """Start values 1..9 like the operands: with 1..99 the same budget learned far less arithmetic."""
    sft_phases: tuple[SftPhase, ...] = (SftPhase(200, (1, 2)), SftPhase(600, (1, 2, 3, 4)))
    """The SFT curriculum. Short chains first: copying numbers out of the prompt is learned in a sudden
    transition that comes sooner on short problems; longer chains then give more arithmetic per token."""
    slip_prob: float = 0.1
    """The SFT teacher is sloppy: each step's result is off by 1 or 2 with this probability (later steps carry
    on from the slipped value; `arith.sloppy_solution`). The pretrained policy then slips when sampling (more
    often than its teacher: 0.72 sampled against 0.98 greedy accuracy at one step), like the stylized model's
    per-step error, and RL can teach it care that carries over to problems it has never seen. With a careful teacher its errors were confident, problem-specific
    arithmetic mistakes that every sample of a group repeated, and RL did not raise held-out accuracy
    (docs/results.md)."""
    batch_size: int = 32
    lr: float = 3e-3
    """Peak learning rate: linear warmup, constant, then linear decay to 10% over the last `decay_frac`."""
    warmup_iters: int = 30
    decay_frac: float = 0.25
    weight_decay: float = 0.01
    seed: int = 0
    rl_steps: tuple[int, ...] = (3, 4, 5, 6)
    """Levels the RL run trains on: the top of the SFT range (mixed groups) and the two levels past it (mostly
    all-negative groups with informative first errors). Trained on 5-6 alone, the policy learned to write
    more steps everywhere and lost 20 points at 3-4 steps. Not part of the cache key: it does not change SFT."""
    eval_steps: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    """Levels of the accuracy table printed after pretraining (and used by RL evaluation)."""
    eval_per_level: int = 200
    """Test problems per level in the accuracy table."""

    @property
    def sft_steps(self) -> tuple[int, ...]:
        """Every difficulty level seen in SFT."""
        return tuple(sorted({s for ph in self.sft_phases for s in ph.steps}))

    @property
    def sft_iters(self) -> int:
        return sum(ph.iters for ph in self.sft_phases)

    def with_iters(self, total: int) -> TinyPreset:
        """The same curriculum scaled to `total` optimizer steps (each phase keeps its share, at least 1)."""
        scale = total / self.sft_iters
        phases = tuple(SftPhase(max(1, round(ph.iters * scale)), ph.steps) for ph in self.sft_phases)
        return replace(self, sft_phases=phases, warmup_iters=min(self.warmup_iters, max(1, total // 10)))

    def digest(self) -> str:
        """Names the cache folder: a hash of every field that changes the pretrained weights or their table."""
        fields = asdict(self)
        fields.pop("rl_steps")
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


TINY_PRESET = TinyPreset()
PRESETS: dict[str, TinyPreset] = {"tiny": TINY_PRESET}


def _build_tokenizer() -> object:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate((*SPECIAL_TOKENS, *CHARS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    # Every sequence starts with <bos>, as for most real models: the first character gets context.
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        padding_side="left",
        model_max_length=ModelShape().max_positions,
    )
    # Chat callers (the OpenAI surface) get exactly `format_prompt(problem)` for a user message `problem`.
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build_tiny_policy(out_dir: Path, seed: int = 0, shape: ModelShape | None = None) -> Path:
    """Write a randomly initialised tiny Llama and its character tokenizer (HF format, safetensors) to `out_dir`.

    Deterministic by `seed`; loadable with `AutoTokenizer.from_pretrained(out_dir)` and
    `AutoModelForCausalLM.from_pretrained(out_dir)`.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = shape or ModelShape()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    vocab_size = len(SPECIAL_TOKENS) + len(CHARS)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=True,
        pad_token_id=SPECIAL_TOKENS.index(PAD),
        bos_token_id=SPECIAL_TOKENS.index(BOS),
        eos_token_id=SPECIAL_TOKENS.index(EOS),
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.bos_token_id = config.bos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)  # type: ignore[attr-defined]
    return out_dir


def cache_root(cache_dir: Path | None = None) -> Path:
    """Where pretrained policies live: `cache_dir`, else $SGPO_CACHE_DIR, else ~/.cache/sgpo."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("SGPO_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "sgpo"


def policy_dir(preset: TinyPreset = TINY_PRESET, cache_dir: Path | None = None) -> Path:
    """The cache folder of `preset`'s pretrained policy (named by a hash of the preset)."""
    return cache_root(cache_dir) / "policies" / f"{preset.name}-{preset.digest()}"


def ensure_tiny_policy(
    cache_dir: Path | None = None, preset: TinyPreset = TINY_PRESET, progress: bool = True
) -> Path:
    """The pretrained policy's folder, pretraining it first (once, under a file lock) if the cache lacks it."""
    import fcntl

    target = policy_dir(preset, cache_dir)
    if (target / "pretrain.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds the finished folder
        if not (target / "pretrain.json").is_file():
            from sgpo.tasks.pretrain import pretrain

            pretrain(preset, target, progress=progress)
    return target
