"""Notebooks 00 and 02: the reference cores (cvaia.reference.silog / .metrics) against the library,
the generated sentences (direction words, ties, missing values, verdict picking), the weighting
table and configs, and the figure options they use (confusion-matrix row labels, palette bars).
Nothing trains; each test runs in milliseconds."""

from __future__ import annotations

import math

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
import torch

from cvaia import experiments, losses, metrics, plots
from cvaia.config import make_config
from cvaia.data.classes import class_colors, class_names
from cvaia.experiments import common, p00, p02
from cvaia.experiments import verdicts as V
from cvaia.reference import metrics as ref_metrics
from cvaia.reference import silog as ref_silog


def _params(problem, **given):
    return experiments.resolve(problem, {"PROFILE": "smoke", "DATASET_ROOT": "/data/x", "DEVICE": "cpu", **given})


class _Run:
    def __init__(self, **final):
        self.final = final
        self.config = make_config(seed=int(final.pop("seed", 0)))


# ---- reference cores ------------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.0, 0.15, 0.5, 1.0])
def test_reference_silog_equals_the_library_in_value_and_gradient(lam):
    pred, gt = p02.depth_pair(seed=3)
    for scale in (0.3, 1.0, 5.0):
        a = (pred * scale).requires_grad_(True)
        b = (pred * scale).requires_grad_(True)
        la, lb = ref_silog.silog(a, gt, lam), losses.silog(b, gt, lam)
        la.backward()
        lb.backward()
        assert la.item() == pytest.approx(lb.item(), rel=1e-5, abs=1e-7)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)


def test_reference_silog_pools_the_batch_and_ignores_invalid_pixels():
    gt = torch.tensor([[[[2.0, 4.0, 0.0]]], [[[8.0, 0.0, 1.0]]]])
    pred = torch.tensor([[[[1.0, 1.0, 123.0]]], [[[1.0, 99.0, 1.0]]]])
    e = torch.log(torch.tensor([2.0, 4.0, 8.0, 1.0]))  # the four valid pixels of both images together
    expected = torch.sqrt(e.var(unbiased=False) + 0.15 * e.mean() ** 2)
    assert ref_silog.silog(pred, gt).item() == pytest.approx(expected.item(), rel=1e-6)


def test_reference_metrics_equal_the_library():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 19, (3, 20, 30))
    gt[0, :5] = 255
    gt[gt == 4] = 7  # class 4 absent from the ground truth
    pred = np.where(rng.random(gt.shape) < 0.4, rng.integers(0, 19, gt.shape), np.where(gt == 255, 0, gt))
    cm = ref_metrics.confusion_matrix(pred, gt)
    lib = metrics.ConfusionMatrix().update(torch.as_tensor(pred), torch.as_tensor(gt)).numpy()
    np.testing.assert_array_equal(cm, lib)
    assert ref_metrics.miou(cm) == pytest.approx(metrics.miou(lib), abs=1e-12)

    d_gt = np.exp(rng.uniform(1, 4, (3, 10, 12)))
    d_gt[1] = 0.0  # an image without valid depth is skipped
    d_gt[0, :3] = 0.0
    d_pred = np.where(d_gt > 0, d_gt, 5.0) * np.exp(rng.normal(0, 0.3, d_gt.shape))
    per_image = metrics.si_log_rmse_per_image(torch.as_tensor(d_pred), torch.as_tensor(d_gt)).numpy()
    assert ref_metrics.si_log_rmse(d_pred[0], d_gt[0]) == pytest.approx(per_image[0], rel=1e-12)
    assert math.isnan(per_image[1])
    split = metrics.DepthMetrics().update(torch.as_tensor(d_pred), torch.as_tensor(d_gt)).compute()["si_log_rmse"]
    assert ref_metrics.mean_si_log_rmse(d_pred, d_gt) == pytest.approx(split, rel=1e-12)
    assert ref_metrics.si_log_rmse(3.0 * d_gt[2], d_gt[2]) == pytest.approx(0.0, abs=1e-6)


def test_reference_grader_score_thresholds():
    assert ref_metrics.grader_score(45.0, 55.0) == 0.0
    assert ref_metrics.grader_score(60.0, 55.0) == pytest.approx(10.0)
    assert ref_metrics.grader_score(84.7, 16.6) == pytest.approx(metrics.grader_score(84.7, 16.6))


