"""`sgpo record`: sample groups once from a policy (verified, every wrong answer judged) into a file.

That file is the paper's offline setting: `sgpo train --replay FILE --algo sgpo|grpo` trains on exactly
these samples for several epochs, scored by the replaying run's own algorithm.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "record groups sampled once from the initial policy (offline mode) into a file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=["tiny"], default="tiny", help="run preset (default: tiny)")
    p.add_argument("--out", type=Path, required=True, help="file to write (read by `sgpo train --replay`)")
    p.add_argument("--prompts", type=int, default=256, help="prompts to sample (one group each)")
    p.add_argument("--seed", type=int, default=0, help="seed for prompt order and sampling")
    p.add_argument("--policy", type=Path, help="policy folder (default: the preset's pretrained policy)")
    p.add_argument("--run-dir", type=Path, help="folder for logs and the generated config (default: <out>.d)")


def run(args: argparse.Namespace) -> int:
    import tomli_w
    from rich.console import Console
    from rich.progress import Progress

    from sgpo.common.ports import free_port
    from sgpo.common.settings import load_config
    from sgpo.launch.cluster import EmbeddedRedis, LocalCluster, ServiceSpec
    from sgpo.launch.presets import TRAIN_PRESETS
    from sgpo.launch.train import build_run_config, write_datasets
    from sgpo.orchestrator.clients import Clients
    from sgpo.orchestrator.config import OrchestratorConfig
    from sgpo.orchestrator.loop import Orchestrator
    from sgpo.orchestrator.offline import GroupWriter
    from sgpo.tasks.tiny import ensure_tiny_policy

    console = Console()
    if args.prompts < 1:
        console.print(f"[red]error:[/] --prompts must be >= 1; got {args.prompts}")
        return 2
    preset = TRAIN_PRESETS[args.preset]
    run_dir = (args.run_dir or args.out.with_name(args.out.name + ".d")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    policy = (args.policy or ensure_tiny_policy(progress=True)).resolve()
    train_path, _ = write_datasets(run_dir, args.seed, preset)
    redis = EmbeddedRedis(run_dir / "redis")  # unused by recording, but every config names one
    ports = {
        name: (free_port(), free_port())
        for name in ("verifier", "judge", "generator", "trainer", "orchestrator")
    }
    ns = argparse.Namespace(algo="sgpo", seed=args.seed, replay=None, config=None, epochs=0)
    doc = build_run_config(preset, ns, run_dir, policy, redis.url, train_path, ports, steps=1)
    doc["orchestrator"].update(max_groups=args.prompts, epochs=1, stats_path=str(run_dir / "groups.jsonl"))
    config_path = run_dir / "run.toml"
    config_path.write_text(tomli_w.dumps(doc))
    cfg = load_config(OrchestratorConfig, config_path, known_sections=set(doc) - {"algo"})
    cluster = LocalCluster(config_path, run_dir / "logs")
    t0 = time.perf_counter()
    try:
        with console.status("starting verifier, judge and generator..."):
            for name in ("verifier", "judge", "generator"):
                cluster.start(ServiceSpec(name, *ports[name]), wait_ready=False)
            for name in ("verifier", "judge", "generator"):
                cluster.wait_ready(name)
        clients = Clients(cluster.target("generator"), cluster.target("verifier"), cluster.target("judge"))
        with GroupWriter(args.out) as writer, Progress(console=console) as progress:
            task = progress.add_task("recording groups", total=args.prompts)

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
    console.print(f"wrote {writer.count} groups to {args.out} in {time.perf_counter() - t0:.0f}s ({kinds})")
    return 0 if writer.count == args.prompts else 1
