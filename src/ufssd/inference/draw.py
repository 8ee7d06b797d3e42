"""Annotated copies: boxes and scores drawn onto an image."""

from __future__ import annotations

import numpy as np

from ufssd.inference.results import DetectionResult

__all__ = ["draw_detections", "encode_image"]

BOX_COLOUR = (0, 255, 0)  # RGB


def draw_detections(image: np.ndarray, result: DetectionResult, scores: bool = True) -> np.ndarray:
    """A copy of ``image`` (``(H, W, 3) uint8`` RGB) with each box drawn, line width scaled to the
    image, and its score above it."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    thickness = max(1, round(max(h, w) / 500))
    font_scale = max(0.35, max(h, w) / 1600)
    for d in result.detections:
        p1 = (int(round(d.x1)), int(round(d.y1)))
        p2 = (int(round(d.x2)), int(round(d.y2)))
        cv2.rectangle(out, p1, p2, BOX_COLOUR, thickness)
        if scores:
            cv2.putText(
                out, f"{d.score:.2f}", (p1[0], max(p1[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                font_scale, BOX_COLOUR, max(1, thickness // 2), cv2.LINE_AA,
            )
    return out


def encode_image(image: np.ndarray, suffix: str) -> bytes:
    """``(H, W, 3) uint8`` RGB -> the bytes of an image file of type ``suffix`` (".jpg", ".png"...)."""
    import cv2

    ok, buf = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode an image as {suffix}")
    return buf.tobytes()
