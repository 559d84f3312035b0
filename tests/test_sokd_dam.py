"""DAM: CenterNet targets, decoding, masks, pseudo-boxes and gradient routing (README, "SoKD")."""
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
    assert dam.hidden.weight.grad.abs().sum() > 0
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



# ------------------------------------------- the batched DAM against the code it replaced
# tests/dam_reference.py keeps the loop-and-scatter DAM verbatim: the batched one must give its
# targets, boxes, masks, losses and gradients (float32 rounding apart) on fixed inputs.

import dam_reference as reference  # noqa: E402  (tests/ is on the path, as for fmnist_helpers)


def _random_boxes(generator, images, grid, with_empty=True):
    boxes = []
    for i in range(images):
        count = int(torch.randint(0, 4, (), generator=generator)) if with_empty else 1
        low = torch.rand(count, 2, generator=generator) * (grid - 1)
        size = torch.rand(count, 2, generator=generator) * grid * 0.8 + 0.2
        if i == 1 and count:  # a zero-width box: no target
            size[0, 0] = 0.0
        boxes.append(torch.cat([low, low + size], dim=1))
    return boxes


@pytest.mark.parametrize('num_classes', [1, 3])
def test_targets_equal_the_loop_and_scatter_targets(num_classes):
    g = torch.Generator().manual_seed(0)
    for grid in ((8, 8), (7, 11)):
        boxes = _random_boxes(g, 6, min(grid))
        labels = [torch.randint(0, num_classes, (len(b),), generator=g) for b in boxes]
        want = reference.centernet_targets(boxes, labels, num_classes, *grid)
        got = centernet_targets(boxes, labels, num_classes, *grid)
        for key in ('heatmap', 'size', 'offset', 'centres'):
            torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-6)
    # one box per image as a (B,1,4) tensor (SoKD's pseudo-boxes), an empty one among them
    stacked = torch.stack([b[:1] if len(b) else torch.zeros(1, 4) for b in boxes])
    want = reference.centernet_targets(stacked, None, 1, 8, 8)
    got = centernet_targets(stacked, None, 1, 8, 8)
    for key in ('heatmap', 'size', 'offset', 'centres'):
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-6)


def test_two_centres_in_one_cell_keep_the_later_box_as_the_scatter_did():
    boxes = [torch.tensor([[1.0, 1.0, 4.0, 4.0], [2.0, 2.0, 3.0, 3.0]])]  # both centred at 2.5
    want = reference.centernet_targets(boxes, None, 1, 8, 8)
    got = centernet_targets(boxes, None, 1, 8, 8)
    for key in ('heatmap', 'size', 'offset', 'centres'):
        torch.testing.assert_close(got[key], want[key])
    assert got['size'][0, :, 2, 2].tolist() == [1.0, 1.0]


def test_radius_floors_like_the_three_formulas_on_every_integer_box():
    """The Gaussian's radius is floored: the side-by-side roots must round as CenterNet's
    three formulas do, or a whole ring of the target moves (every integer box up to 48)."""
    side = torch.arange(1, 49, dtype=torch.float32)
    h, w = side.repeat_interleave(48), side.repeat(48)
    from distill.sokd.dam import gaussian_radius
    assert torch.equal(gaussian_radius(h, w), reference.gaussian_radius(h, w))


@pytest.mark.parametrize('shape', [(8, 8), (7, 7), (5, 9), (1, 1)])
def test_cam_boxes_equal_label_propagation(shape, monkeypatch):
    g = torch.Generator().manual_seed(1)
    cam = torch.rand(24, *shape, generator=g)
    cam = cam * (torch.rand(24, *shape, generator=g) > 0.45)  # several components each
    cam[0] = 0.0  # a dead CAM: the whole map
    for threshold in (0.3, 0.5, 0.8):
        want = reference.largest_component_boxes(cam, threshold)
        torch.testing.assert_close(largest_component_boxes(cam, threshold), want)
        import distill.sokd.dam_targets as dam_module
        monkeypatch.setattr(dam_module, 'CLOSURE_MAX_CELLS', 0)  # the large-map path
        torch.testing.assert_close(largest_component_boxes(cam, threshold), want)
        monkeypatch.undo()


