"""ONNX export of the raw network, with a parity check against PyTorch.

The graph (documented in ``docs/inference.md``):

* input ``images``: ``float32 (N, 3, H, W)``, RGB, normalised ``(x / 255 - mean) / std`` and
  zero-padded bottom/right to multiples of 128 (exactly the PyTorch network's input); ``N``, ``H``
  and ``W`` are dynamic;
* outputs ``cls_logits (N, A, 2)`` (raw logits, *not* softmaxed; channel 1 = face),
  ``box_deltas (N, A, 4)`` (SSD offsets, *not* decoded), and one ``mask_logits_l<l> (N, 2, H_l, W_l)``
  per FFMM level (raw logits).
* metadata ``ufssd_config`` (the DetectorConfig JSON: normalisation, anchors, post-processing) and
  ``ufssd_version``.

Anchors, decoding, thresholding and NMS stay outside the graph, in
:func:`ufssd.inference.postprocess.postprocess`, which serves both backends. The exporter is
PyTorch's TorchScript-based one (``dynamo=False``): it needs only the ``onnx`` package, and it
handles the dynamic height and width of this network; opset 17.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ufssd import __version__
from ufssd.atomic import atomic_write_bytes
from ufssd.config import config_to_json
from ufssd.geometry.anchors import anchors_for_input, feature_sizes
from ufssd.inference.onnx_backend import METADATA_CONFIG, ONNX_INPUT, OnnxRunner, TorchRunner, create_session
from ufssd.inference.postprocess import postprocess

__all__ = ["export_onnx", "check_parity", "ExportResult", "ParityReport", "ExportParityError", "output_names", "OPSET"]

OPSET = 17
RAW_TOLERANCE = 1e-4  # max |torch - onnxruntime| of raw outputs (where the FFMM mask agrees)
BOX_TOLERANCE = 0.5  # px, boxes after NMS


class ExportParityError(RuntimeError):
    """onnxruntime's outputs differ from PyTorch's beyond the tolerances."""


def output_names(ffmm_levels) -> list[str]:
    return ["cls_logits", "box_deltas", *[f"mask_logits_l{l}" for l in ffmm_levels]]


class _RawNetwork(nn.Module):
    """The detector's forward as a flat tuple (what the ONNX graph computes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        out = self.model(images)
        return (out.cls_logits, out.box_deltas, *out.mask_logits)


@dataclass
class ParityReport:
    """PyTorch vs onnxruntime on the check inputs.

    ``max_abs_diff``: of the raw outputs (cls logits, box deltas, mask logits), over anchors
    whose FFMM cell has the same mask ``B`` in both; ``mask_flip_fraction``: fraction of FFMM
    cells whose ``B`` differs; ``boxes``: boxes compared after post-processing;
    ``box_max_diff``: largest corner difference (px) of matched boxes; ``boxes_unmatched``:
    boxes of one backend with no partner within 0.5 px in the other, not counting those whose
    score lies within 1e-4 of the threshold (a legitimate coin toss).
    """

    max_abs_diff: float
    mask_flip_fraction: float
    boxes: int
    box_max_diff: float
    boxes_unmatched: int
    inputs: list[tuple[int, ...]]

    @property
    def ok(self) -> bool:
        return self.max_abs_diff < RAW_TOLERANCE and self.boxes_unmatched == 0 and self.box_max_diff <= BOX_TOLERANCE

    def summary(self) -> str:
        shapes = ", ".join("x".join(map(str, s)) for s in self.inputs)
        return (
            f"parity vs PyTorch on {shapes}: max |diff| of raw outputs {self.max_abs_diff:.2e} "
            f"(tolerance {RAW_TOLERANCE:g}), FFMM mask cells flipped {self.mask_flip_fraction:.4%}, "
            f"{self.boxes} boxes after NMS, max corner diff {self.box_max_diff:.3g} px, "
            f"{self.boxes_unmatched} unmatched -> {'OK' if self.ok else 'FAILED'}"
        )


@dataclass
class ExportResult:
    data: bytes
    path: Path | None
    parity: ParityReport | None


def _export_bytes(model: nn.Module, opset: int) -> bytes:
    import onnx

    cfg = model.config
    names = output_names(cfg.model.ffmm_levels)
    dynamic = {ONNX_INPUT: {0: "batch", 2: "height", 3: "width"}}
    dynamic.update({names[0]: {0: "batch", 1: "anchors"}, names[1]: {0: "batch", 1: "anchors"}})
    for name in names[2:]:
        dynamic[name] = {0: "batch", 2: f"{name}_height", 3: f"{name}_width"}
    m = cfg.anchors.pad_multiple
    example = torch.zeros((1, 3, 2 * m, 3 * m), dtype=torch.float32)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            _RawNetwork(model),
            (example,),
            buf,
            dynamo=False,
            input_names=[ONNX_INPUT],
            output_names=names,
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in ((METADATA_CONFIG, config_to_json(cfg)), ("ufssd_version", __version__)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "ufssd"
    return proto.SerializeToString()


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike | None = None,
    *,
    opset: int = OPSET,
    check: bool = True,
    check_image: np.ndarray | None = None,
) -> ExportResult:
    """Export ``model``'s raw network to ONNX (graph described in the module doc).

    With ``check`` the exported graph is run with onnxruntime against PyTorch
    (:func:`check_parity`) before anything is written; a failure raises
    :class:`ExportParityError` and leaves no file. ``path`` is written atomically; ``None``
    returns the bytes only.
    """
    cpu_model = copy.deepcopy(model).to("cpu").eval()
    data = _export_bytes(cpu_model, opset)
    report = None
    if check:
        report = check_parity(cpu_model, data, check_image=check_image)
        if not report.ok:
            raise ExportParityError(report.summary())
    if path is not None:
        path = Path(path)
        atomic_write_bytes(path, data, fsync=True)  # a weight file: durable (ufssd.atomic)
    return ExportResult(data, None if path is None else Path(path), report)


