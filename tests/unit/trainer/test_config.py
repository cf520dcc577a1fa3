"""TrainerConfig: defaults print, bad values name the field and say how to fix them, env overrides work."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sgpo.common.settings import ConfigError, load_config
from sgpo.trainer.batch import build_samples, check_group, collate
from sgpo.trainer.config import TrainerConfig
from tests.unit.trainer.fixtures import make_group


def test_defaults_resolve_without_a_model() -> None:
    cfg = load_config(TrainerConfig)
    assert cfg.model_path is None and cfg.algo.loss_agg == "token_mean"
    with pytest.raises(ValueError, match="SGPO_TRAINER__MODEL_PATH"):
        cfg.require_model()


def test_toml_section_shared_algo_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    path = tmp_path / "run.toml"
    path.write_text(f'[algo]\nclip_eps_high = 0.28\n\n[trainer]\nmodel_path = "{model}"\nbatch_groups = 4\n')
    monkeypatch.setenv("SGPO_TRAINER__ALGO__KL_COEF", "0.05")
    monkeypatch.setenv("SGPO_TRAINER__MAX_STEPS", "7")
    cfg = load_config(TrainerConfig, path)
    assert (cfg.batch_groups, cfg.max_steps, cfg.model_path) == (4, 7, model)
    assert cfg.algo.kl_coef == 0.05


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"model_path": "/nonexistent"}, "no config.json"),
        ({"batch_groups": 0}, "batch_groups"),
        ({"claim_idle_ms": 10}, "claim_idle_ms"),
        ({"logp_old": "sometimes"}, "logp_old"),
        ({"adam_betas": (0.9, 1.5)}, "adam_betas must both be in (0, 1)"),
        ({"unknown_knob": 1}, "unknown_knob"),
    ],
)
def test_bad_values_name_the_field(overrides: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(TrainerConfig, **overrides)
    assert needle in str(e.value)


def test_a_reference_without_kl_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="kl_coef"):
        load_config(TrainerConfig, reference_path=tmp_path)


def test_collate_puts_the_loss_on_completion_tokens_only() -> None:
    g = make_group("c", size=2, prompt_len=3, completion_len=(2, 4))
    mb = collate(build_samples([g]), pad_id=0)
    for row, c in enumerate(g.completions):
        n = len(c.token_ids)
        assert mb.input_ids[row, : 3 + n].tolist() == [*g.prompt_token_ids, *c.token_ids]
        # logprob position t predicts token t + 1: completion tokens 3..3+n-1 -> positions 2..2+n-1
        assert mb.loss_mask[row].nonzero().flatten().tolist() == list(range(2, 2 + n))
        assert mb.logp_old[row, 2 : 2 + n].tolist() == list(c.logprobs)
        assert mb.advantages[row].item() == pytest.approx(g.advantages[row])
    assert mb.tokens == sum(3 + len(c.token_ids) for c in g.completions)


def test_check_group_explains_what_cannot_be_trained() -> None:
    assert check_group(make_group("ok"), vocab_size=100, max_seq_len=64) is None
    assert "outside the model's vocabulary" in str(check_group(make_group("v", vocab=500), 100, 64))
    assert "max_seq_len 8" in str(check_group(make_group("long"), 100, 8))
    no_prompt = dataclasses.replace(make_group("p"), prompt_token_ids=())
    assert "prompt_token_ids is empty" in str(check_group(no_prompt, 100, 64))
