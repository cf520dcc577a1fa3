"""The tiny policy: a character-level Llama-style causal LM the project builds and pretrains itself.

`build_tiny_policy` writes a randomly initialised model and its tokenizer in Hugging Face format (so the
same `AutoTokenizer` / `AutoModelForCausalLM` loading code serves real models); `ensure_tiny_policy` returns
the folder of the pretrained one. The package ships that policy (`sgpo/tasks/policies/tiny-<digest>/`, about
3 MB, recorded by `SHIPPED_POLICIES`: preset digest and the sha256 of its weights), so a first run copies it
into the cache after checking the sha256 instead of pretraining for 5-30 minutes; `sgpo pretrain --preset tiny
--force` reproduces it (the SFT is deterministic on CPU) and says whether its weights match the shipped ones.
`TINY_PRESET` is the one place that fixes the model shape, the SFT recipe and the RL / eval levels.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

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


SHIPPED_ROOT = Path(__file__).parent / "policies"
"""Pretrained policies shipped as package data, one folder `<name>-<digest>` each."""
SHIPPED_POLICIES: dict[str, str] = {
    "tiny-754f7674f77e": "88e95cc9c672da7856fef98f9e90ab0b69bda8b035e50011a1570a40815344b8",
    "tiny-chat-c3c428e4e45c": "b85cd2a2e22fcef653b4e94c0680aabf4a280343121caab0795cd222717c57f9",
}
"""Folder name (preset name and digest) -> sha256 of its model.safetensors, checked before every use."""


class ShippedPolicyError(RuntimeError):
    """The shipped policy's files do not match the sha256 recorded for them."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shipped_policy(preset: TinyPreset = TINY_PRESET) -> Path | None:
    """The shipped folder of `preset`'s pretrained policy, checked against its recorded sha256; None if the
    package ships none for this preset (another seed, iterations or shape: those are pretrained).

    Raises `ShippedPolicyError` when the shipped weights or their record do not match: the package is damaged
    or was edited, and `sgpo pretrain --preset tiny` makes the policy from scratch instead.
    """
    name = f"{preset.name}-{preset.digest()}"
    want = SHIPPED_POLICIES.get(name)
    folder = SHIPPED_ROOT / name
    if want is None or not folder.is_dir():
        return None
    fix = f"run `sgpo pretrain --preset {preset.name}` to pretrain it into the cache instead (5-30 minutes)"
    weights = folder / "model.safetensors"
    if not weights.is_file() or not (folder / "pretrain.json").is_file():
        raise ShippedPolicyError(
            f"the shipped policy {folder} lacks model.safetensors or pretrain.json; {fix}"
        )
    got = file_sha256(weights)
    if got != want:
        raise ShippedPolicyError(
            f"the shipped policy's weights {weights} have sha256 {got}, not the recorded {want}; {fix}"
        )
    digest = json.loads((folder / "pretrain.json").read_text()).get("digest")
    if digest != preset.digest():
        raise ShippedPolicyError(
            f"the shipped policy {folder} was pretrained with preset digest {digest}, not {preset.digest()}; {fix}"
        )
    return folder


def shipped_comparison(folder: Path, preset: TinyPreset = TINY_PRESET) -> str:
    """One line: the sha256 of `folder`'s weights and whether they equal the shipped policy's of `preset`."""
    got = file_sha256(Path(folder) / "model.safetensors")
    want = SHIPPED_POLICIES.get(f"{preset.name}-{preset.digest()}")
    if want is None:
        return f"sha256 {got} (the package ships no policy for preset digest {preset.digest()})"
    same = "the same as" if got == want else "DIFFERENT from"
    return f"sha256 {got}: {same} the shipped policy's ({want})"


def ensure_tiny_policy(
    cache_dir: Path | None = None,
    preset: TinyPreset = TINY_PRESET,
    progress: bool = True,
    use_shipped: bool = True,
) -> Path:
    """The pretrained policy's folder in the cache. If the cache lacks it: the shipped copy when the package
    ships this preset (sha256 checked; `use_shipped=False` skips it), else pretraining (once, under a file
    lock)."""
    import fcntl

    target = policy_dir(preset, cache_dir)
    if (target / "pretrain.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds the finished folder
        if not (target / "pretrain.json").is_file():
            shipped = shipped_policy(preset) if use_shipped else None
            if shipped is not None:
                _install(shipped, target)
            else:
                from sgpo.tasks.pretrain import pretrain

                pretrain(preset, target, progress=progress)
    return target


def _install(shipped: Path, target: Path) -> None:
    """Copy the shipped folder to `target` atomically (a work folder renamed into place)."""
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for f in shipped.iterdir():
            if f.is_file():
                shutil.copyfile(f, work / f.name)
        if file_sha256(work / "model.safetensors") != SHIPPED_POLICIES[shipped.name]:
            raise ShippedPolicyError(f"copying {shipped} to {target} changed its weights; run it again")
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- held-out splits of an RL run

EvalSplit = Literal["test", "validation"]
EVAL_SPLITS: tuple[EvalSplit, ...] = ("test", "validation")
SPLIT_STREAMS: dict[EvalSplit, str] = {"test": "rl-eval", "validation": "rl-validation"}
"""The seed stream of each held-out split (`arith.generate_split`'s `split` name): `test` is the stream every
RL run has evaluated on since the first study (unchanged, so its numbers are); `validation` is drawn from its
own stream, with the same seed, for choosing hyperparameters."""


def heldout_splits(
    seed: int, per_level: int, levels: Sequence[int] | None = None, spec: Any = None
) -> dict[EvalSplit, list[Any]]:
    """The held-out problems of an RL run with `seed`: `test` and `validation`, disjoint by problem text.

    Validation is drawn excluding the test problems, so no text is in both (checked); at a level whose whole
    problem space is smaller than 2 x `per_level` (1 step: 126 problems) validation holds what the test split
    left, fewer than `per_level`.
    """
    from sgpo.tasks.arith import generate_split

    levels = TINY_PRESET.eval_steps if levels is None else levels
    spec = TINY_PRESET.task if spec is None else spec
    test = generate_split(SPLIT_STREAMS["test"], levels, per_level, seed=seed, spec=spec)
    validation = generate_split(
        SPLIT_STREAMS["validation"],
        levels,
        per_level,
        seed=seed,
        spec=spec,
        exclude=[p.problem for p in test],
    )
    check_disjoint({"test": test, "validation": validation})
    return {"test": test, "validation": validation}


def check_disjoint(splits: dict[str, Sequence[Any]]) -> None:
    """Raise ValueError when two splits share a problem text."""
    names = list(splits)
    for i, a in enumerate(names):
        texts = {p.problem for p in splits[a]}
        for b in names[i + 1 :]:
            shared = texts & {p.problem for p in splits[b]}
            if shared:
                raise ValueError(
                    f"splits {a} and {b} share {len(shared)} problems, e.g. {sorted(shared)[0]!r}"
                )