def _check_inputs(model: nn.Module, check_image: np.ndarray | None) -> list[torch.Tensor]:
    """A real photo when one is at hand (matplotlib's ``grace_hopper.jpg``), plus a batch of two
    noise images of another size (so the dynamic batch, height and width are exercised)."""
    from ufssd.geometry.anchors import padded_size
    from ufssd.model import normalize

    cfg = model.config
    m = cfg.anchors.pad_multiple
    images = []
    if check_image is None:
        try:
            import matplotlib.cbook
            from PIL import Image

            with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
                check_image = np.asarray(im.convert("RGB"))
        except Exception:  # matplotlib's sample data is optional
            check_image = None
    if check_image is not None:
        h, w = check_image.shape[:2]
        hp, wp = padded_size(h, w, m)
        x = torch.zeros((1, 3, hp, wp))
        x[:, :, :h, :w] = normalize(torch.from_numpy(np.array(check_image)).permute(2, 0, 1)[None], cfg.model)
        images.append(x)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(2, 3, 2 * m, 3 * m), dtype=np.uint8)
    images.append(normalize(torch.from_numpy(noise), cfg.model))
    return images


def check_parity(
    model: nn.Module, onnx_model: bytes | str | os.PathLike, *, check_image: np.ndarray | None = None
) -> ParityReport:
    """Compare onnxruntime with PyTorch on :func:`_check_inputs` (see :class:`ParityReport`)."""
    cfg = model.config
    torch_run = TorchRunner(model.eval(), torch.device("cpu"))
    ort_run = OnnxRunner(create_session(onnx_model))
    levels = cfg.model.ffmm_levels
    max_diff, flips, cells, n_boxes, box_diff, unmatched = 0.0, 0, 0, 0, 0.0, 0
    inputs = []
    for x in _check_inputs(model, check_image):
        inputs.append(tuple(x.shape))
        t_cls, t_box, t_masks = torch_run(x)
        o_cls, o_box, o_masks = ort_run(x)
        hp, wp = x.shape[-2:]
        sizes = feature_sizes(hp, wp, cfg.anchors.strides)
        offsets = np.cumsum([0] + [h * w for h, w in sizes])
        agree = torch.ones(t_cls.shape[:2], dtype=torch.bool)
        for level, tm, om in zip(levels, t_masks, o_masks):
            tb = torch.softmax(tm, 1)[:, 1] > cfg.model.mask_threshold
            ob = torch.softmax(om, 1)[:, 1] > cfg.model.mask_threshold
            flipped = tb != ob
            flips += int(flipped.sum())
            cells += flipped.numel()
            agree[:, offsets[level] : offsets[level + 1]] &= ~flipped.reshape(flipped.shape[0], -1)
            max_diff = max(max_diff, float((tm - om).abs().max()))
        if agree.any():
            cls_diff = float((t_cls - o_cls).abs()[agree].max())
            max_diff = max(max_diff, cls_diff, float((t_box - o_box).abs()[agree].max()))

        anchors = anchors_for_input(hp, wp, cfg.anchors)
        inference = dataclasses.replace(cfg.inference, score_threshold=cfg.inference.eval_score_threshold)
        threshold = inference.score_threshold
        t_res = postprocess(t_cls, t_box, anchors, inference, anchor_cfg=cfg.anchors)
        o_res = postprocess(o_cls, o_box, anchors, inference, anchor_cfg=cfg.anchors)
        for (tb_, ts), (ob_, os_) in zip(t_res, o_res):
            n_boxes += len(ts)
            for a_boxes, a_scores, b_boxes in ((tb_, ts, ob_), (ob_, os_, tb_)):
                if len(a_boxes) == 0:
                    continue
                if len(b_boxes) == 0:
                    d = torch.full((len(a_boxes),), float("inf"))
                else:
                    d = (a_boxes[:, None, :] - b_boxes[None, :, :]).abs().amax(-1).amin(1)
                borderline = (a_scores - threshold).abs() < 1e-4
                matched = d <= BOX_TOLERANCE
                unmatched += int((~matched & ~borderline).sum())
                if matched.any():
                    box_diff = max(box_diff, float(d[matched].max()))
    return ParityReport(max_diff, flips / cells if cells else 0.0, n_boxes, box_diff, unmatched, inputs)
