"""Geometry: anchors, box coding, matching, FFMM ground-truth masks (pure, batched, torch only)."""

from ufssd.geometry.anchors import anchors_for_input, feature_sizes, make_anchors, padded_size
from ufssd.geometry.boxes import decode, encode, xywh_to_xyxy, xyxy_to_xywh
from ufssd.geometry.masks import (
    gt_masks,
    mask_cell_centres,
    mask_square_sides,
    square_face_iou,
    square_overlap,
)
from ufssd.geometry.matching import BACKGROUND, IGNORE, POSITIVE, build_targets, match_anchors, valid_faces
from ufssd.geometry.padded import build_targets_padded, gt_masks_padded, match_anchors_padded
from ufssd.geometry.pairs import BoxIndex, build_box_index, overlapping_pairs, paired_iou

__all__ = [
    "feature_sizes",
    "padded_size",
    "make_anchors",
    "anchors_for_input",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    "encode",
    "decode",
    "POSITIVE",
    "BACKGROUND",
    "IGNORE",
    "match_anchors",
    "valid_faces",
    "build_targets",
    "gt_masks",
    "mask_cell_centres",
    "mask_square_sides",
    "square_overlap",
    "square_face_iou",
    "match_anchors_padded",
    "build_targets_padded",
    "gt_masks_padded",
    "BoxIndex",
    "build_box_index",
    "overlapping_pairs",
    "paired_iou",
]
