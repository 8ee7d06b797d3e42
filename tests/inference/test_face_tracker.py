"""``FaceTracker`` (``--persist N``): hand-worked frame sequences."""

from __future__ import annotations

import numpy as np
import pytest

from ufssd.inference.face_tracker import FaceTracker, box_iou

A = np.array([[10.0, 10.0, 30.0, 30.0]])
A_MOVED = np.array([[12.0, 10.0, 32.0, 30.0]])  # IoU with A = 18*20 / (2*400 - 360) = 0.82
B = np.array([[60.0, 60.0, 80.0, 80.0]])
NONE = np.zeros((0, 4))


def test_box_iou_by_hand():
    np.testing.assert_allclose(box_iou(A, np.concatenate([A, A_MOVED, B])), [[1.0, 360 / 440, 0.0]])
    assert box_iou(NONE, A).shape == (0, 1)


def test_a_lost_face_is_held_for_persist_frames_then_dropped():
    tracker = FaceTracker(persist=2)
    assert tracker.update(A, [0.9]).held.tolist() == [0]
    first_miss = tracker.update(NONE, [])
    np.testing.assert_array_equal(first_miss.boxes, A)
    assert first_miss.held.tolist() == [1] and first_miss.scores.tolist() == pytest.approx([0.9])
    assert tracker.update(NONE, []).held.tolist() == [2]
    assert len(tracker.update(NONE, [])) == 0


def test_a_moving_face_is_followed_not_duplicated_and_a_new_one_starts():
    tracker = FaceTracker(persist=3)
    tracker.update(A, [0.8])
    hidden = tracker.update(np.concatenate([A_MOVED, B]), [0.7, 0.6])
    np.testing.assert_array_equal(hidden.boxes, np.concatenate([A_MOVED, B]))  # A was matched to A_MOVED
    assert hidden.held.tolist() == [0, 0]
    hidden = tracker.update(B, [0.6])  # A_MOVED is lost: held at its last box
    np.testing.assert_array_equal(hidden.boxes, np.concatenate([B, A_MOVED]))
    assert hidden.held.tolist() == [0, 1]
    hidden = tracker.update(A_MOVED, [0.9])  # found again: the count restarts
    assert hidden.held.tolist() == [0, 1] and len(hidden) == 2  # (B now held)


def test_persist_zero_hides_only_the_detections():
    tracker = FaceTracker(persist=0)
    tracker.update(A, [0.9])
    assert len(tracker.update(NONE, [])) == 0
    with pytest.raises(ValueError):
        FaceTracker(persist=-1)
