"""Cases shared by the per-image (``test_augment``) and batched (``test_batch_augment``) tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def centre_rule_case() -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
    """A crop window, five faces around it and their ignore flags: ``(window, boxes, ignore)``."""
    window = (100, 100, 200, 200)
    boxes = np.array(
        [
            [50, 50, 140, 140],  # centre (95, 95): outside -> dropped although it overlaps
            [180, 120, 260, 160],  # centre (220, 140): outside -> dropped
            [150, 80, 230, 170],  # centre (190, 125): inside, partly outside -> clipped
            [120, 120, 140, 150],  # inside
            [190, 190, 190, 198],  # degenerate ignored face, centre inside: kept, still ignored
        ],
        np.float32,
    )
    return window, boxes, np.array([False, False, False, False, True])
