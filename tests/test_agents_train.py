"""BC training on small recorded pro datasets: rebalancing works, resume is exact, bad input is clear."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from bcarena.agents import load_agent
from bcarena.agents.config import TrainConfigError, load_train_config, make_train_config
from bcarena.agents.train import TrainError, train_bc
from bcarena.experiments.cli import app
from bcarena.recordings.dataset import ActionDataset

runner = CliRunner()


def cfg(**kw):
    return make_train_config({"epochs": 8, "allow_missing_classes": True, **kw})


def test_plain_clone_never_presses_and_rebalancing_fixes_it(pro_ds):
    """Fast twin of the slow full comparison (tests/test_agents_slow.py)."""
    plain = train_bc(pro_ds, cfg(), progress=False)
    assert plain.test.accuracy > 0.75 and plain.test.skill_frame_recall < 0.05
    for variant in ({"loss": "weighted_ce"}, {"loss": "focal", "class_weights": "inverse"}):
        fixed = train_bc(pro_ds, cfg(**variant), progress=False)
        assert fixed.test.skill_frame_recall > plain.test.skill_frame_recall + 0.2, variant
    assert plain.history[-1]["epoch"] == 8
    assert {"train_nll", "train_p_true", "val_skill_frame_recall"} <= set(plain.history[0])


def test_resume_after_interruption_gives_the_same_weights(pro_ds, tmp_path):
    config = cfg(
        epochs=4,
        sampler="oversample",
        lr_schedule="cosine",
        weight_decay=1e-4,
        event_weighting={"events": ["skill_used", "hit_taken"], "weight": 5},
    )
    full = train_bc(pro_ds, config, tmp_path / "full", progress=False)
    part = train_bc(pro_ds, config, tmp_path / "cut", progress=False, stop_after_epochs=2)
    assert not part.finished and not (tmp_path / "cut" / "agent").exists()
    with pytest.raises(TrainError, match="resume"):
        train_bc(pro_ds, config, tmp_path / "cut", progress=False)  # a rerun must not clobber the checkpoint
    with pytest.raises(TrainError, match=r"different config \(keys \['lr'\]\)"):
        train_bc(pro_ds, config.model_copy(update={"lr": 0.1}), tmp_path / "cut", resume=True, progress=False)
    resumed = train_bc(pro_ds, config, tmp_path / "cut", resume=True, progress=False)
    a = full.agent.model.state_dict()
    b = resumed.agent.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_objective"] for r in resumed.history] == [r["train_objective"] for r in full.history]
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"] == 4


def test_early_stopping_on_a_validation_metric_restores_the_best_epoch(pro_ds):
    result = train_bc(
        pro_ds, cfg(epochs=30, early_stop_metric="skill_frame_recall", patience=2, loss="weighted_ce"), progress=False
    )
    recalls = [r["val_skill_frame_recall"] for r in result.history]
    assert result.stopped_early and len(recalls) < 30
    assert result.best_epoch == 1 + int(np.nanargmax(recalls))
    assert result.val.skill_frame_recall == pytest.approx(max(recalls))


def test_threshold_selection_is_tuned_on_val_and_lives_in_the_export(pro_ds, tmp_path):
    result = train_bc(
        pro_ds, cfg(selection="thresholds", threshold_metric="balanced_accuracy"), tmp_path, progress=False
    )
    offsets = np.asarray(result.extra["class_offsets"])
    assert np.any(offsets != 0)
    assert result.val.balanced_accuracy == pytest.approx(result.extra["val_balanced_accuracy_after_thresholds"])
    agent = load_agent(tmp_path / "agent")
    x = np.array(pro_ds.split("test").states())
    np.testing.assert_array_equal(agent.export_module()(torch.as_tensor(x)).argmax(1).numpy(), agent.act(x))
    assert json.loads((tmp_path / "agent" / "agent.json").read_text())["class_offsets"] == pytest.approx(offsets)


def test_cnn_on_stacked_frames_trains_and_exports(pro_ds, tmp_path):
    result = train_bc(
        pro_ds, cfg(policy="cnn", frame_stack=2, epochs=1, batch_size=256, sampler="weighted"), tmp_path, progress=False
    )
    agent = load_agent(tmp_path / "agent")
    assert agent.obs_type == "pixels" and agent.input_shape == (2, 84, 84)
    frames = pro_ds.split("test").frames()[:40]
    agent.reset(1)
    stacked = np.concatenate([agent.stacked(f[None, :, :, None]) for f in frames])
    np.testing.assert_array_equal(stacked[1:, 0], frames[:-1])  # the previous frame, per row
    module = agent.export_module()
    np.testing.assert_array_equal(
        module(torch.as_tensor(stacked).float()).argmax(1).numpy(), agent.act_stacked(stacked)
    )
    mean = json.loads((tmp_path / "agent" / "agent.json").read_text())["normalization"]["mean"]
    assert len(mean) == 1 and 0 < mean[0] < 255  # one pixel statistic, fitted on training frames
    assert result.sampling.epoch_size == int((pro_ds.table["split"] == "train").sum())


def test_cli_train_flags_config_file_and_outputs(pro_ds, tmp_path):
    config = tmp_path / "focal.yaml"
    config.write_text("loss: focal\nfocal_gamma: 1.5\nallow_missing_classes: true\nepochs: 5\n")
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            str(pro_ds.path),
            "--out",
            str(out),
            "--config",
            str(config),
            "--epochs",
            "2",
            "--events",
            "skill_used,hit_landed",
            "--set",
            "event_weighting.weight=20",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "skill_frame_recall" in result.output and "sampled class mix" in result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["loss"] == "focal" and saved["epochs"] == 2 and saved["focal_gamma"] == 1.5
    assert saved["event_weighting"] == {
        "events": ["skill_used", "hit_landed"],
        "before": 5,
        "after": 2,
        "weight": 20.0,
        "decay": 0.8,
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sampling"]["event_weighted_frames"] > 0
    assert len(json.loads((out / "history.json").read_text())) == 2 and (out / "training_curves.png").stat().st_size
    assert load_agent(out / "agent").act(pro_ds.split("test").states()[:3]).shape == (3,)
    again = runner.invoke(app, ["train", "--dataset", str(pro_ds.path), "--out", str(out), "--quiet"])
    assert again.exit_code == 2 and "--resume" in again.output


# ------------------------------------------------------------------------------------------ bad input
def _broken_copy(ds: ActionDataset, path, table=None, manifest=None) -> str:
    ActionDataset(ds.table if table is None else table, ds.manifest, None).save(path)
    if manifest is not None:
        (path / "manifest.json").write_text(json.dumps({**ds.manifest, **manifest}))
    return str(path)


class _Out:
    def __init__(self, result):
        assert result.exit_code == 2, result.output
        self.output = " ".join(result.output.split())


def _train_cli(dataset, out, *flags):
    return _Out(
        runner.invoke(app, ["train", "--dataset", str(dataset), "--out", str(out), "--epochs", "1", "--quiet", *flags])
    )


def test_bad_datasets_give_clear_errors(pro_ds, tmp_path):
    path = _broken_copy(pro_ds, tmp_path / "v9", manifest={"schema_version": 9})
    assert "schema_version 9 is not supported" in _train_cli(path, tmp_path / "o1").output
    path = _broken_copy(pro_ds, tmp_path / "nocol")
    pd.read_parquet(f"{path}/frames.parquet").drop(columns=["frames_to_skill_used"]).to_parquet(
        f"{path}/frames.parquet"
    )
    assert "missing column(s) ['frames_to_skill_used']" in _train_cli(path, tmp_path / "o2").output
    table = pro_ds.table.assign(split=pro_ds.table["split"].replace("val", "train"))
    assert "split 'val' is empty" in _train_cli(_broken_copy(pro_ds, tmp_path / "noval", table), tmp_path / "o3").output
    table = pro_ds.table.copy()
    table.loc[(table["split"] == "train") & (table["action"] == 6), "action"] = 0
    out = _train_cli(_broken_copy(pro_ds, tmp_path / "noheavy", table), tmp_path / "o4").output
    assert "class(es) ['heavy'] appear in the val split but never in train" in out
    path = _broken_copy(pro_ds, tmp_path / "nan")
    frame = pd.read_parquet(f"{path}/frames.parquet")
    frame.loc[5, "s_own_hp"] = np.nan
    frame.to_parquet(f"{path}/frames.parquet")
    assert "['s_own_hp'] hold NaN" in _train_cli(path, tmp_path / "o5").output
    assert (
        "stores no pixels"
        in _train_cli(_broken_copy(pro_ds, tmp_path / "nopix"), tmp_path / "o6", "--policy", "cnn").output
    )


def test_bad_configs_name_the_problem(tmp_path):
    with pytest.raises(TrainConfigError, match="smote' interpolates state features.*pixel"):
        make_train_config({"sampler": "smote", "policy": "cnn"})
    with pytest.raises(TrainConfigError, match="unknown key 'learning_rate'"):
        make_train_config({"learning_rate": 0.1})
    with pytest.raises(TrainConfigError, match="unknown key 'event_weighting.window'"):
        make_train_config({"event_weighting": {"window": 3}})
    with pytest.raises(TrainConfigError, match="loss: weighted_ce"):
        make_train_config({"class_weights": "inverse"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: -1\n")
    with pytest.raises(TrainConfigError, match=r"bad.yaml: invalid training config: epochs: Input should be greater"):
        load_train_config(bad)
    bad.write_text("epochs: [1\n")
    with pytest.raises(TrainConfigError, match="not valid YAML"):
        load_train_config(bad)
    result = runner.invoke(app, ["train", "--dataset", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "los=ce"])
    assert result.exit_code == 2 and "unknown key 'los'" in result.output


def test_smote_adds_synthetic_state_rows_and_refuses_singleton_classes(pro_ds):
    smote = train_bc(
        pro_ds, cfg(epochs=1, sampler="smote", resample_strategy={"heavy": 600, "special": 600}), progress=False
    )
    n_heavy, n_special = (
        int(((pro_ds.table["split"] == "train") & (pro_ds.table["action"] == a)).sum()) for a in (6, 7)
    )
    assert smote.sampling.synthetic_rows == (600 - n_heavy) + (600 - n_special)
    table = pro_ds.table.copy()
    train = (table["split"] == "train").to_numpy()
    table.loc[train & (table["action"] == 5).to_numpy(), "action"] = 0
    table.loc[table.index[train][10], "action"] = 5  # one 'light' frame: nothing to interpolate with
    with pytest.raises(TrainConfigError, match=r"needs >= 2 training frames.*\['light'\] have 1"):
        train_bc(ActionDataset(table, pro_ds.manifest), cfg(epochs=1, sampler="smote"), progress=False)


# ------------------------------------------------------------------------------- faults (issue 15)
@pytest.mark.parametrize("lr", ["inf", "nan", "-inf", 0, -0.1])
def test_non_finite_or_non_positive_lr_is_refused_when_the_config_is_validated(lr):
    with pytest.raises(TrainConfigError, match=r"invalid training config: lr: Input should be"):
        make_train_config({"lr": lr})


def test_a_diverging_run_stops_with_an_error_and_saves_no_nan_weights(pro_ds, tmp_path):
    assert "lr: Input should be a finite number" in _train_cli(pro_ds.path, tmp_path / "inf", "--lr", "inf").output
    out = _train_cli(pro_ds.path, tmp_path / "huge", "--lr", "1e30").output
    assert re.fullmatch(r"error: training diverged at epoch 1, step \d+: loss is nan; lower lr \(now 1e\+30\)", out)
    assert not (tmp_path / "huge" / "agent").exists() and not (tmp_path / "huge" / "checkpoint.pt").exists()


def test_nan_weights_are_never_checkpointed_or_saved(pro_ds, tmp_path, monkeypatch):
    import bcarena.agents.train as train_module

    models, build, validate = [], train_module.build_model, train_module._validate
    monkeypatch.setattr(train_module, "build_model", lambda *args: models.append(build(*args)) or models[-1])

    def poison(*_):
        with torch.no_grad():
            next(models[-1].parameters()).fill_(float("nan"))

    # after epoch 1's checkpoint: epoch 2's first loss is NaN and the epoch-1 checkpoint stays as it was
    with pytest.raises(TrainError, match=r"training diverged at epoch 2, step 1: loss is nan"):
        train_bc(pro_ds, cfg(epochs=3), tmp_path / "a", progress=False, on_epoch=poison)
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())
    # after the last epoch, with nothing to restore: no agent
    with pytest.raises(TrainError, match=r"training diverged at epoch 1: weights \['policy\..*'\] hold NaN or inf"):
        train_bc(pro_ds, cfg(epochs=1, restore_best=False), tmp_path / "b", progress=False, on_epoch=poison)
    assert not (tmp_path / "b" / "agent").exists()
    # before a checkpoint: none is written
    monkeypatch.setattr(train_module, "_validate", lambda *args: poison() or validate(*args))
    with pytest.raises(TrainError, match=r"training diverged at epoch 1: weights"):
        train_bc(pro_ds, cfg(epochs=2), tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "checkpoint.pt").exists() and not (tmp_path / "c" / "agent").exists()


def test_a_build_without_val_episodes_warns_and_train_says_what_to_change(pro_ds, tmp_path):
    from bcarena.recordings.converter import build_dataset

    with pytest.warns(
        UserWarning,
        match=r"split\(s\) \['val', 'test'\] get no episodes .*refuses a dataset without "
        r"'val' episodes: use e\.g\. --split 0\.8,0\.1,0\.1",
    ):
        dataset = build_dataset(
            pro_ds.path.parent / "recordings", tmp_path / "all-train", split=(1, 0, 0), pixels=False, progress=False
        )
    out = _train_cli(dataset.path, tmp_path / "o").output
    assert "split 'val' is empty" in out and "rebuild the dataset" in out and "--split 0.8,0.1,0.1" in out


@pytest.mark.parametrize("damage", ["empty", "truncated", "wrong shape"])
def test_a_broken_pixels_file_spares_state_agents_and_is_named_for_pixel_ones(pro_ds, tmp_path, damage):
    path = tmp_path / "ds"
    shutil.copytree(pro_ds.path, path)
    pixels = path / "pixels.npy"
    if damage == "wrong shape":
        np.save(pixels, np.zeros((len(pro_ds), 4, 4), dtype=np.uint8))
    else:
        pixels.write_bytes(b"" if damage == "empty" else pixels.read_bytes()[:100_000])
    trained = runner.invoke(
        app, ["train", "--dataset", str(path), "--out", str(tmp_path / "mlp"), "--epochs", "1", "--quiet"]
    )
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(
        app,
        [
            "eval",
            "offline",
            "--agent",
            str(tmp_path / "mlp" / "agent"),
            "--dataset",
            str(path),
            "--out",
            str(tmp_path / "eval"),
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    out = _train_cli(path, tmp_path / "cnn", "--policy", "cnn").output
    assert f"{pixels}: " in out and f"expected a ({len(pro_ds)}, 84, 84) uint8 array" in out


def test_a_checkpoint_with_the_right_tag_but_missing_keys_is_refused(tmp_path):
    from bcarena.agents import train as train_module

    cfg, path = make_train_config({"epochs": 1}), tmp_path / train_module.CHECKPOINT_FILE
    train_module._save_checkpoint(path, {"format": train_module.CHECKPOINT_FORMAT, "epoch": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # written via a temporary, none left
    with pytest.raises(TrainError, match=r"checkpoint.pt: incomplete checkpoint, missing key\(s\) \['model', "):
        train_module._load_checkpoint(path, cfg, "fingerprint")
    state = {key: 0 for key in train_module.CHECKPOINT_KEYS}
    train_module._save_checkpoint(path, {**state, "format": train_module.CHECKPOINT_FORMAT, "config_json": "[1, 2"})
    with pytest.raises(TrainError, match="config_json is not a JSON object"):
        train_module._load_checkpoint(path, cfg, "fingerprint")
