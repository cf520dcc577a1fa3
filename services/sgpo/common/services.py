"""The registry of the five services, as data: name -> (config class path, server module path).

Strings, not imports, so every layer may read it (the CLI's `sgpo serve`, the config checks of `sgpo train`,
the `[service]` table names a config file may hold) without importing a service.
"""

from __future__ import annotations

# service name -> ("module:ConfigClass", server module exposing serve(cfg))
SERVICES: dict[str, tuple[str, str]] = {
    "generator": ("sgpo.generator.config:GeneratorConfig", "sgpo.generator.server"),
    "verifier": ("sgpo.verifier.config:VerifierConfig", "sgpo.verifier.server"),
    "judge": ("sgpo.judge.config:JudgeConfig", "sgpo.judge.server"),
    "orchestrator": ("sgpo.orchestrator.config:OrchestratorConfig", "sgpo.orchestrator.server"),
    "trainer": ("sgpo.trainer.config:TrainerConfig", "sgpo.trainer.server"),
}
