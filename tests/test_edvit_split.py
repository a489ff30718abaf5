"""ED-ViT: data, partition, pruning, the plan schema, and a small split end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import edgevit
from edgevit.edvit import Device, PlacementError, PlanError, load_plan, parse_devices
from edgevit.edvit.cost import parse_budget
from edgevit.edvit.data import load_dataset
from edgevit.edvit.partition import confusion_affinity, partition_classes
from edgevit.edvit.prune import (
    KeepPlan, backbone_parameters, keep_fraction, measure_importance, prune, prune_to_budget,
)
from edgevit.edvit.checkpoint import save_checkpoint
from edgevit.edvit.train import accuracy, predict
from edgevit.errors import InputError, UnsupportedModelError

from .conftest import assert_clean_failure, run_cli, tiny_vit


def samples(n: int = 12, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 16, 16)).astype(np.float32), (np.arange(n) % classes).astype(np.int64)


# --- models --------------------------------------------------------------------------------

def test_plain_deit_matches_the_published_parameter_counts():
    assert sum(p.numel() for p in edgevit.create_model("deit_tiny").parameters()) == 5_717_416
    assert sum(p.numel() for p in edgevit.create_model("deit_small").parameters()) == 22_050_664


def test_deit_size_patch_and_classes_are_configurable():
    vit = edgevit.create_model("deit_tiny", num_classes=7, img_size=32, patch_size=8)
    assert vit.input_size == (3, 32, 32)
    assert vit(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(InputError, match="cannot be built"):
        edgevit.create_model("deit_tiny", img_size=30, patch_size=8)
    with pytest.raises(InputError, match="cannot be built"):
        edgevit.create_model("deit_tiny", no_such_setting=1)


# --- pruning -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["deit_tiny", "slab_deit_tiny"])
def test_keeping_every_unit_reproduces_the_model_exactly(name):
    vit = tiny_vit(name)
    x, y = samples()
    same = prune(vit, keep_fraction(measure_importance(vit, x, y), 1.0))
    with torch.no_grad():
        assert torch.equal(same(torch.from_numpy(x)), vit(torch.from_numpy(x)))


@pytest.mark.parametrize("name", ["deit_tiny", "slab_deit_tiny"])
def test_pruning_heads_and_mlp_units_equals_zeroing_them(name):
    """Slicing out a head or an MLP unit is exactly the model with that unit's output zeroed."""
    vit = tiny_vit(name)
    x, _ = samples()
    keep = KeepPlan(embed=np.arange(48), heads=[np.array([1]), np.array([0, 1])],
                    mlp=[np.arange(0, 192, 2), np.arange(100)])
    pruned = prune(vit, keep)
    reference = vit
    with torch.no_grad():  # zero what was dropped in the original weights
        reference = __import__("copy").deepcopy(vit)
        attn = reference.blocks[0].attn
        attn.proj.weight[:, :attn.head_dim] = 0  # head 0 of block 0
        reference.blocks[0].mlp.fc2.weight[:, 1::2] = 0
        reference.blocks[1].mlp.fc2.weight[:, 100:] = 0
        got, want = pruned(torch.from_numpy(x)), reference(torch.from_numpy(x))
    assert pruned.blocks[0].attn.num_heads == 1 and pruned.blocks[0].mlp.fc1.out_features == 96
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_importance_ranks_a_dead_unit_last():
    vit = tiny_vit()
    with torch.no_grad():
        vit.blocks[0].mlp.fc2.weight[:, 5] = 0  # unit 5 of block 0 cannot affect the loss
    x, y = samples()
    importance = measure_importance(vit, x, y)
    assert importance.mlp[0][5] == 0.0 and importance.mlp[0].max() > 0
    assert 5 not in keep_fraction(importance, 0.5).mlp[0]


def test_budget_is_respected_and_the_largest_fraction_is_chosen():
    vit = tiny_vit()
    x, y = samples()
    importance = measure_importance(vit, x, y)
    budget = backbone_parameters(vit) // 5
    pruned, fraction = prune_to_budget(vit, importance, budget)
    assert backbone_parameters(pruned) <= budget
    bigger = prune(vit, keep_fraction(importance, fraction + 0.05))
    assert backbone_parameters(bigger) > budget
    with pytest.raises(InputError, match="below the smallest sub-model"):
        prune_to_budget(vit, importance, 10)


def test_unsupported_models_are_named():
    with pytest.raises(UnsupportedModelError, match="edgenext_xx_small is not one"):
        measure_importance(edgevit.create_model("edgenext_xx_small"), *samples())


