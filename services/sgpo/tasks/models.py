"""Model aliases: the names a config or a command line may give instead of a model folder.

`tiny` is the project's pretrained tiny policy (pretrained into the cache on first use), `tiny-random` the
same architecture with random weights (built in well under a second), `tiny-chat` the pretrained tiny chat
policy (a small Qwen2 with a BPE tokenizer and a ChatML template, `sgpo.tasks.chat`; shipped, or pretrained into
the cache on first use). Services take a folder or hub id only;
the launchers (`sgpo serve`, `sgpo train`, `sgpo eval`) resolve aliases with `resolve_model` first.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

MODEL_ALIASES = ("tiny", "tiny-random", "tiny-chat")


def resolve_model(model: str) -> str:
    """`tiny` / `tiny-chat` -> the pretrained tiny / tiny chat policy (pretrained on first use unless shipped);
    `tiny-random` -> random weights; else as is."""
    if model == "tiny":
        from sgpo.tasks.tiny import ensure_tiny_policy

        return str(ensure_tiny_policy())
    if model == "tiny-chat":
        from sgpo.tasks.chat import CHAT_PRESET
        from sgpo.tasks.tiny import ensure_tiny_policy

        return str(ensure_tiny_policy(preset=CHAT_PRESET))
    if model == "tiny-random":
        from sgpo.tasks.tiny import build_tiny_policy, cache_root

        target = cache_root() / "policies" / "tiny-random-seed0"
        if not (target / "model.safetensors").is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=".tiny-random-", dir=target.parent))
            build_tiny_policy(work, seed=0)
            try:
                work.rename(target)
            except OSError:  # another process won the race; its folder is identical
                shutil.rmtree(work, ignore_errors=True)
        return str(target)
    return model