def test_decoded_boxes_and_masks_equal_the_old_decoding():
    g = torch.Generator().manual_seed(2)
    for classes in (1, 3):
        heat = torch.rand(5, classes, 7, 9, generator=g)
        size, offset = torch.rand(5, 2, 7, 9, generator=g) * 5, torch.rand(5, 2, 7, 9, generator=g)
        got, want = decode_boxes(heat, size, offset, 6, 0.4), \
            reference.decode_boxes(heat, size, offset, 6, 0.4)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(boxes_to_mask(got[0], got[2], 7, 9),
                                   reference.boxes_to_mask(want[0], want[2], 7, 9))


def _old_layout(new_dam, num_classes):
    """The reference DAM (three separate heads) holding ``new_dam``'s weights."""
    old = reference.DAM(new_dam.teacher_proj.in_channels, new_dam.student_proj.in_channels,
                        new_dam.channels, num_classes)
    c = new_dam.channels
    state = {k: v for k, v in new_dam.state_dict().items() if 'proj' in k}
    row = 0
    for i, (name, rows) in enumerate((('heatmap', num_classes), ('size', 2), ('offset', 2))):
        state[f'{name}.0.weight'] = new_dam.hidden.weight[i * c:(i + 1) * c]
        state[f'{name}.0.bias'] = new_dam.hidden.bias[i * c:(i + 1) * c]
        state[f'{name}.2.weight'] = new_dam.out.weight[row:row + rows, i * c:(i + 1) * c]
        state[f'{name}.2.bias'] = new_dam.out.bias[row:row + rows]
        row += rows
    old.load_state_dict(state)
    return old


