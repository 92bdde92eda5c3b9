import pytest
import torch

from bcarena.agents.config import TrainConfigError, make_train_config
from bcarena.agents.train import TrainError, train_bc

# The session's shared pro dataset (conftest.py ``pro_ds``): built once for the training tests, read-only here.
# A small MLP: the check is that "auto" picks the CPU and trains bit for bit like it, whatever the model size.
BASE = {"epochs": 2, "hidden": [32], "loss": "logit_adjusted", "allow_missing_classes": True}


def test_auto_device_trains_like_the_cpu_without_a_gpu(pro_ds):
    cpu = train_bc(pro_ds, make_train_config(BASE), progress=False).agent.model.state_dict()
    auto = train_bc(pro_ds, make_train_config({**BASE, "device": "auto"}), progress=False).agent.model
    assert all(p.device.type == "cpu" for p in auto.parameters())  # agents always act on the CPU
    if not torch.cuda.is_available():
        assert all(torch.equal(cpu[k], v) for k, v in auto.state_dict().items())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(pro_ds):
    with pytest.raises(TrainError, match="device 'cuda' was asked for but torch sees no CUDA GPU"):
        train_bc(pro_ds, make_train_config({**BASE, "epochs": 1, "device": "cuda"}), progress=False)


def test_unknown_device_is_a_config_error():
    with pytest.raises(TrainConfigError, match="device"):
        make_train_config({"device": "tpu"})
