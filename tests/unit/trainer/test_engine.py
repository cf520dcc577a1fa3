"""TrainEngine on the tiny policy: skipping and micro-batching leave the update unchanged; resume is exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sgpo.trainer.checkpoint import TrainerState, load_state, load_torch, save_checkpoint
from sgpo.trainer.config import TrainerConfig
from sgpo.trainer.engine import TrainEngine
from sgpo.trainer.loop import rng_state, set_rng_state
from tests.unit.trainer.fixtures import make_group

GROUPS = [
    make_group("mixed-0", completion_len=(4, 12)),
    make_group("zero-1", advantages=(0.0,) * 4, rewards=(0.0,) * 4, completion_len=(4, 12)),
    make_group("mixed-2", completion_len=(4, 12)),
]


def _engine(policy: Path, **kw: object) -> TrainEngine:
    args: dict[str, object] = {"lr": 1e-3, "micro_batch_size": 4, **kw}
    cfg = TrainerConfig(model_path=policy, **args)  # type: ignore[arg-type]
    e = TrainEngine(cfg)
    e.load(policy)
    return e


def _params(e: TrainEngine) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in e.model.state_dict().items()}


# Adam divides by sqrt(v): a near-zero gradient's float noise becomes a full-lr update. With eps >> sqrt(v)
# it is plain SGD, so comparing parameters compares gradients (the thing the equivalences are about).
SGD_LIKE = {"lr": 1.0, "adam_eps": 1.0}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, f"max parameter difference {worst}"


def test_skipping_zero_advantage_completions_gives_the_same_update(tiny_policy_dir: Path) -> None:
    skip = _engine(tiny_policy_dir, **SGD_LIKE)
    full = _engine(tiny_policy_dir, skip_zero_advantage=False, **SGD_LIKE)
    before = _params(skip)
    for step in range(2):
        rs, rf = skip.train_step(GROUPS, step), full.train_step(GROUPS, step)
        assert rs.loss == pytest.approx(rf.loss, abs=1e-6)
        assert rs.trained_seqs == 8 and rf.trained_seqs == 12
        assert rs.forwarded_tokens < rf.forwarded_tokens
        assert rs.completion_tokens == rf.completion_tokens
    _assert_same(_params(skip), _params(full))
    assert max(float((before[k] - v).abs().max()) for k, v in _params(skip).items()) > 1e-4  # it did train


def test_micro_batch_size_does_not_change_the_update(tiny_policy_dir: Path) -> None:
    one = _engine(tiny_policy_dir, micro_batch_size=1, **SGD_LIKE)
    many = _engine(tiny_policy_dir, micro_batch_size=64, **SGD_LIKE)
    for step in range(2):
        assert one.train_step(GROUPS, step).loss == pytest.approx(
            many.train_step(GROUPS, step).loss, abs=1e-6
        )
    _assert_same(_params(one), _params(many))


def test_an_all_zero_advantage_step_leaves_a_fresh_policy_unchanged(tiny_policy_dir: Path) -> None:
    e = _engine(tiny_policy_dir)
    before = _params(e)
    r = e.train_step([GROUPS[1]], 0)
    assert (r.loss, r.grad_norm, r.trained_seqs) == (0.0, 0.0, 0)
    _assert_same(before, _params(e), atol=0.0)


def test_recompute_makes_the_ratio_one(tiny_policy_dir: Path) -> None:
    r = _engine(tiny_policy_dir, logp_old="recompute").train_step(GROUPS, 0)
    assert r.ratio_mean == pytest.approx(1.0) and r.clip_fraction == 0.0
    behaviour = _engine(tiny_policy_dir).train_step(GROUPS, 0)
    assert behaviour.ratio_mean < 0.5  # random behaviour logprobs: far from the model's


def test_kl_to_the_reference_starts_at_zero_and_grows(tiny_policy_dir: Path) -> None:
    e = _engine(tiny_policy_dir, algo={"kl_coef": 0.1}, lr=1e-2)
    assert e.ref is not None
    first = e.train_step(GROUPS, 0)
    assert first.kl == pytest.approx(0.0, abs=1e-9)
    assert first.trained_seqs == 12  # with KL on, zero-advantage completions still have a gradient
    later = [e.train_step(GROUPS, s).kl for s in range(1, 4)]
    assert later[-1] > 1e-4


def test_resume_from_a_checkpoint_continues_the_same_trajectory(
    tiny_policy_dir: Path, tmp_path: Path
) -> None:
    a = _engine(tiny_policy_dir)
    a.train_step(GROUPS, 0)
    a.train_step(GROUPS[:2], 1)
    model_sd, optim_sd = a.gather_state()
    assert model_sd is not None and optim_sd is not None
    ckpt = save_checkpoint(
        tmp_path,
        TrainerState(step=2, consumed=[["mixed-0", "zero-1", "mixed-2"], ["mixed-0", "zero-1"]]),
        write_model=lambda d: a.save_model(model_sd, d),
        optim_state=optim_sd,
        rng_state=rng_state(),
        tokenizer_from=tiny_policy_dir,
    )
    assert ckpt == tmp_path / "checkpoints" / "step-2"
    assert load_state(ckpt).consumed_ids() == {"mixed-0", "zero-1", "mixed-2"}
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer.json").is_file()
    a.train_step(GROUPS, 2)

    b = _engine(tiny_policy_dir)
    b.load(ckpt)
    b.load_optimizer(load_torch(ckpt / "optimizer.pt"))
    set_rng_state(load_torch(ckpt / "rng.pt"))
    b.train_step(GROUPS, 2)
    _assert_same(_params(a), _params(b), atol=1e-7)


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean"])
@pytest.mark.parametrize(
    "knobs",
    [
        {"max_tokens_per_micro_batch": 40},
        {"max_tokens_per_micro_batch": 40, "pack_sequences": True},
        {"pack_sequences": True},
        {"logprob_chunk_tokens": 5},
        {"fused_output_layer": False},
        {"fused_output_layer": False, "pack_sequences": True, "logprob_chunk_tokens": 5},
    ],
    ids=["budget", "budget-packed", "packed", "chunk5", "unfused", "unfused-packed-chunk5"],
)
def test_token_budgets_packing_and_chunks_do_not_change_the_update(
    tiny_policy_dir: Path, knobs: dict[str, object], loss_agg: str
) -> None:
    algo = {"loss_agg": loss_agg}
    base = _engine(tiny_policy_dir, algo=algo, **SGD_LIKE)
    other = _engine(tiny_policy_dir, algo=algo, **knobs, **SGD_LIKE)
    for step in range(2):
        rb, ro = base.train_step(GROUPS, step), other.train_step(GROUPS, step)
        assert ro.loss == pytest.approx(rb.loss, abs=1e-6)
        assert ro.entropy == pytest.approx(rb.entropy, rel=1e-5)
        assert ro.clip_fraction == rb.clip_fraction and ro.forwarded_tokens == rb.forwarded_tokens
    _assert_same(_params(base), _params(other))


@pytest.mark.parametrize(
    "knobs",
    [
        {"algo": {"kl_coef": 0.1}},
        {"logp_old": "recompute", "temperature": 0.7},
        {"algo": {"kl_coef": 0.05, "loss_agg": "seq_mean_token_mean"}, "temperature": 0.7},
    ],
    ids=["kl", "recompute-T0.7", "kl-seqmean-T0.7"],
)
def test_the_fused_output_layer_gives_the_unfused_update(
    tiny_policy_dir: Path, knobs: dict[str, object]
) -> None:
    """The gradient formed in the forward pass (fused) equals autograd's through the chunked logprobs and
    compute_policy_loss, with the reference policy's KL, a recomputed logp_old and a temperature."""
    fused = _engine(tiny_policy_dir, **knobs, **SGD_LIKE)
    plain = _engine(tiny_policy_dir, fused_output_layer=False, **knobs, **SGD_LIKE)
    assert fused.cfg.fused_output_layer and not plain.cfg.fused_output_layer
    for step in range(3):
        rf, rp = fused.train_step(GROUPS, step), plain.train_step(GROUPS, step)
        assert rf.loss == pytest.approx(rp.loss, abs=1e-6)
        assert rf.kl == pytest.approx(rp.kl, abs=1e-7)
        assert rf.entropy == pytest.approx(rp.entropy, rel=1e-5)
        assert rf.grad_norm == pytest.approx(rp.grad_norm, rel=1e-5)
        assert rf.grad_norm > 0
    _assert_same(_params(fused), _params(plain))


