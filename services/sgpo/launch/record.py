"""Recording (`sgpo record`): sample groups once from a policy (verified, every wrong answer judged) into a file.

That file is the paper's offline setting: `sgpo train --replay FILE --algo sgpo|grpo` trains on exactly
these samples for several epochs, scored by the replaying run's own algorithm. The run config is `sgpo train`'s
(`build_run_config`), so the recorded groups' prompts are rendered exactly as training renders them: the policy's
own prompt (`sgpo.tasks.chat.policy_prompt`) through the orchestrator's `sgpo.common.prompts` renderer.
"""

from __future__ import annotations

import time
from pathlib import Path


def record(
    out: Path,
    prompts: int = 256,
    seed: int = 0,
    policy: Path | None = None,
    run_dir: Path | None = None,
    preset: str = "tiny",
) -> int:
    """Sample one group from each of `prompts` prompts with `policy` (default: the preset's pretrained policy),
    verify it and judge every wrong answer, and write the groups to `out`; logs and the generated config go
    to `run_dir` (default: <out>.d). The exit status: 0 when every group was written, 1 otherwise, 2 for bad
    arguments."""
    import tomli_w
    from rich.console import Console
    from rich.progress import Progress

    from sgpo.common.ports import free_port
    from sgpo.common.settings import load_config
    from sgpo.launch.cluster import EmbeddedRedis, LocalCluster, ServiceSpec, local_service_token
    from sgpo.launch.presets import TRAIN_PRESETS
    from sgpo.launch.train import TrainOptions, build_run_config, write_datasets
    from sgpo.orchestrator.clients import Clients
    from sgpo.orchestrator.config import OrchestratorConfig
    from sgpo.orchestrator.loop import Orchestrator
    from sgpo.orchestrator.offline import GroupWriter
    from sgpo.tasks.tiny import ensure_tiny_policy

    console = Console()
    if prompts < 1:
        console.print(f"[red]error:[/] --prompts must be >= 1; got {prompts}")
        return 2
    train_preset = TRAIN_PRESETS[preset]
    run_dir = (run_dir or out.with_name(out.name + ".d")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    policy = (policy or ensure_tiny_policy(progress=True)).resolve()
    train_path, _ = write_datasets(run_dir, seed, train_preset)
    redis = EmbeddedRedis(run_dir / "redis")  # unused by recording, but every config names one
    ports = {
        name: (free_port(), free_port())
        for name in ("verifier", "judge", "generator", "trainer", "orchestrator")
    }
    opts = TrainOptions(algo="sgpo", seed=seed)
    doc = build_run_config(train_preset, opts, run_dir, policy, redis.url, train_path, ports, steps=1)
    doc["orchestrator"].update(max_groups=prompts, epochs=1, stats_path=str(run_dir / "groups.jsonl"))
    config_path = run_dir / "run.toml"
    config_path.write_text(tomli_w.dumps(doc))
    cfg = load_config(OrchestratorConfig, config_path, known_sections=set(doc) - {"algo"})
    cluster = LocalCluster(config_path, run_dir / "logs", env=local_service_token(run_dir))
    t0 = time.perf_counter()
    try:
        with console.status("starting verifier, judge and generator..."):
            for name in ("verifier", "judge", "generator"):
                cluster.start(ServiceSpec(name, *ports[name]), wait_ready=False)
            for name in ("verifier", "judge", "generator"):
                cluster.wait_ready(name)
        clients = Clients(cluster.target("generator"), cluster.target("verifier"), cluster.target("judge"))
        with GroupWriter(out) as writer, Progress(console=console) as progress:
            task = progress.add_task("recording groups", total=prompts)

            class Sink:
                def put(self, group: object) -> None:
                    writer.write(group)  # type: ignore[arg-type]
                    progress.advance(task)

            stats = Orchestrator(cfg, Sink(), clients=clients, judge_all_wrong=True).run()
        clients.close()
    finally:
        cluster.stop()
        redis.close()
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(stats.by_kind.items()))
    console.print(f"wrote {writer.count} groups to {out} in {time.perf_counter() - t0:.0f}s ({kinds})")
    return 0 if writer.count == prompts else 1
