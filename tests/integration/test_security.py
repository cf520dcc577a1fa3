"""Security of the deployment configuration (service token + API keys + weights root), on real processes.

Every service runs as `sgpo serve NAME` with the settings compose and Helm give it: a shared service token
file, the judge's and the generator's HTTP API key files, the generator confined to the trainer's
`weights/`. Checked: every gRPC method and every HTTP `/v1` route refuses unauthenticated calls; health stays
open; an orchestrator and a trainer of the same deployment still train a step and publish it to the generator
(their clients send the token); `UpdateWeights` loads nothing outside the weights root; no secret value appears
in any log or error message.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sgpo.common import auth
from sgpo.tasks.arith import generate_split, write_jsonl
from sgpo.tasks.tiny import build_tiny_policy
from sgpo.v1 import generator_pb2, generator_pb2_grpc, judge_pb2, trainer_pb2, verifier_pb2
from tests.support import ServiceProcess, run_service, sgpo_cmd
from tests.unit.trainer.fixtures import trainer_env

pytestmark = pytest.mark.integration

TOKEN = "svc-" + auth.generate_secret()
JUDGE_KEY = "judge-" + auth.generate_secret()
GEN_KEY = "gen-" + auth.generate_secret()
REDIS_PASSWORD = "redis-" + auth.generate_secret()
SECRETS = (TOKEN, JUDGE_KEY, GEN_KEY, REDIS_PASSWORD)
SERVICES = {
    "generator": generator_pb2.DESCRIPTOR.services_by_name["GeneratorService"],
    "verifier": verifier_pb2.DESCRIPTOR.services_by_name["VerifierService"],
    "judge": judge_pb2.DESCRIPTOR.services_by_name["JudgeService"],
    "trainer": trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"],
}


class Deployment:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, ServiceProcess] = {}
        self.http: dict[str, int] = {}
        self.messages: list[str] = []
        """Every error message a client saw (scanned for secrets at the end)."""

    def token_env(self) -> dict[str, str]:
        return {auth.TOKEN_FILE_ENV: str(self.root / "secrets" / "service-token")}

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.root.glob("*.log"))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    from sgpo.common.ports import free_port

    root = tmp_path_factory.mktemp("secure")
    # a Redis of the test's own that requires a password (as compose and Helm run it)
    redis_port = free_port()
    redis_conf = auth.write_secret_file(root / "secrets" / "redis.conf", f"requirepass {REDIS_PASSWORD}")
    redis_proc = subprocess.Popen(
        ["redis-server", str(redis_conf), "--port", str(redis_port), "--save", "", "--dir", str(root)],
        stdout=subprocess.DEVNULL,
    )
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=redis_port, password=REDIS_PASSWORD).ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    with pytest.raises(redis.AuthenticationError):  # no password: refused
        redis.Redis(port=redis_port).ping()
    redis_env = {"SGPO_REDIS_PASSWORD": REDIS_PASSWORD}
    d = Deployment(root)
    auth.write_secret_file(root / "secrets" / "service-token", TOKEN)
    auth.write_secret_file(root / "secrets" / "judge-api-keys", JUDGE_KEY)
    auth.write_secret_file(root / "secrets" / "generator-api-key", GEN_KEY)
    policy = build_tiny_policy(root / "policy", seed=0)
    run_dir = root / "run"
    (run_dir / "weights").mkdir(parents=True)
    run_id = "secure"
    dataset = root / "prompts.jsonl"
    write_jsonl(dataset, generate_split("test", [2], 4, seed=3))
    d.http = {"generator": free_port(), "judge": free_port()}
    common = d.token_env()
    try:
        with (
            run_service("verifier", root, env={**common, "SGPO_VERIFIER__WORKERS": "1"}) as verifier,
            run_service(
                "judge",
                root,
                env={
                    **common,
                    "SGPO_JUDGE__HTTP_PORT": str(d.http["judge"]),
                    "SGPO_JUDGE__API_KEYS_FILE": str(root / "secrets" / "judge-api-keys"),
                },
            ) as judge,
            run_service(
                "generator",
                root,
                env={
                    **common,
                    "SGPO_GENERATOR__MODEL": str(policy),
                    "SGPO_GENERATOR__THREADS": "1",
                    "SGPO_GENERATOR__HTTP_PORT": str(d.http["generator"]),
                    "SGPO_GENERATOR__API_KEY_FILE": str(root / "secrets" / "generator-api-key"),
                    "SGPO_GENERATOR__WEIGHTS_ROOT": str(run_dir / "weights"),
                },
            ) as generator,
            run_service(
                "trainer",
                root,
                env={
                    # the token by the service's own setting (not the shared env): its clients use it too
                    "SGPO_TRAINER__SERVICE_TOKEN_FILE": common[auth.TOKEN_FILE_ENV],
                    **redis_env,
                    **trainer_env(
                        policy,
                        run_dir,
                        run_id,
                        redis_url,
                        batch_groups=2,
                        checkpoint_every=1,
                        generator_target=generator.target,
                    ),
                },
            ) as trainer,
        ):
            d.procs = {"verifier": verifier, "judge": judge, "generator": generator, "trainer": trainer}
            # the orchestrator enqueues its 2 groups and exits: started here, checked by the training test
            orch_env = {
                **os.environ,
                "SGPO_ORCHESTRATOR__SERVICE_TOKEN_FILE": common[auth.TOKEN_FILE_ENV],
                **redis_env,
                "SGPO_ORCHESTRATOR__PORT": str(free_port()),
                "SGPO_ORCHESTRATOR__METRICS_PORT": "0",
                "SGPO_ORCHESTRATOR__RUN_ID": run_id,
                "SGPO_ORCHESTRATOR__REDIS_URL": redis_url,
                "SGPO_ORCHESTRATOR__DATASET": str(dataset),
                "SGPO_ORCHESTRATOR__GENERATOR_TARGET": generator.target,
                "SGPO_ORCHESTRATOR__VERIFIER_TARGET": verifier.target,
                "SGPO_ORCHESTRATOR__JUDGE_TARGET": judge.target,
                "SGPO_ORCHESTRATOR__MAX_GROUPS": "2",
                "SGPO_ORCHESTRATOR__BATCH_GROUPS": "2",
                "SGPO_ORCHESTRATOR__PROMPTS_PER_REQUEST": "2",
                "SGPO_ORCHESTRATOR__ALGO__GROUP_SIZE": "2",
                "SGPO_ORCHESTRATOR__SAMPLING__MAX_TOKENS": "8",
            }
            with (root / "orchestrator.log").open("wb") as log:
                d.orchestrator = subprocess.Popen(  # type: ignore[attr-defined]
                    sgpo_cmd("serve", "orchestrator"), env=orch_env, stdout=log, stderr=subprocess.STDOUT
                )
            d.run_dir = run_dir  # type: ignore[attr-defined]
            try:
                yield d
            finally:
                if d.orchestrator.poll() is None:  # type: ignore[attr-defined]
                    d.orchestrator.terminate()  # type: ignore[attr-defined]
                d.orchestrator.wait(30)  # type: ignore[attr-defined]
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)


def _raw_call(target: str, method: str, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError:
    with grpc.insecure_channel(target) as ch:
        call = ch.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            call(b"", timeout=10, metadata=metadata)
    return e.value


def test_every_grpc_method_refuses_calls_without_the_token(deployment: Deployment) -> None:
    for name, service in SERVICES.items():
        target = deployment.procs[name].target
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
                err = _raw_call(target, path, metadata)
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (path, metadata, err)
                assert auth.TOKEN_ENV in (err.details() or "")
                deployment.messages.append(err.details() or "")
    # health stays open (probes carry no credentials): `run_service` waited for SERVING without the token
    for name in ("generator", "verifier", "judge"):
        with grpc.insecure_channel(deployment.procs[name].target) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, name
    # with the token the same call goes through
    with auth.channel(deployment.procs["generator"].target, token=TOKEN) as ch:
        info = generator_pb2_grpc.GeneratorServiceStub(ch).GetInfo(generator_pb2.GetInfoRequest(), timeout=10)
        assert info.engine == "hf"


def _v1_routes(port: int) -> list[tuple[str, str]]:
    spec = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=10).json()
    return [(m.upper(), path) for path, ops in spec["paths"].items() if path.startswith("/v1/") for m in ops]


def test_every_http_api_route_refuses_calls_without_the_key(deployment: Deployment) -> None:
    for name, good in (
        ("generator", {"Authorization": f"Bearer {GEN_KEY}"}),
        ("judge", {"X-API-Key": JUDGE_KEY}),
    ):
        port = deployment.http[name]
        routes = _v1_routes(port)
        assert len(routes) >= 3, routes
        for method, path in routes:
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"X-API-Key": "wrong"},
                {"Authorization": TOKEN},
            ):
                r = httpx.request(
                    method, f"http://127.0.0.1:{port}{path}", headers=headers, json={}, timeout=10
                )
                assert r.status_code == 401, (name, method, path, headers, r.text)
                deployment.messages.append(r.text)
        # the right key gets past authentication (to validation or an answer)
        for method, path in routes:
            r = httpx.request(method, f"http://127.0.0.1:{port}{path}", headers=good, json={}, timeout=30)
            assert r.status_code != 401, (name, path, r.text)
            deployment.messages.append(r.text)
    # OpenRLHF's client sends the key in the query string: checked the same way (and never logged: no access log)
    reward = f"http://127.0.0.1:{deployment.http['judge']}/v1/openrlhf/reward"
    assert httpx.post(f"{reward}?api_key=wrong", json={}, timeout=10).status_code == 401
    assert httpx.post(f"{reward}?api_key={JUDGE_KEY}", json={}, timeout=30).status_code != 401
    ok = httpx.post(
        f"http://127.0.0.1:{deployment.http['generator']}/v1/completions",
        headers={"Authorization": f"Bearer {GEN_KEY}"},
        json={"prompt": "1+1=", "max_tokens": 2},
        timeout=60,
    )
    assert ok.status_code == 200, ok.text


def test_the_deployment_trains_and_publishes_with_authentication_on(deployment: Deployment) -> None:
    """The orchestrator's and the trainer's clients send the token: groups flow, the trainer steps and the
    generator loads the published weights (inside its weights root)."""
    deadline, version = time.monotonic() + 180, 0
    with auth.channel(deployment.procs["generator"].target, token=TOKEN) as ch:
        stub = generator_pb2_grpc.GeneratorServiceStub(ch)
        while version < 1 and time.monotonic() < deadline:
            version = stub.GetInfo(generator_pb2.GetInfoRequest(), timeout=10).policy_version
            time.sleep(0.2)
    assert version >= 1, (
        deployment.procs["trainer"].log()[-3000:] + deployment.procs["orchestrator"].log()[-3000:]
    )
    # checkpoint and metrics files are not readable by other users; the optimizer by the owner alone
    run_dir: Path = deployment.run_dir  # type: ignore[attr-defined]
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "optimizer.pt" for p in files) and (run_dir / "metrics.jsonl").is_file()
    for p in files:
        if "checkpoints" in p.parts or "weights" in p.parts or p.name == "metrics.jsonl":
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode & 0o007 == 0, (p, oct(mode))
            if p.name in ("optimizer.pt", "rng.pt"):
                assert mode == 0o600, (p, oct(mode))


def _update(deployment: Deployment, uri: str, version: int = 50) -> grpc.RpcError | None:
    with auth.channel(deployment.procs["generator"].target, token=TOKEN) as ch:
        stub = generator_pb2_grpc.GeneratorServiceStub(ch)
        try:
            stub.UpdateWeights(generator_pb2.UpdateWeightsRequest(version=version, uri=uri), timeout=60)
        except grpc.RpcError as e:
            deployment.messages.append(e.details() or "")
            return e
    return None


def test_weight_updates_are_confined_to_the_weights_root(deployment: Deployment, tmp_path: Path) -> None:
    root: Path = deployment.run_dir / "weights"  # type: ignore[attr-defined]
    policy = deployment.root / "policy"
    outside = tmp_path / "outside"
    shutil.copytree(policy, outside)
    cases = {
        "absolute path outside": str(outside),
        "absolute file outside": str(outside / "model.safetensors"),
        "file:// outside": f"file://{outside}",
        "dot-dot": str(root / ".." / ".." / "policy"),
        "relative dot-dot": "../../policy",
        "outside, missing": str(tmp_path / "does-not-exist"),
        "/etc/passwd": "/etc/passwd",
    }
    (root / "escape").symlink_to(outside, target_is_directory=True)
    cases["symlinked folder"] = str(root / "escape")
    linked = root / "linked-file"
    linked.mkdir()
    shutil.copy(policy / "config.json", linked / "config.json")
    (linked / "model.safetensors").symlink_to(outside / "model.safetensors")
    cases["symlinked weights file"] = str(linked)
    messages = {}
    for what, uri in cases.items():
        err = _update(deployment, uri)
        assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, err)
        messages[what] = err.details()
    # one message for all of them: it does not say whether a path outside exists, nor name it
    assert len(set(messages.values())) == 1, messages
    assert "weights_root" in messages["dot-dot"] and str(outside) not in messages["dot-dot"]
    # an index naming shards outside its folder (by `..`, by an absolute path) is refused
    for i, shard in enumerate(("../../policy/model.safetensors", str(outside / "model.safetensors"))):
        folder = root / f"sharded-{i}"
        folder.mkdir()
        shutil.copy(policy / "config.json", folder / "config.json")
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shard}}))
        err = _update(deployment, str(folder))
        assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "outside its folder" in (err.details() or "")
    # the same weights inside the root load
    inside = root / "v7"
    shutil.copytree(policy, inside)
    assert _update(deployment, str(inside), version=7) is None


def test_no_secret_in_logs_or_error_messages(deployment: Deployment, tmp_path: Path) -> None:
    # config errors do not echo a secret field's value
    env = {**os.environ, "SGPO_GENERATOR__API_KEY": JUDGE_KEY, "SGPO_GENERATOR__MAX_N": "0"}
    bad = [
        subprocess.run(
            sgpo_cmd("serve", "generator", "--print-config"), env=env, capture_output=True, text=True
        ),
        subprocess.run(
            sgpo_cmd("serve", "judge", "--print-config"),
            env={**os.environ, "SGPO_JUDGE__API_KEYS": json.dumps([JUDGE_KEY, {"x": 1}])},
            capture_output=True,
            text=True,
        ),
        subprocess.run(
            sgpo_cmd("serve", "judge", "--print-config"),
            env={**os.environ, "SGPO_JUDGE__API_KEYS": JUDGE_KEY},  # not JSON
            capture_output=True,
            text=True,
        ),
        subprocess.run(
            sgpo_cmd("serve", "judge", "--print-config"),
            env={**os.environ, "SGPO_JUDGE__BACKEND__TYPE": "llm", "SGPO_JUDGE__BACKEND__API_KEY": GEN_KEY},
            capture_output=True,
            text=True,
        ),
    ]
    for r in bad:
        deployment.messages.append(r.stdout + r.stderr)
    assert bad[0].returncode == 2 and "max_n" in bad[0].stderr
    assert bad[1].returncode == 2 and bad[2].returncode == 2
    good = subprocess.run(
        sgpo_cmd("serve", "generator", "--print-config"),
        env={**os.environ, "SGPO_GENERATOR__API_KEY": GEN_KEY},
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0
    deployment.messages.append(good.stdout + good.stderr)
    text = deployment.logs() + "\n".join(deployment.messages)
    assert "UNAUTHENTICATED" in text or "service token" in text  # the scan saw the refusals
    for secret in SECRETS:
        assert secret not in text


def test_a_judge_without_keys_writes_its_generated_key_to_a_private_file(tmp_path: Path) -> None:
    from sgpo.common.ports import free_port

    port = free_port()
    with run_service("judge", tmp_path, env={"SGPO_JUDGE__HTTP_PORT": str(port)}) as judge:
        log = judge.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    path = Path(next(line["api_key_file"] for line in lines if "api_key_file" in line))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert len(key) >= 32 and key not in log
    shutil.rmtree(path.parent)