def test_absent_classes_count_zero_in_the_worked_example():
    ex = p00.worked_miou_example()
    np.testing.assert_array_equal(ex["cm3"].to_numpy(), [[7, 1, 0], [1, 4, 1], [0, 1, 9]])
    np.testing.assert_allclose(ex["table"].iloc[:, -1], [700 / 9, 50.0, 900 / 11])
    assert ex["miou_present"] == pytest.approx((700 / 9 + 50 + 900 / 11) / 3)
    assert ex["miou"] == pytest.approx((700 / 9 + 50 + 900 / 11) / 19) == ex["miou_library"]
    assert ex["absent"] == 16


# ---- notebook 00 texts ---------------------------------------------------------------------------------
def _norm_table(means, stds):
    t = pd.DataFrame({"channel": list("RGB"), "normalised mean": means, "normalised std": stds}).set_index("channel")
    t.attrs["images"] = 10
    return t


def test_normalisation_text_says_whether_the_inputs_are_centred():
    centred = p00.normalisation_text(_norm_table([0.05, -0.1, 0.0], [0.95, 1.0, 1.1]))
    assert "does centre" in centred and "not" not in centred.split(".")[1]
    dark = p00.normalisation_text(_norm_table([-1.14, -0.81, -0.52], [0.43, 0.5, 0.62]))
    assert "does **not** centre" in dark and "darker" in dark and "R, G, B" in dark and "less contrasted" in dark
    assert "-1.14/-0.81/-0.52" in dark and "brighter" not in dark
    mixed = p00.normalisation_text(_norm_table([0.6, 0.0, -0.4], [1.0, 1.0, 1.0]))
    assert "brighter in R" in mixed and "darker than ImageNet's average photo in B" in mixed
    assert "contrasted" not in mixed


def test_baseline_scores_text_names_a_non_zero_score():
    table = pd.DataFrame([{"baseline": "majority class / constant depth", "miou": 1.5, "si_log_rmse": 94.0},
                          {"baseline": "position prior", "miou": 11.0, "si_log_rmse": 49.5}])
    assert "position prior 0.50" in p00._baseline_scores_text(table)
    table.loc[1, "si_log_rmse"] = 53.0
    assert p00._baseline_scores_text(table).startswith("All of them score 0")


def test_baselines_text_states_the_one_learned_rule_with_this_runs_numbers():
    table = pd.DataFrame([{"baseline": "majority class / constant depth", "miou": 1.58, "si_log_rmse": 94.5},
                          {"baseline": "position prior", "miou": 11.03, "si_log_rmse": 53.8}])
    text = p00.baselines_text(table)
    assert "mIoU ≥ 2 × 1.58 = 3.16 and above the position prior's 11.03" in text
    assert "SI-logRMSE ≤ 0.6 × 94.5 = 56.7 and below the position prior's 53.8" in text
    assert "abs-rel and δ1 better than the position prior's" in text and "passes it" not in text


def test_weighting_claims_quote_the_report_table_in_order_of_w():
    assert "(report: 85.1, 84.7, 83.1 at w = 0.25, 0.5, 0.75)" in p02.CLAIM_MIOU
    assert "(report: 17.6, 16.6, 16.3)" in p02.CLAIM_SILOG
    # score = (mIoU − 50) + (50 − SI-logRMSE): 67.5 at w = 0.25, 68.1 at 0.5, 66.8 at 0.75
    assert "(report: 67.5, 68.1, 66.8 at w = 0.25, 0.5, 0.75)" in p02.CLAIM_SCORE


def test_class_colours_follow_the_palette():
    cols = p00.class_colours(["sky", "road"])
    np.testing.assert_allclose(cols, class_colors()[[10, 0]] / 255.0)
    with pytest.raises(KeyError, match="tree"):
        p00.class_colours(["tree"])


# ---- figures -------------------------------------------------------------------------------------------------
def test_confusion_matrix_row_info_labels_counts_iou_and_absent_rows():
    cm = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    fig = plots.confusion_matrix(cm, class_names=["road", "car", "sky"], normalize="row", row_info=True)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    iou = metrics.per_class_iou(cm)
    assert labels[0] == f"road  10 px  IoU {iou[0]:.1f}" and labels[1] == f"car  4 px  IoU {iou[1]:.1f}"
    assert labels[2] == "sky  absent, IoU 0"
    assert mcolors.to_rgb(ax.get_yticklabels()[2].get_color()) == mcolors.to_rgb("0.55")
    plain = plots.confusion_matrix(cm, class_names=["road", "car", "sky"])  # default unchanged
    assert [t.get_text() for t in plain.axes[0].get_yticklabels()] == ["road", "car", "sky"]