@pytest.mark.parametrize('num_classes', [1, 2])
def test_the_fused_heads_and_losses_equal_the_separate_heads(num_classes):
    """Outputs, both losses, the mask and every gradient (features and weights) of one DAM pass
    as SoKD runs it, against the three separate heads and the old losses."""
    from distill.sokd.dam import decode_mask, split_sides
    torch.manual_seed(0)
    dam = DAM(teacher_channels=6, student_channels=4, channels=8, num_classes=num_classes)
    with torch.no_grad():  # train the heads a little away from their init
        for param in dam.parameters():
            param.add_(0.3 * torch.randn_like(param))
    old = _old_layout(dam, num_classes)
    ft = torch.randn(3, 6, 7, 7)
    fs_new = torch.randn(3, 4, 7, 7, requires_grad=True)
    fs_old = fs_new.detach().clone().requires_grad_()
    boxes = _random_boxes(torch.Generator().manual_seed(3), 3, 7)
    labels = [torch.randint(0, num_classes, (len(b),)) for b in boxes]

    out = dam.run(ft, fs_new)
    teacher_side, student_side = split_sides(out, num_classes)
    new_loss = (consistency_loss(student_side, teacher_side)
                + anchoring_loss(teacher_side, centernet_targets(boxes, labels, num_classes, 7, 7)))
    old_teacher, old_student = old(ft, 'teacher'), old(fs_old, 'student')
    for got, want in ((teacher_side, old_teacher), (student_side, old_student)):
        torch.testing.assert_close(got['heatmap'], want['heatmap'], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got['box'], torch.cat([want['size'], want['offset']], 1),
                                   atol=1e-5, rtol=1e-5)
    old_loss = (reference.consistency_loss(old_student, old_teacher)
                + reference.anchoring_loss(old_teacher, reference.centernet_targets(
                    boxes, labels, num_classes, 7, 7)))
    torch.testing.assert_close(new_loss, old_loss, atol=1e-5, rtol=1e-5)
    for mode, sides in (('mutual', 2), ('teacher', 1), ('student', 1)):
        chosen = dict(mutual=out, teacher=out[:3], student=out[3:])[mode]
        torch.testing.assert_close(decode_mask(chosen, num_classes, sides, 4, 0.2),
                                   reference.decode_mask(old_teacher, old_student, mode, 4, 0.2))
    new_loss.backward()
    old_loss.backward()
    torch.testing.assert_close(fs_new.grad, fs_old.grad, atol=1e-5, rtol=1e-4)
    grads = {name: p.grad for name, p in old.named_parameters()}
    torch.testing.assert_close(dam.teacher_proj.weight.grad, grads['teacher_proj.weight'],
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dam.hidden.weight.grad, torch.cat(
        [grads[f'{n}.0.weight'] for n in ('heatmap', 'size', 'offset')]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dam.out.weight.grad, dam._block_diagonal(
        [grads[f'{n}.2.weight'] for n in ('heatmap', 'size', 'offset')]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('num_classes', [1, 2])
def test_dam_pass_masks_of_each_mode_equal_the_old_decoding(num_classes):
    """``DAMPass.decode_mask`` of the fused output (teacher images first) in each ``dam.mask``
    mode, with and without the heatmaps' sigmoid given, against the old ``decode_mask`` of the
    two sides: the teacher's mask from the teacher half, the student's from the student half."""
    from distill.sokd.dam import split_sides
    from distill.sokd.dam_pass import DAMPass, check_dam_cfg
    g = torch.Generator().manual_seed(4)
    images, grid = 4, (6, 7)
    out = torch.cat([4 * torch.randn(2 * images, num_classes, *grid, generator=g),
                     3 * torch.rand(2 * images, 2, *grid, generator=g),
                     torch.rand(2 * images, 2, *grid, generator=g)], dim=1)
    old_teacher, old_student = (dict(heatmap=side['heatmap'], size=side['box'][:, :2],
                                     offset=side['box'][:, 2:])
                                for side in split_sides(out, num_classes))
    prob = torch.sigmoid(out[:, :num_classes])
    masks = {}
    for mode in ('mutual', 'teacher', 'student'):
        cfg = check_dam_cfg(dict(mask=mode, num_classes=num_classes, top_k=4,
                                 score_threshold=0.6))
        dam_pass = DAMPass(None, cfg, {}, adapter=None, teacher=None)
        want = reference.decode_mask(old_teacher, old_student, mode, 4, 0.6)
        masks[mode] = dam_pass.decode_mask(out)
        torch.testing.assert_close(masks[mode], want)
        torch.testing.assert_close(dam_pass.decode_mask(out, prob), want)
    assert masks['teacher'].shape == (images, 1, *grid)
    assert not torch.equal(masks['teacher'], masks['student'])  # the halves differ


def test_a_state_dict_of_separate_heads_loads_and_the_off_blocks_stay_dead():
    torch.manual_seed(0)
    old = reference.DAM(6, 4, channels=8, num_classes=1)
    dam = DAM(6, 4, channels=8, num_classes=1)
    dam.load_state_dict(old.state_dict())  # a checkpoint written before the heads were fused
    feature = torch.randn(2, 6, 5, 5)
    got, want = dam(feature, 'teacher'), old(feature, 'teacher')
    for key in ('heatmap', 'size', 'offset'):
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-5)
    dam(feature, 'teacher')['heatmap'].sum().backward()
    off_blocks = dam.out_mask == 0
    assert bool(off_blocks.any()) and float(dam.out.weight.grad[off_blocks].abs().sum()) == 0.0
    # the same init draws as three separate heads
    torch.manual_seed(5)
    old = reference.DAM(6, 4, channels=8, num_classes=1)
    torch.manual_seed(5)
    fresh = DAM(6, 4, channels=8, num_classes=1)
    torch.testing.assert_close(fresh.hidden.weight, torch.cat(
        [old.heatmap[0].weight, old.size[0].weight, old.offset[0].weight]))


def test_constants_first_made_under_inference_mode_still_train():
    """DAM caches its constants per device; one first made in an inference_mode evaluation must
    not break the next training step's backward."""
    torch.manual_seed(0)
    dam = DAM(6, 4, channels=8)
    ft, fs = torch.randn(2, 6, 9, 9), torch.randn(2, 4, 9, 9)  # a grid no other test uses
    boxes = torch.tensor([[[1.0, 1.0, 5.0, 6.0]], [[0.0, 2.0, 8.0, 9.0]]])
    from distill.sokd.dam import decode_mask, split_sides
    with torch.inference_mode():
        out = dam.run(ft, fs)
        teacher_side, student_side = split_sides(out, 1)
        consistency_loss(student_side, teacher_side)
        anchoring_loss(teacher_side, centernet_targets(boxes, None, 1, 9, 9))
        decode_mask(out, 1, 2)
    out = dam.run(ft, fs.requires_grad_())
    teacher_side, student_side = split_sides(out, 1)
    (consistency_loss(student_side, teacher_side)
     + anchoring_loss(teacher_side, centernet_targets(boxes, None, 1, 9, 9))).backward()
    assert fs.grad.abs().sum() > 0


@pytest.mark.parametrize('num_classes', [1, 2])
@pytest.mark.parametrize('anchor', [True, False])
def test_one_pass_losses_equal_the_separate_losses(num_classes, anchor):
    """``pass_losses`` (one sigmoid for both losses and the mask, the centres as the focal
    loss's peaks) gives ``consistency_loss``, ``anchoring_loss`` and the decoded mask of
    ``split_sides``, values and gradients bit for bit, including two boxes of two classes
    centred in one cell (two peaks, one centre)."""
    from distill.sokd.dam import decode_mask, pass_losses, split_sides
    torch.manual_seed(1)
    dam = DAM(teacher_channels=6, student_channels=4, channels=8, num_classes=num_classes)
    with torch.no_grad():
        for param in dam.parameters():
            param.add_(0.3 * torch.randn_like(param))
    ft = torch.randn(3, 6, 7, 7)
    boxes = _random_boxes(torch.Generator().manual_seed(3), 3, 7)
    boxes[2] = torch.tensor([[1.0, 1.0, 4.0, 4.0], [2.0, 2.0, 3.0, 3.0]])  # one centre cell
    labels = [torch.arange(len(b)) % num_classes for b in boxes]
    targets = centernet_targets(boxes, labels, num_classes, 7, 7) if anchor else None
    results = []
    for fused in (False, True):
        dam.zero_grad()
        fs = torch.randn(3, 4, 7, 7, generator=torch.Generator().manual_seed(5),
                         requires_grad=True)
        out = dam.run(ft, fs)
        if fused:
            consistency, anchoring, prob = pass_losses(out, num_classes, targets)
            mask = decode_mask(out, num_classes, 2, 4, 0.2, heatmap_prob=prob.detach())
        else:
            teacher_side, student_side = split_sides(out, num_classes)
            consistency = consistency_loss(student_side, teacher_side)
            anchoring = anchoring_loss(teacher_side, targets) if anchor else None
            mask = decode_mask(out, num_classes, 2, 4, 0.2)
        loss = consistency + (anchoring if anchor else 0.0)
        loss.backward()
        results.append((consistency, anchoring, mask, fs.grad,
                        [p.grad.clone() for p in dam.parameters()]))
    (c0, a0, m0, g0, w0), (c1, a1, m1, g1, w1) = results
    # bit for bit: the runs measured before this function keep their numbers
    assert torch.equal(c1, c0) and torch.equal(m1, m0) and torch.equal(g1, g0)
    assert torch.equal(a1, a0) if anchor else a1 is None
    assert all(torch.equal(got, want) for got, want in zip(w1, w0))