def test_budget_forms():
    assert parse_budget(None, 1000, 4) == (250, "1/4 of the full model")
    assert parse_budget(0.05, 1000, 4)[0] == 50
    assert parse_budget("250000", 10**6, 4)[0] == 250000
    assert parse_budget("1MB", 10**7, 4)[0] == 250000
    for bad in ("lots", -1, 0):
        with pytest.raises(InputError):
            parse_budget(bad, 1000, 4)


# --- partition -----------------------------------------------------------------------------

def test_balanced_partition_covers_every_class_once():
    groups = partition_classes(10, 3)
    assert [len(g) for g in groups] == [4, 3, 3]
    assert sorted(c for g in groups for c in g) == list(range(10))
    with pytest.raises(InputError, match="between 1 and the number of classes"):
        partition_classes(10, 11)


def test_confusion_partition_puts_confusable_classes_together():
    labels = np.repeat(np.arange(4), 5)
    logits = np.full((20, 4), -5.0)
    logits[np.arange(20), labels] = 5.0
    for a, b in ((0, 3), (1, 2)):  # 0 and 3 look alike, 1 and 2 look alike
        logits[labels == a, b] = 4.5
        logits[labels == b, a] = 4.5
    groups = partition_classes(4, 2, "confusion", confusion_affinity(logits, labels, 4))
    assert sorted(groups) == [[0, 3], [1, 2]]


# --- data and devices ----------------------------------------------------------------------

def test_digits_are_upsampled_normalized_and_stratified():
    data = load_dataset("digits", 16)
    assert data.x_train.shape[1:] == (3, 16, 16) and data.num_classes == 10
    assert len(data.y_train) + len(data.y_test) == 1797
    assert abs(float(data.x_train.mean())) < 1e-3
    assert set(np.unique(data.y_test)) == set(range(10))