def test_bars_take_one_colour_per_bar():
    fig = plots.bars({"road": 30.0, "sky": 12.0}, ylabel="%", colors=[(0.5, 0.25, 0.5), (0.27, 0.5, 0.7)])
    faces = [p.get_facecolor()[:3] for p in fig.axes[0].patches]
    np.testing.assert_allclose(faces, [(0.5, 0.25, 0.5), (0.27, 0.5, 0.7)])
    with pytest.raises(ValueError, match="one colour per bar"):
        plots.bars({"road": 30.0, "sky": 12.0}, ylabel="%", colors=[(0, 0, 0)])


def test_depth_range_is_shared_and_ignores_invalid_pixels():
    a = np.array([[0.0, 4.0], [10.0, 0.0]])
    b = np.array([[100.0, 0.0]])
    lo, hi = common.depth_range(a, None, b, lo=0, hi=100)
    assert (lo, hi) == (4.0, 100.0)
    assert common.depth_range(np.zeros((2, 2))) == (1.0, 100.0)


# ---- notebook 02: configs and tables ---------------------------------------------------------------------
def test_weighting_configs_train_every_weight_under_every_seed():
    P = _params("02", SEEDS=[0, 1, 2])
    cfgs = p02.weighting_configs(P, pretrained="random")
    assert list(cfgs) == [(w, s) for w in (0.25, 0.5, 0.75) for s in (0, 1, 2)]
    assert cfgs[(0.5, 2)].seed == 2 and cfgs[(0.75, 0)].loss_weight_semseg == 0.25
    assert cfgs[(0.5, 0)].aug_geom_reflect is True
    assert p02.base_weight([0.1, 0.3, 0.9]) == 0.3 and p02.base_weight([0.75, 0.5]) == 0.5
    grouped = p02.runs_by_weight({(0.25, 0): 1, (0.5, 0): 2, (0.5, 1): 3}, ["a", None, "d"])
    assert grouped == {0.25: ["a"], 0.5: [None, "d"]}


def test_weighting_table_averages_seeds_and_counts_diverged_ones():
    runs = {0.5: [_Run(miou=30.0, si_log_rmse=40.0, score=0.0), None, _Run(miou=34.0, si_log_rmse=38.0, score=0.0)],
            0.25: _Run(miou=31.0)}
    t = p02.weighting_table(runs).set_index("w")
    assert t.loc[0.5, "miou"] == 32.0 and t.loc[0.5, "miou_std"] == pytest.approx(math.sqrt(8.0))
    assert (t.loc[0.5, "seeds"], t.loc[0.5, "diverged"]) == (2, 1)
    assert math.isnan(t.loc[0.25, "miou_std"]) and math.isnan(t.loc[0.25, "si_log_rmse"])
    assert t.loc[0.5, "report_score"] == pytest.approx(68.1)


SEED_SHIFT = (0.0, 2.0, -1.5)  # each seed's effect on every metric, shared by every weight
RESID = {0.25: (0.1, -0.1, 0.0), 0.5: (-0.1, 0.0, 0.1), 0.75: (0.0, 0.1, -0.1)}


def _by_w(miou, si, score=(0.0, 0.0, 0.0), resid=RESID):
    """w → three seed runs whose metrics are the given means plus a shared seed effect."""
    out = {}
    for w, m, d, sc in zip((0.25, 0.5, 0.75), miou, si, score, strict=True):
        out[w] = [None if math.isnan(m) else
                  _Run(seed=k, miou=m + SEED_SHIFT[k] + resid[w][k], si_log_rmse=d + SEED_SHIFT[k] + resid[w][k],
                       score=sc) for k in range(3)]
    return out


ALL_LEARNED = {w: {"semseg": True, "depth": True} for w in (0.25, 0.5, 0.75)}


def _verdicts(by_w, learned=ALL_LEARNED):
    return p02.weighting_verdicts(by_w, p02.weighting_noise(by_w), learned)


