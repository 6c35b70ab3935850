"""The path users run: CUDA, bf16 autocast, uint8 data resident on the GPU.

Skipped on machines without a GPU (CI); run on a GPU machine with
``python -m pytest tests/training/test_cuda.py``.
"""

import numpy as np
import pytest
import torch

from data import AugmentConfig, DeviceBatches, make_split
from data.pipeline import TrainData
from model import CNNConfig
from training.config import RunConfig, TrainConfig
from training.loop import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CFG = CNNConfig(input_size=32, widths=(16, 32, 64), kernel_sizes=(3, 3, 3), dense_width=32)


@pytest.fixture(scope="module")
def split(synthetic_set):
    return make_split(synthetic_set.ids, synthetic_set.codes, k=4, seed=0)


def test_data_stays_on_the_gpu_as_uint8(synthetic_set, split):
    data = TrainData.from_split(synthetic_set, split, 32, device="cuda")
    assert data.images.device.type == "cuda" and data.images.dtype == torch.uint8
    batches = DeviceBatches(data.images, data.targets, "cuda", batch_size=8,
                            rows=data.train_rows)
    _, xb, yb = next(batches.epoch())
    assert xb.device.type == "cuda" and yb.device.type == "cuda"
    assert batches.images.data_ptr() == data.images.data_ptr()  # no copy per trial


def test_bf16_training_on_cuda_matches_the_exported_model(synthetic_set, split):
    import model as model_lib
    from training.scoring import predict_set

    data = TrainData.from_split(synthetic_set, split, 32, device="cuda")
    cfg = RunConfig(CFG, TrainConfig(epochs=3, batch_size=16, early_stop_patience=0),
                    AugmentConfig.from_strength(0.5, 0.5))
    result = train(cfg, data, device="cuda")
    assert np.isfinite(result.val_probs).all() and result.best_epoch >= 1
    net = model_lib.model_from_checkpoint(result.checkpoint(source_size=64))
    cpu_probs = predict_set(net, synthetic_set, result.val_ids)  # float32 on the CPU
    # bf16 autocast in training vs float32 here: close, not equal
    np.testing.assert_allclose(cpu_probs, result.val_probs, atol=0.03)


def test_real_cuda_out_of_memory_fails_one_trial_only(synthetic_set, split, tmp_path,
                                                     monkeypatch):
    import search.objective as objective_module
    from search.objective import Objective, TrialFailed
    from search.space import SearchSpace
    from search.study import (
        create_or_resume,
        make_pruner,
        make_sampler,
        open_storage,
        run_trials,
    )

    real_train = objective_module.train
    calls = []

    def greedy_train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            torch.empty(1 << 45, dtype=torch.uint8, device="cuda")  # 32 TiB: a real OOM
        return real_train(*args, **kwargs)

    monkeypatch.setattr(objective_module, "train", greedy_train)
    space = SearchSpace(sizes=(32,), depth=(2, 3), base_widths=(8,), batch_sizes=(16,),
                        epochs=1, patience=0)
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study, _ = create_or_resume("cuda", storage, sampler=make_sampler("random", 0),
                                pruner=make_pruner("none", 1),
                                attrs={"data_hash": "d", "split_hash": split.hash})
    objective = Objective(synthetic_set, split, space, device="cuda")
    run_trials(study, objective, n_trials=1, catch=(TrialFailed,))
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "COMPLETE"]
    assert "out of memory" in study.trials[0].user_attrs["fail_reason"]
