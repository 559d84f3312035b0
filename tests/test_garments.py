"""The Fashion-MNIST garment canvases: masks, boxes and both layouts, on tiny idx files."""
import json

import numpy as np
import pytest
from PIL import Image

from distill.data.coco_layout import write_garments_coco
from distill.data.garments import (MASK_ALPHA, GarmentRenderer, load_backgrounds,
                                   render_garments)
from distill.data.mmseg_layout import write_garments_mmseg

from fmnist_helpers import garment_blocks, write_fmnist


@pytest.fixture(scope='module')
def fmnist_root(tmp_path_factory):
    return write_fmnist(tmp_path_factory.mktemp('fmnist'))


def _box(pixels):
    rows, cols = np.nonzero(pixels)
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_canvas_masks_and_boxes_follow_thegarment_blocks():
    images, labels = garment_blocks(5, 2)
    backgrounds = [np.full((40, 40, 3), 30, np.uint8), np.full((50, 60, 3), 90, np.uint8)]
    for index in range(15):
        sample = render_garments(index, images, labels, backgrounds, seed=3, image_size=48)
        again = render_garments(index, images, labels, backgrounds, seed=3, image_size=48)
        for key in sample:
            np.testing.assert_array_equal(sample[key], again[key])
        assert sample['image'].shape == (48, 48, 3) and sample['image'].dtype == np.uint8
        assert set(np.unique(sample['mask'])) <= {0, *(labels + 1)}
        assert sample['mask'].any()
        for box_index, (box, label) in enumerate(zip(sample['boxes'], sample['box_labels'])):
            visible = sample['instances'] == box_index + 1
            np.testing.assert_array_equal(box, _box(visible))
            assert (sample['mask'][visible] == label + 1).all()
        assert ((sample['instances'] > 0) <= (sample['mask'] > 0)).all()
        assert sample['label'] == (sample['box_labels'][0] if len(sample['boxes']) else -1)
    with pytest.raises(ValueError, match='garments and'):
        render_garments(0, images, labels[:3], backgrounds)


def test_one_garment_is_labelled_where_it_is_opaque():
    # a single block of known intensity: labelled exactly where alpha >= MASK_ALPHA
    block = np.zeros((1, 28, 28), np.uint8)
    block[0, 4:24, 6:20] = 200
    sample = render_garments(0, block, np.array([7]), [np.zeros((30, 30, 3), np.uint8)],
                             image_size=28, num_objects=1, scale_range=(1.0, 1.0),
                             noise_std=0.0)
    assert 200 / 255 >= MASK_ALPHA
    labelled = sample['mask'] == 8
    assert labelled.sum() == 20 * 14 and set(np.unique(sample['mask'])) == {0, 8}
    np.testing.assert_array_equal(sample['boxes'][0], _box(labelled))


def test_backgrounds_are_real_images_shipped_with_matplotlib():
    backgrounds = load_backgrounds()
    assert len(backgrounds) == 4
    for image in backgrounds:
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        assert min(image.shape[:2]) >= 64 and image.std() > 10


def test_both_layouts_from_idx_files(fmnist_root, tmp_path):
    seg = write_garments_mmseg(tmp_path / 'seg', num_train=4, num_val=3, image_size=32,
                               fmnist_root=fmnist_root)
    for split, count in (('train', 4), ('val', 3)):
        images = sorted((seg / 'img_dir' / split).glob('*.png'))
        masks = sorted((seg / 'ann_dir' / split).glob('*.png'))
        assert len(images) == len(masks) == count
        mask = np.asarray(Image.open(masks[0]))
        assert mask.shape == (32, 32) and mask.max() <= 10
    coco_root = write_garments_coco(tmp_path / 'coco', num_train=4, num_val=3, image_size=32,
                                    fmnist_root=fmnist_root)
    from pycocotools.coco import COCO
    for split, count in (('train', 4), ('val', 3)):
        path = coco_root / 'annotations' / f'instances_{split}.json'
        coco = COCO(str(path))
        assert len(coco.getImgIds()) == count and len(coco.getCatIds()) == 10
        for ann in json.loads(path.read_text())['annotations']:
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0 and x + w <= 32 and y + h <= 32
            assert 1 <= ann['category_id'] <= 10
        assert len(list((coco_root / 'images' / split).glob('*.png'))) == count
    # validation canvases take the test garments: the two splits' renderers differ
    render = GarmentRenderer(fmnist_root, image_size=32)
    assert len(render.splits['train'][0]) == 12 and len(render.splits['val'][0]) == 6