def test_weighting_noise_is_paired():
    nz = p02.weighting_noise(_by_w([40.0, 35.0, 30.0], [50.0, 45.0, 40.0], score=(1.0, 2.0, 1.5)))
    # the seed shifts (σ ≈ 1.8) stay out of the paired σ, which sees only the small residuals
    assert nz["miou"].df == 4 and nz["miou"].sd < 0.2 < 1.0 < nz["miou"].unpaired_sd


def test_weighting_verdicts_reproduced_contradicted_and_inconclusive():
    vs = _verdicts(_by_w([40.0, 35.0, 30.0], [50.0, 45.0, 40.0]))
    assert [v.outcome for v in vs[:2]] == [V.REPRODUCED, V.REPRODUCED]
    assert vs[0].test == "least-squares slope" and vs[0].interval.n == (9,)  # every run is a point
    assert vs[0].interval.low > 0  # positive = the report's direction ("lower": mIoU falls as w grows)
    vs = _verdicts(_by_w([30.0, 35.0, 40.0], [40.0, 40.0, 40.0]))
    assert vs[0].outcome == V.CONTRADICTED and vs[1].outcome == V.INCONCLUSIVE
    assert "detects a true effect" in vs[1].detail
    # a fall of 1 point is far below an unpaired threshold (seed σ ≈ 1.8) but clear when paired
    vs = _verdicts(_by_w([40.0, 39.5, 39.0], [50.0, 45.0, 40.0]))
    assert vs[0].outcome == V.REPRODUCED


def test_weighting_verdicts_refuse_runs_that_did_not_learn_and_all_zero_scores():
    not_learned = {**ALL_LEARNED, 0.75: {"semseg": True, "depth": False}}
    by_w = _by_w([40.0, 35.0, 30.0], [50.0, 45.0, 40.0])
    vs = _verdicts(by_w, not_learned)
    assert vs[0].outcome == V.REPRODUCED and vs[1].outcome == V.INCONCLUSIVE
    assert "did not clearly beat" in vs[1].sentence()
    score = vs[2]
    assert score.claim == p02.CLAIM_SCORE and score.outcome == V.INCONCLUSIVE and "every grader score is 0" in score.detail
    resid = {0.25: (0.3, -0.2, 0.1), 0.5: (-0.1, 0.2, 0.0), 0.75: (0.0, 0.1, -0.3)}
    vs = _verdicts(_by_w([40.0, 35.0, 30.0], [50.0, 45.0, 40.0], score=(10.0, 20.0, 10.0), resid=resid))
    assert vs[2].outcome == V.REPRODUCED  # w = 0.5 ahead of both by 10 under every seed
    text = p02.weighting_text(p02.weighting_table(by_w), _verdicts(by_w), p02.weighting_noise(by_w))
    assert "Every grader score is 0" in text and "paired difference" in text and "unpaired" in text


def test_weighting_verdicts_with_a_diverged_weight():
    by_w = _by_w([40.0, 35.0, math.nan], [50.0, 45.0, math.nan])
    learned = {**ALL_LEARNED, 0.75: {}}  # the diverged runs have no metrics to judge
    vs = _verdicts(by_w, learned)
    assert all(v.outcome == V.INCONCLUSIVE for v in vs[:2])


def test_difference_figure_never_truncates_the_noise_band():
    by_w = _by_w([30.2, 30.0, 29.9], [40.0, 40.1, 40.0])
    noise = p02.weighting_noise(by_w)
    fig = p02.difference_figure(p02.weighting_table(by_w), noise)
    for ax, metric in zip(fig.axes, ("miou", "si_log_rmse"), strict=True):
        lo, hi = ax.get_ylim()
        assert lo == pytest.approx(-hi) and hi > noise[metric].half_width(3)


# ---- notebook 02: SILog demonstrations -------------------------------------------------------------------
def test_scale_table_only_lambda_sees_a_prediction_scale():
    t = p02.scale_table()
    np.testing.assert_allclose(t["Var(e)"], t["Var(e)"].iloc[0], rtol=1e-5)
    np.testing.assert_allclose(t["SILog λ = 0"], t["SILog λ = 0"].iloc[0], rtol=1e-5)
    assert t.loc[4.0, "SILog λ = 1"] > t.loc[4.0, "SILog λ = 0.15"] > t.loc[1.0, "SILog λ = 0.15"]
    assert "only" in p02.scale_text(t)


