"""Recipes: the shipped ones load and resolve to valid service configs; GPU lists, layouts and bad recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgpo.launch.presets import (
    RECIPES_DIR,
    TRAIN_PRESETS,
    RecipeError,
    load_recipe,
    parse_gpus,
    shipped_recipes,
)
from sgpo.launch.train import (
    SERVICE_ORDER,
    TrainOptions,
    build_run_config,
    resolve_layout,
    resolve_recipe,
    validate_configs,
)
from tests.support import ROOT


def test_tiny_preset_is_the_tiny_recipe_with_todays_values() -> None:
    tiny = TRAIN_PRESETS["tiny"]
    assert (tiny.steps, tiny.batch_groups, tiny.group_size, tiny.lr, tiny.max_tokens) == (
        60,
        16,
        8,
        3e-4,
        160,
    )
    assert (tiny.train_per_level, tiny.eval_per_level, tiny.eval_samples, tiny.eval_every) == (
        2000,
        100,
        4,
        20,
    )
    assert (tiny.checkpoint_every, tiny.max_policy_lag, tiny.temperature) == (10, 1, 1.0)
    assert resolve_recipe(TrainOptions()).spec.name == "tiny"
    assert resolve_recipe(TrainOptions(preset="tiny")).path == RECIPES_DIR / "tiny.toml"


def test_repository_recipes_folder_is_the_shipped_one() -> None:
    assert (ROOT / "recipes").resolve() == RECIPES_DIR
    assert {"tiny", "tiny-chat", "qwen2.5-math-1.5b", "qwen2.5-math-7b"} <= set(shipped_recipes())


@pytest.mark.parametrize(
    ("text", "gpus"), [("0,1", (0, 1)), ("2-5", (2, 3, 4, 5)), ("0-1,4", (0, 1, 4)), ("", ())]
)
def test_parse_gpus(text: str, gpus: tuple[int, ...]) -> None:
    assert parse_gpus(text) == gpus


@pytest.mark.parametrize(
    ("text", "message"), [("0,0", "listed twice"), ("a", "expected GPU indices"), ("3-1", "expected")]
)
def test_parse_gpus_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_gpus(text)


def test_layout_from_the_command_line_and_the_recipe() -> None:
    recipe = load_recipe("qwen2.5-math-7b")
    lay = resolve_layout(recipe, TrainOptions())
    assert lay.generators == ((0,), (1,)) and lay.trainer_gpus == (2, 3, 4, 5) and lay.trainer_procs == 4
    assert lay.judge_gpus == (6, 7) and lay.generator_names == ["generator-0", "generator-1"]
    lay = resolve_layout(recipe, TrainOptions(generator_gpus=(0, 1, 2), trainer_gpus=(3, 4, 5, 6, 7)))
    assert lay.generators == ((0,), (1,), (2,)) and lay.trainer_procs == 5
    tiny = load_recipe("tiny")
    lay = resolve_layout(tiny, TrainOptions(generator_replicas=2, trainer_procs=2))
    assert lay.generators == ((), ()) and lay.trainer_procs == 2 and not lay.on_gpus
    assert resolve_layout(tiny, TrainOptions()).generator_names == ["generator"]


def test_tensor_parallel_groups_and_disagreements_are_clear_errors(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        (RECIPES_DIR / "qwen2.5-math-7b.toml")
        .read_text()
        .replace("tensor_parallel_size = 1\ngpu", "tensor_parallel_size = 2\ngpu")
    )
    r = load_recipe(recipe)
    assert resolve_layout(r, TrainOptions(generator_gpus=(0, 1, 2, 3))).generators == ((0, 1), (2, 3))
    with pytest.raises(ValueError, match="groups of 2"):
        resolve_layout(r, TrainOptions(generator_gpus=(0, 1, 2)))
    with pytest.raises(ValueError, match="--trainer-procs 2 disagrees with --trainer-gpus"):
        resolve_layout(r, TrainOptions(trainer_procs=2))
    with pytest.raises(ValueError, match="needs a judge model"):
        resolve_layout(load_recipe("tiny"), TrainOptions(judge_gpus=(0,)))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("steps = 4", "recipe.steps: Input should be greater than or equal to 1"),
        ("tmp = 1", "recipe.tmp: Extra inputs are not permitted"),
        ('task = "file"', "needs data.train"),
    ],
)
def test_bad_recipes_name_the_field(tmp_path: Path, edit: str, message: str) -> None:
    text = (RECIPES_DIR / "tiny-chat.toml").read_text()
    if edit == "steps = 4":
        text = text.replace("steps = 4", "steps = 0")
    elif edit == "tmp = 1":
        text = text.replace('name = "tiny-chat"', 'name = "tiny-chat"\ntmp = 1')
    else:
        text = text.replace('task = "arith"', 'task = "file"')
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message) as e:
        load_recipe(path)
    assert str(path) in str(e.value)
    with pytest.raises(RecipeError, match="no recipe file"):
        load_recipe("no-such-recipe")


@pytest.mark.parametrize("name", ["tiny", "tiny-chat", "qwen2.5-math-1.5b", "qwen2.5-math-7b"])
def test_shipped_recipes_resolve_to_valid_service_configs(name: str, tmp_path: Path) -> None:
    """Every shipped recipe's run.toml passes every service's config check (the policy: the tiny test model)."""
    import tomli_w

    from sgpo.tasks.tiny import build_tiny_policy

    policy = build_tiny_policy(tmp_path / "policy", seed=0)
    recipe = load_recipe(name)
    opts = TrainOptions(recipe=recipe.path)
    layout = resolve_layout(recipe, opts)
    names = [*SERVICE_ORDER, *layout.generator_names, "judge-llm"]
    ports: dict[str, tuple[int, ...]] = {n: (1000 + i, 2000 + i, 3000 + i) for i, n in enumerate(names)}
    train = tmp_path / "train.jsonl"
    train.write_text('{"problem": "1+1", "answer": "2"}\n')
    doc = build_run_config(
        recipe.preset,
        opts,
        tmp_path,
        policy,
        "redis://x",
        train,
        ports,
        3,
        recipe,
        layout,  # type: ignore[arg-type]
    )
    (tmp_path / "run.toml").write_text(tomli_w.dumps(doc))
    validate_configs(tmp_path / "run.toml")
    gens = [f"127.0.0.1:{ports[n][0]}" for n in layout.generator_names]
    assert doc["trainer"]["generator_target"] == doc["orchestrator"]["generator_target"] == gens
    if layout.on_gpus:
        assert "threads" not in doc["generator"], "vLLM rejects generator.threads"
        assert doc["trainer"]["device"] == "cuda" and "torch_threads" not in doc["trainer"]
    else:
        assert doc["generator"]["threads"] == 1 and doc["trainer"]["torch_threads"] == 1
    if layout.judge_gpus:  # the judge asks the judge model the launcher serves
        llm = doc["judge"]["backend"]["llm"]
        assert llm["base_url"] == f"http://127.0.0.1:{ports['judge-llm'][2]}/v1" and llm["model"] == "judge"


def test_config_holding_a_recipe_is_the_recipe_and_recipe_with_preset_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text((RECIPES_DIR / "tiny-chat.toml").read_text())
    assert resolve_recipe(TrainOptions(config=path)).spec.name == "tiny-chat"
    with pytest.raises(RecipeError, match="not both"):
        resolve_recipe(TrainOptions(recipe=path, preset="tiny"))
    plain = tmp_path / "override.toml"
    plain.write_text("[trainer]\nlr = 0.1\n")
    assert resolve_recipe(TrainOptions(config=plain)).spec.name == "tiny"  # an override file, not a recipe
