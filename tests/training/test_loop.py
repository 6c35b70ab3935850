
import numpy as np
import pytest
import torch

from data import AugmentConfig, make_split
from data.pipeline import TrainData
from model import CNNConfig, build_model, model_from_checkpoint
from model.config import BackboneConfig, PatchConfig
from model.pretrained import WeightFinder, WeightsError, load_pretrained
from training.config import RunConfig, TrainConfig
from training.features import FeatureCache
from training.loop import NonFiniteLossError, StopTraining, train
from training.scoring import predict_set

TINY = CNNConfig(input_size=32, widths=(16, 32, 64), kernel_sizes=(3, 3, 3), convs_per_block=1,
                 dense_width=32)


@pytest.fixture(scope="module")
def data32(synthetic_set):
    split = make_split(synthetic_set.ids, synthetic_set.codes, k=4, seed=0)
    return TrainData.from_split(synthetic_set, split, 32)


def run(data, epochs=3, callback=None, **train_kwargs):
    cfg = RunConfig(TINY, TrainConfig(epochs=epochs, batch_size=16, early_stop_patience=0,
                                      **train_kwargs), AugmentConfig.from_strength(0.3, 0.3))
    return train(cfg, data, callback=callback)


def test_a_tiny_run_learns(data32):
    result = run(data32, epochs=8, lr=3e-3)
    positive_rate = data32.targets[data32.val_rows].max(axis=1).mean()
    assert result.metrics["defect_ap"] > positive_rate
    assert result.val_probs.shape == (len(data32.val_rows), 4)
    assert np.isfinite(result.val_probs).all()


def test_best_epoch_weights_and_reports(data32):
    reports = []
    result = run(data32, epochs=4, callback=reports.append)
    assert [r.epoch for r in reports] == [1, 2, 3, 4]
    assert result.best_epoch == max(reports, key=lambda r: r.score).epoch
    assert result.score == pytest.approx(max(r.score for r in reports))
    assert len(result.history) == 4 and "val_graded_ap" in result.history[0]
    # the returned weights are those of the best epoch: they reproduce its validation probs
    net = build_model(TINY)
    net.load_state_dict(result.state_dict)
    assert set(result.thresholds) == {"print_error", "physical_error", "no_defect", "defect"}


def test_same_seed_same_run(data32):
    a, b = run(data32, epochs=2), run(data32, epochs=2)
    assert a.history[-1]["train_loss"] == pytest.approx(b.history[-1]["train_loss"], rel=1e-5)
    for k in a.state_dict:
        torch.testing.assert_close(a.state_dict[k], b.state_dict[k])


def test_early_stopping(data32):
    cfg = RunConfig(TINY, TrainConfig(epochs=30, batch_size=16, early_stop_patience=2, lr=1e-6),
                    AugmentConfig.none())
    result = train(cfg, data32)
    assert result.epochs_run < 30 and "early stop" in result.stop_reason


def test_non_finite_loss_stops_with_a_reason(data32):
    with pytest.raises(NonFiniteLossError, match="lower the learning rate"):
        run(data32, epochs=2, lr=1e12, grad_clip=0.0, optimizer="sgd")


def test_checkpoint_of_a_result_reproduces_its_validation_probs(data32, synthetic_set):
    import model as model_lib
    from training.scoring import predict_set

    result = run(data32, epochs=2)
    net = model_lib.model_from_checkpoint(result.checkpoint(source_size=64))
    probs = predict_set(net, synthetic_set, result.val_ids)
    np.testing.assert_allclose(probs, result.val_probs, atol=1e-5)


def test_a_callback_can_end_the_run_keeping_its_best_epoch(data32):
    def stop_after_two(report):
        if report.epoch == 2:
            raise StopTraining("the budget ran out")

    result = run(data32, epochs=5, callback=stop_after_two)
    assert result.epochs_run == 2 and result.stop_reason == "the budget ran out"
    assert result.best_epoch in (1, 2) and result.val_probs.shape[0] == len(data32.val_rows)