def test_gradient_of_no_sqrt_shrinks_with_the_error_and_sqrt_does_not():
    t = p02.gradient_table(noises=(0.4, 0.1))
    assert t.loc[0.4, "no_sqrt"] / t.loc[0.1, "no_sqrt"] == pytest.approx(4.0, rel=0.05)
    assert t.loc[0.4, "sqrt"] / t.loc[0.1, "sqrt"] == pytest.approx(1.0, rel=0.05)
    text = p02.gradient_text(t)
    assert "`no_sqrt` gradient shrinks 4.0×" in text and "factor 1.00" in text


def test_loss_is_not_the_metric():
    t = p02.loss_vs_metric_table()
    own, same, noisy = t.iloc[0], t.iloc[1], t.iloc[2]
    assert own.iloc[0] == pytest.approx(0.0, abs=1e-3) and own.iloc[2] > 50  # log 4 apart: pooled variance
    assert same.iloc[1] == pytest.approx(0.0, abs=1e-3) and same.iloc[2] == pytest.approx(
        100 * math.sqrt(0.15) * math.log(2), rel=1e-4)
    assert noisy.iloc[0] > 10


# ---- notebook 02: depth errors ----------------------------------------------------------------------------
def _depth(factor, seed=0, far_factor=None):
    rng = np.random.default_rng(seed)
    gt = np.exp(rng.uniform(np.log(4), np.log(100), (2, 16, 32)))
    gt[:, :2] = 0.0  # sky
    f = np.where(gt > np.median(gt[gt > 0]), far_factor or factor, factor)
    return gt * f * np.exp(0.05 * rng.standard_normal(gt.shape)), gt


@pytest.mark.parametrize("factor, words", [(0.6, ("negative almost everywhere", "too near", "nearer than")),
                                           (1.5, ("positive almost everywhere", "too far", "farther than")),
                                           (1.0, ("not of one sign", "no large global scale error"))])
def test_depth_bias_text_direction_words(factor, words):
    pred, gt = _depth(factor)
    table = p02.depth_error_table(pred, gt)
    text = p02.depth_bias_text(table, pred, gt)
    for w in words:
        assert w in text, (w, text)
    if factor == 1.0:
        assert "Why one sign" not in text and "median scaling changes little" in text
    else:
        assert "Why one sign" in text and "hides exactly this error" in text and "barely move" not in text
        assert table.loc["all", "abs-rel, median-scaled"] < table.loc["all", "abs-rel"]


def test_depth_bias_text_sees_a_compressed_range():
    pred, gt = _depth(0.9, far_factor=0.5)
    text = p02.depth_bias_text(p02.depth_error_table(pred, gt), pred, gt)
    assert "compressed" in text and "stretched" not in text
    pred, gt = _depth(0.8, far_factor=1.3)
    assert "stretched" in p02.depth_bias_text(p02.depth_error_table(pred, gt), pred, gt)


def test_headline_keys_of_notebook_02():
    wt = p02.weighting_table({0.25: _Run(miou=30.0, si_log_rmse=40.0), 0.5: [
        _Run(miou=30.0, si_log_rmse=40.0, score=0.0, abs_rel=0.3, delta1=0.5),
        _Run(miou=32.0, si_log_rmse=38.0, score=0.0, abs_rel=0.3, delta1=0.5)]})
    h = p02.headline(wt)
    assert {"miou_w0.5", "silog_w0.5", "miou_w0.5_std", "silog_w0.5_std", "miou_w0.25", "score_w0.5"} <= set(h)
    assert h["miou_w0.5"] == 31.0 and h["seeds_w0.5"] == 2


def test_profiles_of_00_and_02():
    q = p02.PROFILES["quick"]
    assert q["VAL_IMAGES"] >= 100 and q["SEEDS"] == [0, 1, 2] and p02.PROFILES["full"]["SEEDS"] == [0, 1]
    assert p00.PROFILES["quick"]["VAL_IMAGES"] >= 100
    budget = p02.crop_budget(q, 5)
    assert budget["crops_64_total"] == 5 * q["EPOCHS"] * q["TRAIN_IMAGES"] * (q["CROP_SIZE"] / 64) ** 2
    assert p02.baseline_train_images({"TRAIN_IMAGES": 0}) == p02.BASELINE_TRAIN_IMAGES
    assert p02.baseline_train_images({"TRAIN_IMAGES": 8}) == 8
    assert class_names()[p00.WORKED_CLASSES[1]] == "car"
