from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from srgan_deploy.config import ModelConfig
from srgan_deploy.errors import ConfigError, TrainingError
from srgan_deploy.train.config import TrainConfig
from srgan_deploy.train.data import DegradationConfig, PatchSampler
from srgan_deploy.train.loop import Trainer, run_training
from srgan_deploy.train.losses import generator_adversarial_loss
from srgan_deploy.weights import load_state, read_info
from tests.conftest import make_generator, smooth_image

TINY = ModelConfig(channels=8, blocks=1)


@pytest.fixture
def train_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "hr"
    (folder / "sub").mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(folder / f"img{i}.png"), smooth_image(48 + 4 * i, 56, seed=i))
    cv2.imwrite(str(folder / "sub" / "deep.jpg"), smooth_image(40, 40, seed=9))
    return folder


def config(data: Path, out: Path, **kw: object) -> TrainConfig:
    base = TrainConfig(
        data=data, out=out, model=TINY, steps=4, batch_size=2, crop=32, lr=1e-3, log_every=1, checkpoint_every=2, seed=1
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def read_log(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_srresnet_steps_lower_the_loss_on_a_fixed_batch(train_dir: Path, tmp_path: Path) -> None:
    trainer = Trainer(config(train_dir, tmp_path / "run", lr=2e-3))
    lr_np, hr_np = trainer.sampler.batch(seed=123, step=0, batch=4)
    lr, hr = torch.from_numpy(lr_np), torch.from_numpy(hr_np)

    def fixed_loss() -> float:
        trainer.generator.eval()
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(trainer.generator(lr), hr))

    before = fixed_loss()
    for _ in range(15):
        trainer.train_step()
        trainer.step += 1
    assert fixed_loss() < 0.7 * before


def test_resume_reproduces_the_uninterrupted_run(train_dir: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    run_training(config(train_dir, full, steps=4))
    part = tmp_path / "part"
    run_training(config(train_dir, part, steps=2))
    run_training(config(train_dir, part, steps=4), resume=True)
    a = {r["step"]: r["mse"] for r in read_log(full)}
    b = {r["step"]: r["mse"] for r in read_log(part)}
    assert b[3] == a[3] and b[4] == a[4]
    assert read_info(part / "generator.safetensors").provenance["steps"] == 4


def test_resume_follows_the_new_schedule(train_dir: Path, tmp_path: Path) -> None:
    """Extending a run with a later lr decay takes effect (the saved scheduler would ignore it)."""
    run = tmp_path / "r"
    run_training(config(train_dir, run, steps=2))
    run_training(config(train_dir, run, steps=6, lr_milestones=(3, 5), lr_gamma=0.5), resume=True)
    lrs = {r["step"]: r["lr"] for r in read_log(run) if "lr" in r}
    # the lr logged at step k is the one for step k + 1 (MultiStepLR after k steps)
    assert lrs[2] == pytest.approx(1e-3)
    assert lrs[3] == lrs[4] == pytest.approx(5e-4)
    assert lrs[5] == lrs[6] == pytest.approx(2.5e-4)


def test_l1_loss_is_a_choice_and_part_of_the_experiment(train_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "l1"
    run_training(config(train_dir, run, steps=2, loss="l1"))
    assert "l1" in read_log(run)[-1] and "mse" not in read_log(run)[-1]
    with pytest.raises(TrainingError, match="loss"):
        run_training(config(train_dir, run, steps=4), resume=True)
    with pytest.raises(ConfigError, match="mse or l1"):
        config(train_dir, run, loss="huber")


def test_resume_refuses_a_different_experiment(train_dir: Path, tmp_path: Path) -> None:
    run_training(config(train_dir, tmp_path / "r", steps=2))
    with pytest.raises(TrainingError, match="batch_size"):
        run_training(config(train_dir, tmp_path / "r", steps=4, batch_size=3), resume=True)


def test_weights_carry_provenance(train_dir: Path, tmp_path: Path) -> None:
    result = run_training(config(train_dir, tmp_path / "r", steps=2, val=train_dir, val_every=2, val_limit=2))
    info = read_info(result.weights)
    prov = info.provenance
    assert prov["steps"] == 2 and prov["degradation"] == "bicubic" and prov["phase"] == "srresnet"
    assert "psnr" in prov["validation"] and prov["validation"]["psnr"] > 0
    assert info.config == TINY


def test_ema_saves_the_moving_average_of_the_trained_weights(train_dir: Path, tmp_path: Path) -> None:
    """The saved weights are the average (warm-up decay included), computed here independently."""
    decay = 0.5
    trainer = Trainer(config(train_dir, tmp_path / "r", ema=decay))
    expected = {k: v.clone().double() for k, v in trainer.generator.state_dict().items()}
    seen = []
    for n in range(12):
        trainer.train_step()
        trainer.step += 1
        d = min(decay, (1 + n) / (10 + n))
        state = trainer.generator.state_dict()
        seen.append({k: v.clone() for k, v in state.items()})
        for key, value in state.items():
            if value.is_floating_point():
                expected[key] = d * expected[key] + (1 - d) * value.double()
    saved = load_state(trainer.save())
    assert not torch.equal(saved["head.weight"], seen[-1]["head.weight"])  # not simply the last step's weights
    for key, value in saved.items():
        if value.is_floating_point():
            torch.testing.assert_close(value.double(), expected[key], rtol=1e-5, atol=1e-6)
    assert read_info(tmp_path / "r" / "generator.safetensors").provenance["ema"] == decay


def test_ema_resume_reproduces_the_uninterrupted_average(train_dir: Path, tmp_path: Path) -> None:
    run_training(config(train_dir, tmp_path / "full", steps=4, ema=0.9))
    run_training(config(train_dir, tmp_path / "part", steps=2, ema=0.9))
    run_training(config(train_dir, tmp_path / "part", steps=4, ema=0.9), resume=True)
    full = load_state(tmp_path / "full" / "generator.safetensors")
    part = load_state(tmp_path / "part" / "generator.safetensors")
    assert full.keys() == part.keys()
    assert all(torch.equal(full[k], part[k]) for k in full)


def test_ema_validation_reports_both_and_snapshots_are_kept(train_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    warnings: list[str] = []
    run_training(config(train_dir, run, steps=2, val=train_dir, val_every=2, val_limit=2))
    cfg = config(train_dir, run, steps=6, ema=0.99, val=train_dir, val_every=2, val_limit=2, snapshot_every=3)
    run_training(cfg, resume=True, warn=warnings.append)
    assert any("starts it from the weights of step 2" in w for w in warnings)
    vals = [r["val"] for r in read_log(run) if "val" in r]
    assert "psnr_raw" not in vals[0]  # before --ema: one measurement
    assert all(v["psnr"] > 0 and v["psnr_raw"] > 0 for v in vals[1:])
    snaps = sorted(p.name for p in (run / "snapshots").iterdir())
    assert snaps == ["generator-step-0000003.safetensors", "generator-step-0000006.safetensors"]
    assert read_info(run / "snapshots" / snaps[0]).provenance["steps"] == 3
    last = load_state(run / "snapshots" / snaps[1])
    final = load_state(run / "generator.safetensors")
    assert all(torch.equal(last[k], final[k]) for k in final)
    run_training(replace(cfg, ema=0.0, steps=7), resume=True, warn=warnings.append)
    assert any("weight average is dropped" in w for w in warnings)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="--ema"):
            config(train_dir, run, ema=bad)


def test_srgan_phase_runs_with_test_only_random_vgg(train_dir: Path, tmp_path: Path) -> None:
    base = run_training(config(train_dir, tmp_path / "pre", steps=1))
    run = tmp_path / "gan"
    result = run_training(
        config(
            train_dir,
            run,
            phase="srgan",
            steps=2,
            init=str(base.weights),
            random_vgg_for_tests=True,
            vgg_layer="relu2_2",
        )
    )
    assert set(result.last_losses) >= {"g", "content", "adv", "d"}
    assert all(np.isfinite(v) for v in result.last_losses.values())
    assert read_info(result.weights).provenance["phase"] == "srgan"


def test_srgan_mse_needs_no_vgg_logs_d_accuracy_and_resumes(
    train_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paper's SRGAN-MSE: pixel-MSE content + adversarial, no VGG weights anywhere."""
    import srgan_deploy.train.loop as loop

    def no_vgg(*args: object, **kwargs: object) -> None:
        raise AssertionError("--content mse must not load VGG19")

    real_vgg = loop.load_vgg
    monkeypatch.setattr(loop, "load_vgg", no_vgg)
    base = run_training(config(train_dir, tmp_path / "pre", steps=1))
    run = tmp_path / "gan"
    gan = config(train_dir, run, phase="srgan", content="mse", steps=2, init=str(base.weights), d_lr=3e-4)
    result = run_training(gan)
    assert set(result.last_losses) >= {"g", "content", "adv", "d", "d_real_acc", "d_fake_acc"}
    assert all(0.0 <= result.last_losses[k] <= 1.0 for k in ("d_real_acc", "d_fake_acc"))
    info = read_info(result.weights).provenance
    assert info["phase"] == "srgan" and info["content"] == "mse"
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["opt_d"]["param_groups"][0]["lr"] == pytest.approx(3e-4)  # the discriminator's own rate
    resumed = run_training(replace(gan, steps=3), resume=True)
    assert resumed.step == 3
    monkeypatch.setattr(loop, "load_vgg", real_vgg)
    with pytest.raises(TrainingError, match="content"):
        run_training(replace(gan, steps=4, content="vgg22", random_vgg_for_tests=True), resume=True)
    with pytest.raises(ConfigError, match="--content"):
        config(train_dir, run, phase="srgan", content="vgg19")
    with pytest.raises(ConfigError, match="--vgg-layer"):
        config(train_dir, run, phase="srgan", content="mse", vgg_layer="relu2_2")


def test_adversarial_loss_carries_gradient_into_the_generator() -> None:
    from srgan_deploy.models import Discriminator, Generator

    gen, disc = Generator(TINY), Discriminator()
    sr = gen(torch.rand(2, 3, 8, 8))
    generator_adversarial_loss(disc(sr)).backward()  # type: ignore[no-untyped-call]
    assert gen.head.weight.grad is not None and gen.head.weight.grad.abs().sum() > 0


def test_missing_vgg_weights_explain_how_to_supply_them(
    train_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    base = run_training(config(train_dir, tmp_path / "pre", steps=1))
    with pytest.raises(TrainingError, match=r"vgg19-dcbb9e9d\.pth.*--vgg-weights"):
        run_training(config(train_dir, tmp_path / "gan", phase="srgan", init=str(base.weights)))


def test_vgg_weights_load_from_a_torchvision_layout_file(tmp_path: Path) -> None:
    from srgan_deploy.train.vgg import VGG19Features, load_vgg

    reference = VGG19Features("relu5_4")
    state = {f"features.{k}": v for k, v in reference.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    vgg = load_vgg(path, "relu2_2")
    assert torch.equal(vgg.features[0].weight, reference.features[0].weight)


def test_bad_and_small_images_are_skipped_with_a_warning(train_dir: Path) -> None:
    (train_dir / "broken.png").write_bytes(b"\x89PNG garbage")
    cv2.imwrite(str(train_dir / "tiny.png"), smooth_image(10, 10))
    warnings: list[str] = []
    sampler = PatchSampler(train_dir, 4, 32, DegradationConfig(), warn=warnings.append)
    assert len(sampler) == 5
    assert any("broken.png" in w for w in warnings) and any("tiny.png" in w and "smaller" in w for w in warnings)


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no usable training images"):
        PatchSampler(tmp_path, 4, 32, DegradationConfig())


def test_batches_are_aligned_and_deterministic(train_dir: Path) -> None:
    sampler = PatchSampler(train_dir, 4, 32, DegradationConfig("blur", 1.2, 5))
    lr1, hr1 = sampler.batch(seed=3, step=7, batch=4)
    lr2, hr2 = sampler.batch(seed=3, step=7, batch=4)
    assert lr1.shape == (4, 3, 8, 8) and hr1.shape == (4, 3, 32, 32)
    assert np.array_equal(lr1, lr2) and np.array_equal(hr1, hr2)
    down = torch.nn.functional.avg_pool2d(torch.from_numpy(hr1), 4).numpy()
    assert np.abs(down - lr1).mean() < 0.08  # LR patch is the HR patch, degraded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    run_training(config(Path(data), Path(out), steps=3, checkpoint_every=2))


def test_two_process_gloo_ddp_run_completes(train_dir: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    out = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(train_dir), str(out)), nprocs=2, join=True)
    prov = read_info(out / "generator.safetensors").provenance
    assert prov["steps"] == 3 and prov["batch_size"] == 4  # 2 per process x 2 processes
    assert [r["step"] for r in read_log(out)] == [1, 2, 3]  # rank 0 alone writes the log


def test_sampler_splits_images_across_ranks(train_dir: Path) -> None:
    sampler = PatchSampler(train_dir, 4, 32, DegradationConfig())
    a = sampler.indices(seed=0, step=0, batch=2, rank=0, world=2)
    b = sampler.indices(seed=0, step=0, batch=2, rank=1, world=2)
    assert not set(a.tolist()) & set(b.tolist())


def test_train_cli(train_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from srgan_deploy.cli import app

    out = tmp_path / "cli"
    args = [
        "train",
        "--data",
        str(train_dir),
        "--out",
        str(out),
        "--steps",
        "2",
        "--channels",
        "8",
        "--blocks",
        "1",
        "--crop",
        "32",
        "--batch-size",
        "2",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert read_info(out / "generator.safetensors").provenance["steps"] == 2
    bad = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "nope"), "--out", str(out)])
    assert bad.exit_code == 2 and "not a folder" in bad.stderr
    averaged = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ema"), "--ema", "0.9", "--snapshot-every", "1"])
    assert averaged.exit_code == 0, averaged.stderr
    assert read_info(tmp_path / "ema" / "generator.safetensors").provenance["ema"] == 0.9
    assert len(list((tmp_path / "ema" / "snapshots").glob("generator-step-*.safetensors"))) == 2
    refused = CliRunner().invoke(app, [*args, "--ema", "1"])
    assert refused.exit_code == 2 and "--ema 1.0 must be in [0, 1)" in refused.stderr


# ----------------------------------------------------------------------------- warm start by widening


@pytest.mark.parametrize("train_mode", [False, True])
def test_widened_generator_computes_the_same_function(train_mode: bool) -> None:
    from srgan_deploy.train.widen import widen_generator

    small = make_generator(ModelConfig(channels=8, blocks=2), seed=4)
    big = widen_generator(small, ModelConfig(channels=16, blocks=4))
    assert big.config == ModelConfig(channels=16, blocks=4)
    small.train(train_mode)
    big.train(train_mode)  # train mode: BN uses batch statistics, the zero-gamma channels must stay 0 anyway
    x = torch.rand(4, 3, 12, 10)
    with torch.no_grad():
        diff = (big(x) - small(x)).abs().max().item()
    assert diff < 1e-5


def test_widened_generator_learns_in_its_new_channels() -> None:
    """One SGD step changes the new channels' parameters (the zero-gamma trick keeps gradients alive)."""
    from srgan_deploy.train.widen import widen_generator

    big = widen_generator(make_generator(ModelConfig(channels=8, blocks=1), seed=5), ModelConfig(channels=16, blocks=2))
    big.train()
    x, y = torch.rand(4, 3, 12, 12), torch.rand(4, 3, 48, 48)
    torch.nn.functional.mse_loss(big(x), y).backward()
    assert big.body[0].bn2.weight.grad is not None
    assert big.body[0].bn2.weight.grad[8:].abs().sum() > 0  # new channels of an old block
    assert big.body[1].bn2.weight.grad.abs().sum() > 0  # the new block
    assert big.head.weight.grad is not None and big.head.weight.grad[8:].abs().sum() > 0


def test_widening_refuses_to_shrink_or_rescale() -> None:
    from srgan_deploy.train.widen import widen_generator

    small = make_generator(ModelConfig(channels=8, blocks=2))
    with pytest.raises(ConfigError, match="shrink"):
        widen_generator(small, ModelConfig(channels=4, blocks=2))
    with pytest.raises(ConfigError, match="scale"):
        widen_generator(small, ModelConfig(scale=2, channels=8, blocks=2))


def test_srresnet_run_warm_starts_from_smaller_weights(train_dir: Path, tmp_path: Path, tiny_weights: Path) -> None:
    """--init with a smaller model: the trainer grows it and starts from the same function."""
    from srgan_deploy.models import InferenceGenerator
    from srgan_deploy.weights import load_generator

    warnings: list[str] = []
    bigger = ModelConfig(channels=16, blocks=3)  # tiny_weights is 8 x 2
    trainer = Trainer(config(train_dir, tmp_path / "grow", model=bigger, init=str(tiny_weights)), warn=warnings.append)
    assert any("growing --init" in w for w in warnings)
    small, _ = load_generator(tiny_weights)
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        diff = (InferenceGenerator(trainer.generator.eval())(x) - InferenceGenerator(small)(x)).abs().max().item()
    assert diff < 1e-5
    with pytest.raises(TrainingError, match="larger --channels"):
        Trainer(config(train_dir, tmp_path / "shrink", model=ModelConfig(channels=4, blocks=1), init=str(tiny_weights)))