def test_npz_and_folder_data(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    npz = tmp_path / "d.npz"
    np.savez(npz, x=rng.integers(0, 255, (20, 12, 12, 3), dtype=np.uint8), y=np.arange(20) % 2)
    data = load_dataset(npz, 16)
    assert data.x_train.shape[1:] == (3, 16, 16) and data.classes == ["0", "1"]
    for name in ("cat", "dog"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(tmp_path / "imgs" / name / f"{i}.png")
    folder = load_dataset(tmp_path / "imgs", 16)
    assert folder.classes == ["cat", "dog"] and len(folder.y_train) + len(folder.y_test) == 6
    np.savez(tmp_path / "nan.npz", x=np.full((4, 8, 8), np.nan, dtype=np.float32), y=np.array([0, 1, 0, 1]))
    with pytest.raises(InputError, match="NaN"):
        load_dataset(tmp_path / "nan.npz", 8)
    np.savez(tmp_path / "wrong.npz", images=np.zeros((4, 8, 8)))
    with pytest.raises(InputError, match="needs arrays"):
        load_dataset(tmp_path / "wrong.npz", 8)
    with pytest.raises(InputError, match="neither"):
        load_dataset(tmp_path / "missing.npz", 8)


def test_devices_parse_and_refuse_bad_entries():
    devices = parse_devices({"devices": [{"name": "pi", "memory_mb": 2, "target": "tflite"}, {"name": "nano", "memory_mb": 4, "speed": 3}]})
    assert devices[0] == Device("pi", 2.0, 1.0, "tflite") and devices[1].speed == 3.0
    for bad, message in (({"devices": []}, "non-empty"), ([{"name": "a"}], "memory_mb"),
                         ([{"name": "a", "memory_mb": 1, "ram": 2}], "unknown keys"),
                         ([{"name": "a", "memory_mb": 1, "target": "coreml"}], "target must be"),
                         ([{"name": "a", "memory_mb": 1}, {"name": "a", "memory_mb": 1}], "unique")):
        with pytest.raises(InputError, match=message):
            parse_devices(bad)


# --- end to end ----------------------------------------------------------------------------

def test_split_writes_a_verified_plan(plan, trained):
    vit, data = trained
    full = accuracy(predict(vit, data.x_test), data.y_test)
    report = json.loads((plan.directory / "report.json").read_text())
    assert full > 0.5, full  # the fixture model learned something
    assert len(plan.submodels) == 3
    assert sorted(c for s in plan.submodels for c in s.classes) == list(range(10))
    assert set(plan.assignment.values()) <= {"jetson", "pi"}
    for entry in plan.submodels:
        assert entry.params <= plan.budget["max_params"]
        assert plan.artifact_path(entry.name).is_file()
        rt = edgevit.load(plan.artifact_path(entry.name))
        assert rt.outputs[0].shape[-1] == entry.feature_dim
        if plan.assignment[entry.name] == "pi":
            assert "tflite" in entry.artifacts  # the pi runs TFLite
    # the exported artifacts give the same fused accuracy as the PyTorch split
    assert report["accuracy"]["fused_deployed"] == pytest.approx(report["accuracy"]["fused"], abs=1 / 450 + 1e-9)
    assert report["accuracy"]["fused"] > 0.5
    assert report["total"]["min_params_reduction"] >= 2.5
    assert all(row["latency_ms"] > 0 for row in report["submodels"])
    assert (plan.directory / "report.md").read_text().startswith("# ED-ViT split: deit_tiny into 3 sub-models")
    assert not [p for p in plan.directory.parent.iterdir() if p.name.startswith(".edgevit-tmp")]


def test_plan_predicts_its_latency_from_measured_sub_models(plan):
    """Every artifact's latency is in plan.json; the report's prediction is the slowest device's
    sub-models at its speed plus the fusion head; a link adds the input's and features' bytes."""
    from edgevit.edvit.latency import predict_latency

    report = json.loads((plan.directory / "report.json").read_text())
    assert all(s.latency_ms > 0 for s in plan.submodels)
    assert plan.model["latency_ms"] > 0 and plan.fusion["latency_ms"] > 0
    assert plan.placement["work_unit"] == "ms"
    speed = {d.name: d.speed for d in plan.devices}
    per_device = {}
    for s in plan.submodels:
        device = plan.assignment[s.name]
        per_device[device] = per_device.get(device, 0.0) + s.latency_ms / speed[device]
    predicted = report["predicted_latency"]
    assert predicted["split"]["total_ms"] == pytest.approx(max(per_device.values()) + plan.fusion["latency_ms"],
                                                           abs=2e-3)
    full_mb = plan.model["artifacts"]["onnx"]["size_bytes"] / 1e6
    for device in plan.devices:  # the unsplit model alone, where it fits
        expected = plan.model["latency_ms"] / device.speed if full_mb <= device.memory_mb else None
        assert predicted["unsplit_on"][device.name] == (None if expected is None else pytest.approx(expected, abs=2e-3))
    assert "Predicted per-request latency" in (plan.directory / "report.md").read_text()

    linked = [Device(d.name, d.memory_mb, d.speed, d.target, link_mbps=8.0, link_delay_ms=1.0) for d in plan.devices]
    with_links = predict_latency(plan, linked)
    for device, parts in with_links.devices.items():
        assert parts["send"] == pytest.approx(plan.input_bytes() / 1e3 + 1.0)  # 8 Mbit/s = 1 byte per us
        assert plan.input_bytes() == np.prod(plan.input["shape"]) == plan.input_bytes(pixels=False) / 4
        features = sum(s.feature_dim * 4 for s in plan.submodels if plan.assignment[s.name] == device)
        assert parts["receive"] == pytest.approx(features / 1e3 + 1.0)
    alone = predict_latency(plan, linked, assignment={"full": "jetson"})
    assert alone.total_ms == pytest.approx(plan.input_bytes() / 1e3 + 2.0 + plan.model["latency_ms"] / 2.0
                                           + len(plan.classes) * 4 / 1e3)
    measured = predict_latency(plan, linked, round_trip_ms=7.0)  # a measured round trip replaces the links
    assert measured.total_ms == pytest.approx(7.0 + max(per_device.values()) + plan.fusion["latency_ms"], abs=2e-3)
    assert predict_latency(plan, linked, {"full": "jetson"}, round_trip_ms=3.0).total_ms == pytest.approx(
        3.0 + plan.model["latency_ms"] / 2.0)


def test_plan_artifacts_chain_into_class_logits(plan, trained):
    """Sub-model features, concatenated in plan order, are what the fusion artifact takes."""
    _, data = trained
    subs = [edgevit.load(plan.artifact_path(s.name)) for s in plan.submodels]
    fusion = edgevit.load(plan.artifact_path("fusion"))
    x = data.x_test[:1]
    features = np.concatenate([rt.run(x) for rt in subs], axis=1)
    assert features.shape == (1, plan.fusion["input_dim"])
    logits = fusion.run(features)
    assert logits.shape == (1, 10) and np.isfinite(logits).all()


def _edited(plan, tmp_path, edit) -> Path:
    copy = tmp_path / "plan"
    shutil.copytree(plan.directory, copy)
    document = json.loads((copy / "plan.json").read_text())
    edit(document, copy)
    (copy / "plan.json").write_text(json.dumps(document))
    return copy


@pytest.mark.parametrize("edit, message", [
    (lambda d, p: d.update(version=99), "written by a newer edgevit"),
    (lambda d, p: d.update(schema="other"), "schema must be"),
    (lambda d, p: d.pop("classes"), "classes is missing"),
    (lambda d, p: d["submodels"][0].update(classes=[0, 99]), "submodels[0].classes must be"),
    (lambda d, p: d["submodels"][1].update(classes=d["submodels"][0]["classes"]), "partition"),
    (lambda d, p: d["submodels"][0].update(feature_dim="wide"), "submodels[0].feature_dim must be"),
    (lambda d, p: d["assignment"].update(sub0="nowhere"), "device 'nowhere'"),
    (lambda d, p: d["fusion"].update(input_dim=1), "fusion.input_dim is 1"),
    (lambda d, p: d["input"].update(shape=[1, 3]), "input.shape must be four"),
    (lambda d, p: d["submodels"][0]["artifacts"]["onnx"].update(path="../x.onnx"), "must be relative"),
    (lambda d, p: (p / "sub1.onnx").write_bytes((p / "sub1.onnx").read_bytes()[:-10]), "checksum does not match"),
    (lambda d, p: (p / "fusion.onnx").unlink(), "not in"),
    (lambda d, p: next(s for s in d["submodels"] if "tflite" in s["artifacts"])["artifacts"].pop("tflite"),
     "which runs tflite, but the plan has no tflite artifact"),
])
def test_hand_edited_or_corrupt_plans_are_refused_by_name(plan, tmp_path, edit, message):
    edited = _edited(plan, tmp_path, edit)
    with pytest.raises(PlanError) as info:
        load_plan(edited)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_or_missing_plan_json(plan, tmp_path):
    copy = tmp_path / "plan"
    shutil.copytree(plan.directory, copy)
    text = (copy / "plan.json").read_text()
    (copy / "plan.json").write_text(text[: len(text) // 2])
    with pytest.raises(PlanError, match="not valid JSON"):
        load_plan(copy)
    with pytest.raises(PlanError, match="plan.json not found"):
        load_plan(tmp_path)


def test_slab_deit_splits_and_its_sub_models_deploy_repbn(tmp_path):
    """SLAB-DeiT (linear attention, PRepBN) prunes, fine-tunes its RepBN branch and exports."""
    from edgevit.models.slab_layers import PRepBN

    data = load_dataset("digits", 16)
    vit = tiny_vit("slab_deit_tiny")
    plan = edgevit.split(vit, data, 2, budget=0.5, output=tmp_path / "plan", finetune_epochs=1, fusion_epochs=2,
                         joint_epochs=1)
    assert len(plan.submodels) == 2 and all(s.params <= plan.budget["max_params"] for s in plan.submodels)
    assert all(m.iter.item() > 0 for m in vit.modules() if isinstance(m, PRepBN))  # the input model is untouched
    assert edgevit.load(plan.artifact_path("sub1")).run(data.x_test[:1]).shape == (1, plan.submodels[1].feature_dim)


def test_joint_fine_tuning_trains_every_sub_model_and_the_fusion_head_together():
    """After it, every sub-model's weights and the fusion head have moved, and the fused model
    fits the teacher better than the separately trained parts did."""
    import copy

    from edgevit.edvit.compose import FusedModel, FusionHead, as_feature_extractor, finetune_fused

    x, y = samples(64, seed=3)
    teacher = tiny_vit("deit_tiny")
    with torch.no_grad():
        teacher_logits = teacher(torch.from_numpy(x)).numpy()
    torch.manual_seed(1)
    fused = FusedModel([as_feature_extractor(tiny_vit("deit_tiny")) for _ in range(2)], FusionHead(2 * 48, 10))
    before = copy.deepcopy(fused)

    def distance(model):  # cross-entropy from the teacher's softened probabilities (T = 2)
        with torch.no_grad():
            student = torch.log_softmax(model(torch.from_numpy(x)) / 2, dim=1)
            return float(-(torch.softmax(torch.from_numpy(teacher_logits) / 2, dim=1) * student).sum(1).mean())

    finetune_fused(fused, x, y, epochs=15, teacher_logits=teacher_logits, lr=3e-3, seed=0)
    for new, old in zip(fused.submodels, before.submodels):
        assert not torch.equal(new.blocks[0].mlp.fc1.weight, old.blocks[0].mlp.fc1.weight)
    assert not torch.equal(fused.fusion.fc.weight, before.fusion.fc.weight)
    assert not fused.training and not any(m.training for m in fused.modules())
    assert distance(fused) < distance(before)


def test_split_refuses_impossible_placement_before_training(trained, tmp_path):
    vit, data = trained
    with pytest.raises(PlacementError, match="tiny"):
        edgevit.split(vit, data, 2, devices=[Device("tiny", 0.001)], output=tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_split_refuses_a_non_empty_output(trained, tmp_path):
    vit, data = trained
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "keep.txt").write_text("mine")
    with pytest.raises(edgevit.OutputPathError, match="not empty"):
        edgevit.split(vit, data, 2, output=tmp_path / "p")
    assert (tmp_path / "p" / "keep.txt").read_text() == "mine"


# --- CLI -----------------------------------------------------------------------------------

def test_cli_train_then_split(tmp_path):
    weights = tmp_path / "vit.pt"
    trained = run_cli("--json", "train", "--model", "deit_tiny", "--data", "digits", "--image-size", "16",
                      "--patch-size", "8", "--epochs", "1", "--output", str(weights), cwd=tmp_path)
    assert trained.code == 0, trained.stderr
    assert "epoch 1/1" in trained.stderr  # progress lines on a non-terminal stderr
    assert json.loads(trained.stdout)["output"] == str(weights)
    (tmp_path / "devices.yaml").write_text("devices:\n  - name: pi\n    memory_mb: 20\n  - name: nano\n    memory_mb: 20\n    speed: 2\n")
    result = run_cli("--json", "split", "--model", "deit_tiny", "--weights", str(weights), "--data", "digits",
                     "--num-submodels", "2", "--devices", "devices.yaml", "--output", "plan",
                     "--finetune-epochs", "1", "--fusion-epochs", "2", "--joint-epochs", "1", "--budget", "0.1",
                     cwd=tmp_path)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)["report"]
    assert report["num_submodels"] == 2 and report["total"]["min_params_reduction"] >= 10
    assert report["accuracy"]["joint_epochs"] == 1 and 0 <= report["accuracy"]["fused_before_joint"] <= 1
    assert set(report["placement"]["assignment"].values()) == {"pi", "nano"}
    assert load_plan(tmp_path / "plan").model["name"] == "deit_tiny"


def test_cli_split_bad_inputs_fail_in_one_line(tmp_path, trained):
    vit, data = trained
    weights = tmp_path / "w.pt"
    save_checkpoint(vit, weights, data)
    (tmp_path / "small.yaml").write_text("devices:\n  - name: watch\n    memory_mb: 0.0001\n")
    common = ("split", "--weights", str(weights), "--data", "digits", "--num-submodels", "2")
    assert_clean_failure(run_cli(*common, "--model", "deit_tiny", "--devices", "small.yaml", cwd=tmp_path),
                         contains="watch")
    assert_clean_failure(run_cli(*common, "--model", "deit_small", cwd=tmp_path), contains="holds a deit_tiny")
    assert_clean_failure(run_cli(*common, "--model", "deit_tiny", "--devices", "none.yaml", cwd=tmp_path),
                         contains="cannot read devices file")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert_clean_failure(run_cli("split", "--model", "deit_tiny", "--weights", "junk.pt", "--data", "digits",
                                 "--num-submodels", "2", cwd=tmp_path), contains="cannot read weights file")
    assert_clean_failure(run_cli(*common[:-1], "11", "--model", "deit_tiny", cwd=tmp_path),
                         contains="between 1 and the number of classes")
    assert not (tmp_path / "edvit_plan").exists()


def test_a_checkpoint_is_split_only_with_the_data_it_was_trained_on(trained, tmp_path):
    import dataclasses

    vit, data = trained
    save_checkpoint(vit, tmp_path / "w.pt", data)
    renamed = dataclasses.replace(data, classes=[f"c{i}" for i in range(10)])
    with pytest.raises(InputError, match="trained on classes"):
        edgevit.split("deit_tiny", renamed, 2, weights=tmp_path / "w.pt", output=tmp_path / "p")
    shifted = dataclasses.replace(data, mean=tuple(m + 0.1 for m in data.mean))
    with pytest.raises(InputError, match="normalized differently"):
        edgevit.split("deit_tiny", shifted, 2, weights=tmp_path / "w.pt", output=tmp_path / "p")
    assert not (tmp_path / "p").exists()