def test_compile_compiles_each_decoder_layer_in_place(tiny_policy_dir: Path) -> None:
    """`compile = true` compiles the repeated blocks only, in place: state-dict keys stay the checkpoint's."""
    eager, compiled = _engine(tiny_policy_dir), _engine(tiny_policy_dir, compile=True)
    layers = [m for m in compiled.model.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    assert layers and all(type(m).__name__ in compiled.model._no_split_modules for m in layers)
    assert getattr(compiled.model, "_compiled_call_impl", None) is None
    assert not any(getattr(m, "_compiled_call_impl", None) for m in eager.model.modules())
    assert list(compiled.model.state_dict()) == list(eager.model.state_dict())


@pytest.mark.slow  # inductor compiles forward and backward: about a minute on a loaded 2-core CPU
def test_compile_gives_the_eager_update(tiny_policy_dir: Path) -> None:
    eager = _engine(tiny_policy_dir, **SGD_LIKE)
    compiled = _engine(tiny_policy_dir, compile=True, **SGD_LIKE)
    for step in range(2):
        re, rc = eager.train_step(GROUPS, step), compiled.train_step(GROUPS, step)
        assert rc.loss == pytest.approx(re.loss, abs=1e-5)
        assert rc.entropy == pytest.approx(re.entropy, rel=1e-4)
        assert rc.grad_norm == pytest.approx(re.grad_norm, rel=1e-4)
    _assert_same(_params(eager), _params(compiled), atol=1e-5)
