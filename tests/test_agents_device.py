import pytest
import torch

from bcarena.agents.config import TrainConfigError, make_train_config
from bcarena.agents.train import TrainError, train_bc
from bcarena.recordings import make_duel_dataset


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_duel_dataset(
        tmp_path_factory.mktemp("d") / "d", episodes=12, seed=0, split=(0.5, 0.25, 0.25), pixels=False
    )


def test_auto_device_trains_like_the_cpu_without_a_gpu(small):
    base = {"epochs": 2, "loss": "logit_adjusted", "allow_missing_classes": True}
    cpu = train_bc(small, make_train_config(base), progress=False).agent.model.state_dict()
    auto = train_bc(small, make_train_config({**base, "device": "auto"}), progress=False).agent.model
    assert all(p.device.type == "cpu" for p in auto.parameters())  # agents always act on the CPU
    if not torch.cuda.is_available():
        assert all(torch.equal(cpu[k], v) for k, v in auto.state_dict().items())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(small):
    with pytest.raises(TrainError, match="device 'cuda' was asked for but torch sees no CUDA GPU"):
        train_bc(
            small, make_train_config({"epochs": 1, "device": "cuda", "allow_missing_classes": True}), progress=False
        )


def test_unknown_device_is_a_config_error():
    with pytest.raises(TrainConfigError, match="device"):
        make_train_config({"device": "tpu"})
