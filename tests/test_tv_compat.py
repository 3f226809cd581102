"""torchvision imports on the CPU build of torch through pipeline.tv_compat (vision#9085)."""

import numpy as np
import torch

from pipeline.tv_compat import greedy_nms, torchvision


def numpy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    order, keep = list(np.argsort(-scores, kind="stable")), []
    while order:
        best, order = order[0], order[1:]
        keep.append(int(best))
        rest = []
        for other in order:
            x1, y1 = np.maximum(boxes[best, :2], boxes[other, :2])
            x2, y2 = np.minimum(boxes[best, 2:], boxes[other, 2:])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
            if inter / (area(boxes[best]) + area(boxes[other]) - inter) <= threshold:
                rest.append(other)
        order = rest
    return keep


def test_models_and_transforms_work():
    model = torchvision.models.resnet18(num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 3)
    from torchvision.transforms import v2

    out = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.25])])(
        torch.full((1, 8, 8), 255, dtype=torch.uint8))
    assert torch.allclose(out, torch.full((1, 8, 8), 2.0))


def test_nms_operator_matches_numpy_reference():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 50, size=(60, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 30, size=(60, 2))], axis=1)
    scores = rng.uniform(size=60)
    for threshold in (0.1, 0.3, 0.7):
        expected = numpy_nms(boxes, scores, threshold)
        got = torch.ops.torchvision.nms(torch.tensor(boxes, dtype=torch.float32),
                                        torch.tensor(scores, dtype=torch.float32), threshold)
        assert got.tolist() == expected
        assert greedy_nms(torch.tensor(boxes), torch.tensor(scores), threshold).tolist() == expected


def test_the_public_nms_and_batched_nms_match_the_reference():
    """What Mask R-CNN calls: torchvision.ops.nms and batched_nms (per class)."""
    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 50, size=(40, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 30, size=(40, 2))], axis=1)
    scores = rng.uniform(size=40)
    classes = rng.integers(0, 2, 40)
    as_tensor = torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores,
                                                                       dtype=torch.float32)
    assert torchvision.ops.nms(*as_tensor, 0.3).tolist() == numpy_nms(boxes, scores, 0.3)
    expected = sorted((index for label in (0, 1)
                       for index in np.flatnonzero(classes == label)[numpy_nms(
                           boxes[classes == label], scores[classes == label], 0.3)]),
                      key=lambda index: -scores[index])
    assert torchvision.ops.batched_nms(*as_tensor, torch.tensor(classes), 0.3).tolist() == \
        expected