def _backbone_run(scale, epochs=2, flips=False):
    return RunConfig(BackboneConfig(backbone="mobilenetv3_large_100", channels=("GRAY", "NORMAL"),
                                    input_size=64, dense_width=16),
                     TrainConfig(epochs=epochs, batch_size=16, early_stop_patience=0, lr=3e-3,
                                 backbone_lr_scale=scale),
                     AugmentConfig.from_strength(0.0, 0.0, flips=flips))


def _pretrained(weights):
    cfg = _backbone_run(0.0).model
    net = build_model(cfg)
    load_pretrained(net, cfg, weights / f"{cfg.backbone}.pth")
    return net.state_dict()


@pytest.fixture(scope="module")
def data64(synthetic_set):
    split = make_split(synthetic_set.ids, synthetic_set.codes, k=4, seed=0)
    return TrainData.from_split(synthetic_set, split, 64)


def test_a_frozen_backbone_trains_its_head_alone_on_features_computed_once(
        data64, backbone_weights):
    finder, cache = WeightFinder(backbone_weights), FeatureCache()
    start = _pretrained(backbone_weights)
    a = train(_backbone_run(0.0, flips=True), data64, weights=finder, features=cache)
    for k, v in a.state_dict.items():
        same = torch.equal(v, start[k])
        assert same if k.startswith("backbone.") else True, k
    assert not torch.equal(a.state_dict["head.layers.out.weight"],
                           start["head.layers.out.weight"])
    assert np.isfinite(a.val_probs).all() and a.metrics
    b = train(_backbone_run(0.0, epochs=3, flips=True), data64, weights=finder,
              features=cache)
    assert cache.hits == 1 and b.epochs_run == 3
    # the best epoch's weights reproduce its validation probabilities through the full net
    net = build_model(b.config.model).eval()
    net.load_state_dict(b.state_dict)
    assert set(b.thresholds) == {"print_error", "physical_error", "no_defect", "defect"}


def test_fine_tuning_moves_the_backbone_gently(data64, backbone_weights):
    start = _pretrained(backbone_weights)
    result = train(_backbone_run(0.1), data64, weights=WeightFinder(backbone_weights))
    moved = [k for k, v in result.state_dict.items()
             if k.startswith("backbone.") and v.is_floating_point()
             and not torch.equal(v, start[k])]
    assert len(moved) > 10


def test_a_backbone_without_weights_is_never_trained_from_random(data64):
    with pytest.raises(WeightsError, match="no ImageNet weights for mobilenetv3_large_100"):
        train(_backbone_run(0.0), data64)


def _patch_run(memory=16, epochs=2):
    return RunConfig(PatchConfig(backbone="mobilenetv3_large_100", channels=("GRAY", "NORMAL"),
                                 input_size=64, memory=memory, head_width=8),
                     TrainConfig(epochs=epochs, batch_size=16, early_stop_patience=0, lr=3e-3),
                     AugmentConfig.from_strength(0.0, 0.0, flips=True))


def test_a_patch_model_trains_its_head_on_features_and_a_bank_computed_once(
        data64, backbone_weights, synthetic_set):
    finder, cache = WeightFinder(backbone_weights), FeatureCache()
    cfg = _patch_run().model
    start = build_model(cfg)
    load_pretrained(start, cfg, backbone_weights / f"{cfg.backbone}.pth")
    a = train(_patch_run(), data64, weights=finder, features=cache)
    backbone = {k: v for k, v in a.state_dict.items() if k.startswith("backbone.")}
    assert backbone and all(torch.equal(v, start.state_dict()[k]) for k, v in backbone.items())
    bank = a.state_dict["bank"]
    assert bank.shape == (16, start.backbone.num_features) and bank.abs().sum() > 0
    assert np.isfinite(a.val_probs).all() and a.metrics
    b = train(_patch_run(epochs=3), data64, weights=finder, features=cache)
    assert cache.hits == 1 and b.epochs_run == 3 and torch.equal(b.state_dict["bank"], bank)
    # the checkpoint reproduces the validation probabilities through the full network
    net = model_from_checkpoint(b.checkpoint(source_size=64))
    probs = predict_set(net, synthetic_set, b.val_ids)
    np.testing.assert_allclose(probs, b.val_probs, atol=1e-4)
