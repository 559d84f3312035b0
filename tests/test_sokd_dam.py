"""DAM: CenterNet targets, decoding, masks, pseudo-boxes and gradient routing (DESIGN 1.2)."""
import pytest
import torch

from distill.sokd.dam import (DAM, activation_map, anchoring_loss, boxes_to_mask,
                              centernet_targets, consistency_loss, decode_boxes,
                              largest_component_boxes, masked_mean, scale_boxes)

BOXES = [torch.tensor([[1.0, 1.0, 4.0, 5.0], [5.2, 0.5, 7.9, 3.0]]),
         torch.tensor([[0.3, 2.0, 6.6, 7.5]])]


def test_targets_and_decoding_round_trip():
    targets = centernet_targets(BOXES, None, 1, 8, 9)
    assert targets['heatmap'].shape == (2, 1, 8, 9)
    assert int(targets['centres'].sum()) == 3
    boxes, scores, keep = decode_boxes(targets['heatmap'], targets['size'], targets['offset'],
                                       top_k=2, score_threshold=0.5)
    for image, want in enumerate(BOXES):
        got = boxes[image][keep[image]]
        assert len(got) == len(want)
        order = lambda b: b[torch.argsort(b[:, 0])]  # noqa: E731
        torch.testing.assert_close(order(got), order(want))


def test_targets_by_class_and_empty_boxes():
    targets = centernet_targets([torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 2.0, 5.0]])],
                                [torch.tensor([2, 1])], 3, 8, 8)
    # the zero-width box is skipped; the other lands on channel 2
    assert float(targets['heatmap'][0, 2].max()) == 1.0
    assert float(targets['heatmap'][0, :2].max()) == 0.0
    assert int(targets['centres'].sum()) == 1


def test_mask_covers_the_decoded_boxes():
    heatmap = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    size = torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 4
    offset = torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    boxes, _, keep = decode_boxes(heatmap, size, offset, top_k=4, score_threshold=0.0)
    mask = boxes_to_mask(boxes, keep, 8, 8)
    assert mask.shape == (2, 1, 8, 8)
    for b in range(2):
        for x1, y1, x2, y2 in boxes[b][keep[b]].tolist():
            cells = mask[b, 0, int(y1):max(int(torch.tensor(y2).ceil()), int(y1) + 1),
                         int(x1):max(int(torch.tensor(x2).ceil()), int(x1) + 1)]
            assert bool(cells.eq(1).all())
    # and nothing else: a mask of one known box
    one = boxes_to_mask(torch.tensor([[[2.0, 3.0, 4.0, 5.0]]]), torch.tensor([[True]]), 8, 8)
    assert int(one.sum()) == 4


def test_scale_boxes_to_feature_grid():
    scaled = scale_boxes([torch.tensor([[8.0, 4.0, 16.0, 32.0]])], (32, 32), (8, 8))
    torch.testing.assert_close(scaled[0], torch.tensor([[2.0, 1.0, 4.0, 8.0]]))


def test_cam_pseudo_box_is_the_largest_component():
    cam = torch.zeros(2, 8, 8)
    cam[0, 1:3, 1:4] = 1.0   # 6 cells
    cam[0, 5:8, 5:8] = 2.0   # 9 cells: the largest
    cam[1, 2:6, 3] = 1.0     # one vertical bar
    boxes = largest_component_boxes(cam, threshold=0.4)
    torch.testing.assert_close(boxes, torch.tensor([[5.0, 5.0, 8.0, 8.0], [3.0, 2.0, 4.0, 6.0]]))
    feature = torch.rand(2, 4, 8, 8)
    fc_weight = torch.randn(3, 4)
    cam = activation_map(feature, torch.tensor([0, 2]), fc_weight)
    expected = torch.einsum('c,chw->hw', fc_weight[2], feature[1]).relu()
    torch.testing.assert_close(cam[1], expected)
    # no usable fc: the channel-mean map
    torch.testing.assert_close(activation_map(feature, None, None), feature.mean(1))


def test_masked_mean():
    distance = torch.rand(2, 4, 4)
    ones = torch.ones(2, 1, 4, 4)
    torch.testing.assert_close(masked_mean(distance, ones, beta=0.3), distance.mean())
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1
    want = distance[:, :2].mean() + 0.1 * distance[:, 2:].mean()
    torch.testing.assert_close(masked_mean(distance, mask, beta=0.1), want)
    # a mask on a finer grid is max-pooled onto the distance's grid
    fine = torch.zeros(2, 1, 8, 8)
    fine[:, :, :3] = 1
    torch.testing.assert_close(masked_mean(distance, fine, beta=0.1), want)


def test_anchoring_trains_dam_only_and_consistency_not_the_teacher():
    torch.manual_seed(0)
    dam = DAM(teacher_channels=6, student_channels=4, channels=8)
    teacher_feat = torch.randn(2, 6, 8, 8, requires_grad=True)
    student_feat = torch.randn(2, 4, 8, 8, requires_grad=True)
    teacher_side = dam(teacher_feat.detach(), 'teacher')  # as the distiller does
    student_side = dam(student_feat, 'student')
    targets = centernet_targets(BOXES, None, 1, 8, 8)
    anchor = anchoring_loss(teacher_side, targets)
    anchor.backward(retain_graph=True)
    assert teacher_feat.grad is None and student_feat.grad is None
    assert dam.teacher_proj.weight.grad.abs().sum() > 0
    assert dam.student_proj.weight.grad is None
    dam.zero_grad(set_to_none=True)
    consistency = consistency_loss(student_side, teacher_side)
    consistency.backward()
    assert teacher_feat.grad is None
    assert dam.teacher_proj.weight.grad is None
    assert student_feat.grad.abs().sum() > 0
    assert dam.student_proj.weight.grad.abs().sum() > 0
    assert dam.heatmap[0].weight.grad.abs().sum() > 0
    # the heatmap starts at the CenterNet prior
    prior = torch.sigmoid(teacher_side['heatmap'].detach()).mean()
    assert float(prior) == pytest.approx(0.1, abs=0.05)


def test_targets_from_a_box_tensor_match_the_list_form():
    from distill.sokd.dam import centernet_targets
    boxes = torch.tensor([[[0.0, 0.0, 3.0, 2.0]], [[1.5, 2.0, 6.0, 7.5]], [[2.0, 2.0, 2.0, 5.0]]])
    labels = torch.tensor([[1], [0], [2]])
    listed = centernet_targets(list(boxes), list(labels), 3, 8, 8)
    stacked = centernet_targets(boxes, labels, 3, 8, 8)
    for key in ('heatmap', 'size', 'offset', 'centres'):
        torch.testing.assert_close(stacked[key], listed[key])
    assert float(stacked['centres'][2].sum()) == 0  # the empty box: no centre, no peak
    with pytest.raises(ValueError, match=r'\(B,N,4\)'):
        centernet_targets(boxes[:, 0], None, 1, 8, 8)


def test_both_sides_at_once_equal_two_calls():
    torch.manual_seed(0)
    dam = DAM(6, 4, channels=8, num_classes=2)
    ft, fs = torch.randn(3, 6, 5, 5), torch.randn(3, 4, 5, 5)
    teacher_side, student_side = dam.both(ft, fs)
    for got, want in ((teacher_side, dam(ft, 'teacher')), (student_side, dam(fs, 'student'))):
        for key in ('heatmap', 'size', 'offset'):
            torch.testing.assert_close(got[key], want[key])
