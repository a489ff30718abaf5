"""Target forms of the BatchNorm hybrids: EdgeNeXt BN-HS and FMViT (edgevit.reparam.forms)."""

from __future__ import annotations

import edgevit
import numpy as np
import pytest
import torch
from edgevit.models.edgenext import EdgeNeXt
from edgevit.models.fmvit import FMViT
from edgevit.reparam.checked import fold_checked
from edgevit.reparam.forms import FORMS, form_checked
from edgevit.runtimes.loader import load

from .conftest import SMALL
from .helpers import randomize_statistics
from .test_target_forms import inputs


def small_edgenext_bn_hs():
    return EdgeNeXt(num_classes=7, depths=(1, 1, 2, 1), dims=(16, 24, 32, 48), heads=(2, 2, 2, 2),
                    d2_scales=(2, 2, 3, 4), bn_hs=True)


def small_fmvit():
    """Single-head attention in stages 1-2 (its own channels-last product), 2 and 4 heads after."""
    return FMViT(num_classes=7, dims=(16, 24, 32, 48), depths=(1, 2, 2, 1), mixers=(1, 1, 2, 1),
                 attn_dims=(8, 8, 16, 32), head_dim=8)


MODELS = {"edgenext_bn_hs": small_edgenext_bn_hs, "fmvit": small_fmvit}
ZOO = ("edgenext_xx_small_bn_hs", "fmvit_t")  # the smallest registered model of each


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("folded", [True, False], ids=["folded", "unfolded"])
def test_every_hybrid_form_computes_what_the_model_as_trained_computes(family, form, folded):
    """float64 against the model as trained, every BatchNorm statistic randomized; unfolded,
    the BatchNorms that the channels-last form puts on NHWC tensors still normalize."""
    trained = randomize_statistics(MODELS[family]().eval())
    xs = inputs(SMALL)
    model = fold_checked(trained, family, xs)[0] if folded else trained
    rewritten, report = form_checked(model, family, form, xs, reference=trained)
    assert report.changed, report.to_dict()
    assert report.max_abs_change < 1e-5
    with torch.inference_mode():
        x = torch.from_numpy(xs[0])
        np.testing.assert_allclose(rewritten(x).numpy(), trained(x).numpy(), atol=1e-5, rtol=1e-4)


def test_hybrid_forms_report_their_blocks():
    _, report = form_checked(small_fmvit().eval(), "fmvit", "channels_last", inputs(SMALL, 1))
    counts = report.counts()
    assert counts["RLMHSA: one transpose (q), products transposed only on their right"] == 5, counts
    assert counts["FrequencyMixingBlock: the channel split by one split op"] == 5, counts
    assert {entry.where for entry in report.entries} >= {"stages.1.1", "stages.1.1.low"}
    _, report = form_checked(small_edgenext_bn_hs().eval(), "bn_hs", "channels_first", inputs(SMALL, 1))
    assert {"ConvEncoderBNHS", "SDTAEncoderBNHS", "EdgeNeXt"} <= {d.split(":")[0] for d in report.counts()}


@pytest.mark.parametrize("name", ZOO)
def test_core_ml_hybrids_have_no_transposes_and_no_more_ops(name, tmp_path):
    """Channels-first: at most 4 transposes in the whole model (both have none; as trained
    37 and 5), and fewer MIL ops than the model exported as trained (146 vs 214, 142 vs 157)."""
    censuses = {}
    for form in (True, False):
        result = edgevit.export(name, "coreml", tmp_path / str(form), image_size=SMALL, num_inputs=1,
                                target_form=form, verify=False)
        assert (result.form is not None) == form
        censuses[form] = load(result.path).op_census()
    ours, trained = ({op: n for op, n in census.items() if op != "const"} for census in (censuses[True],
                                                                                        censuses[False]))
    assert ours.get("transpose", 0) == 0 and trained["transpose"] >= 5, (ours, trained)
    assert sum(ours.values()) < sum(trained.values()), (ours, trained)


@pytest.mark.parametrize("name", ZOO)
def test_tflite_hybrids_run_whole_on_xnnpack(name, tmp_path):
    """One delegate partition; fmvit_t as trained has two (its single-head attention became
    a FULLY_CONNECTED with computed weights)."""
    result = edgevit.export(name, "tflite", tmp_path, image_size=SMALL, num_inputs=1)
    assert result.written and result.form["form"] == "channels_last"
    census = load(result.path).op_census()
    assert census["DELEGATE"] == 1, census
