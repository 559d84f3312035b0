"""Data: the shapes generator, dataset loaders, batch augmentation."""
import pickle

import numpy as np
import pytest
import torch

from distill.data import (CIFAR10, CIFAR100, ImageFolder, ShapesClassification, build_dataset,
                          collate_classification, render_shapes, shape_class_names,
                          write_shapes_imagefolder)
from distill.data.transforms import normalize, random_crop_flip
from distill.data.writers import shapes_class_folder_names


# ---------------------------------------------------------------- shapes generator

def _pixel_box(pixels):
    """x1, y1, x2, y2 (exclusive) of the True pixels."""
    rows, cols = np.nonzero(pixels)
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_render_shapes_is_deterministic_per_seed():
    first, again = render_shapes(7, seed=3), render_shapes(7, seed=3)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    other_seed = render_shapes(7, seed=4)
    assert not np.array_equal(first['image'], other_seed['image'])
    assert not np.array_equal(first['image'], render_shapes(8, seed=3)['image'])


def test_render_shapes_output_format():
    sample = render_shapes(0, image_size=40, num_objects=3)
    assert sample['image'].shape == (40, 40, 3) and sample['image'].dtype == np.uint8
    assert sample['mask'].shape == (40, 40) and sample['mask'].dtype == np.int64
    assert sample['boxes'].dtype == np.float32 and sample['boxes'].shape[1] == 4
    assert sample['box_labels'].dtype == np.int64
    assert len(sample['boxes']) == len(sample['box_labels']) <= 3


def test_single_object_box_is_tight_around_its_mask():
    for index in range(40):
        sample = render_shapes(index, seed=0)
        label = sample['label']
        assert set(np.unique(sample['mask'])) == {0, label + 1}
        assert sample['box_labels'].tolist() == [label]
        np.testing.assert_array_equal(sample['boxes'][0], _pixel_box(sample['mask'] > 0))


def test_occluded_objects_keep_visible_pixels_only():
    for index in range(20):
        sample = render_shapes(index, seed=1, image_size=48, num_objects=(2, 4),
                               size_range=(0.15, 0.3))
        assert sample['box_labels'][0] == sample['label']  # object 0 is on top
        for box_index, (box, label) in enumerate(zip(sample['boxes'], sample['box_labels'])):
            visible = sample['instances'] == box_index + 1
            assert visible.any()
            np.testing.assert_array_equal(box, _pixel_box(visible))
            assert (sample['mask'][visible] == label + 1).all()
        assert ((sample['instances'] > 0) == (sample['mask'] > 0)).all()


def test_classes_vary_and_num_classes_limits_them():
    labels = {render_shapes(i, seed=0)['label'] for i in range(60)}
    assert labels == set(range(6))
    assert {render_shapes(i, num_classes=3)['label'] for i in range(30)} <= {0, 1, 2}
    assert len(shape_class_names(10)) == 10
    with pytest.raises(ValueError, match='num_classes'):
        render_shapes(0, num_classes=99)


def test_shapes_classification_dataset():
    dataset = build_dataset(dict(type='ShapesClassification', num_samples=12, seed=2,
                                 image_size=24))
    assert isinstance(dataset, ShapesClassification) and len(dataset) == 12
    assert dataset.classes == shape_class_names(6)
    item = dataset[3]
    assert item['inputs'].shape == (3, 24, 24) and item['inputs'].dtype == torch.float32
    assert 0.0 <= item['inputs'].min() and item['inputs'].max() <= 1.0
    assert item['labels'] == render_shapes(3, seed=2, image_size=24)['label']
    assert dataset[3]['inputs'] is item['inputs']  # cached, not rendered again
    batch = collate_classification([dataset[i] for i in range(4)])
    assert batch['inputs'].shape == (4, 3, 24, 24) and batch['labels'].dtype == torch.long
    with pytest.raises(IndexError):
        dataset[12]


# ---------------------------------------------------------------- ImageFolder

def test_image_folder_reads_the_written_shapes(tmp_path):
    splits = write_shapes_imagefolder(tmp_path, num_train=18, num_val=6, seed=0)
    train = build_dataset(dict(type='ImageFolder', root=str(splits['train'])))
    val = ImageFolder(splits['val'], image_size=16)
    assert train.classes == val.classes == shapes_class_folder_names(6)
    assert len(train) == 18 and len(val) == 6
    # Folder names sort like the class indices, so labels agree with the in-memory set.
    shapes = ShapesClassification(num_samples=18, seed=0)
    for path, label in train.samples:  # files are named by their sample index
        assert label == shapes[int(path.stem)]['labels']
    item = train[0]
    assert item['inputs'].shape == (3, 32, 32)
    assert val[0]['inputs'].shape == (3, 16, 16)
    assert ImageFolder(splits['val'], image_size=(8, 12))[0]['inputs'].shape == (3, 8, 12)


def test_images_of_mixed_sizes_are_named_with_the_fix(tmp_path):
    from PIL import Image
    from distill.data import collate_classification
    for name, size in (('a.png', (12, 10)), ('b.png', (16, 16))):
        (tmp_path / 'mixed' / 'cat').mkdir(parents=True, exist_ok=True)
        Image.new('RGB', size).save(tmp_path / 'mixed' / 'cat' / name)
    folder = ImageFolder(tmp_path / 'mixed')
    with pytest.raises(ValueError, match=r'different sizes in one batch: \(3, 10, 12\), '
                                         r'\(3, 16, 16\).*data.train.image_size'):
        collate_classification([folder[0], folder[1]])
    resized = ImageFolder(tmp_path / 'mixed', image_size=8)
    assert collate_classification([resized[0], resized[1]])['inputs'].shape == (2, 3, 8, 8)


def test_image_folder_clear_errors_for_missing_or_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere'):
        ImageFolder(tmp_path / 'nowhere')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no class folders'):
        ImageFolder(tmp_path / 'empty')
    (tmp_path / 'no_images' / 'cat').mkdir(parents=True)
    (tmp_path / 'no_images' / 'cat' / 'notes.txt').write_text('not an image')
    with pytest.raises(ValueError, match='no image files'):
        ImageFolder(tmp_path / 'no_images')


def test_empty_class_folders_are_named_in_one_warning_line_of_the_run_log(tmp_path, caplog):
    """A class folder without images stays a class that nothing teaches: training went on
    without a word; one warning line now names the folders and their count (train.log too)."""
    from PIL import Image
    from distill.engines.core.runtime import log_to
    for name in 'abcd':
        (tmp_path / 'tree' / name).mkdir(parents=True)
    for name in 'ac':
        Image.new('RGB', (4, 4)).save(tmp_path / 'tree' / name / '0.png')
    (tmp_path / 'tree' / 'd' / 'notes.txt').write_text('no image')
    with caplog.at_level('WARNING'):
        dataset = ImageFolder(tmp_path / 'tree')
    assert dataset.empty_classes == ['b', 'd'] and dataset.classes == ['a', 'b', 'c', 'd']
    [record] = [r for r in caplog.records if r.levelname == 'WARNING']
    line = f"image folder {tmp_path / 'tree'}: 2 of 4 class folders hold no image file (b, d)"
    assert record.getMessage().startswith(line) and '\n' not in record.getMessage()
    with log_to(tmp_path / 'run', True):  # in a run: its train.log
        ImageFolder(tmp_path / 'tree')
    assert line in (tmp_path / 'run' / 'train.log').read_text()


def test_image_folder_names_the_corrupt_file(tmp_path):
    splits = write_shapes_imagefolder(tmp_path, num_train=6, num_val=0)
    class_dir = splits['train'] / shapes_class_folder_names(6)[0]
    corrupt = class_dir / 'ZZ_corrupt.PNG'  # upper-case extension is still an image
    corrupt.write_bytes(b'this is not a png at all' * 10)
    dataset = ImageFolder(splits['train'])
    assert len(dataset) == 7
    bad_index = [str(path) for path, _ in dataset.samples].index(str(corrupt))
    with pytest.raises(ValueError, match='ZZ_corrupt.PNG'):
        dataset[bad_index]
    with pytest.raises(ValueError, match='ZZ_corrupt.PNG'):
        dataset.verify()
    assert dataset.verify(raise_error=False) == [corrupt]


# ---------------------------------------------------------------- CIFAR pickles

def _dump(path, obj):
    with open(path, 'wb') as file:
        pickle.dump(obj, file)


def _fake_batch(num, num_classes, label_key, seed):
    rng = np.random.default_rng(seed)
    return {b'data': rng.integers(0, 256, size=(num, 3072), dtype=np.uint8),
            label_key: rng.integers(0, num_classes, size=num).tolist()}


def test_cifar100_reads_the_python_pickles(tmp_path):
    folder = tmp_path / 'cifar-100-python'
    folder.mkdir()
    train = _fake_batch(5, 100, b'fine_labels', seed=0)
    _dump(folder / 'train', train)
    _dump(folder / 'test', _fake_batch(3, 100, b'fine_labels', seed=1))
    _dump(folder / 'meta', {b'fine_label_names': [f'class{i}'.encode() for i in range(100)]})

    for root in (tmp_path, folder):  # the folder or its parent
        dataset = CIFAR100(root)
        assert len(dataset) == 5 and dataset.classes[:2] == ['class0', 'class1']
    item = dataset[2]
    assert item['labels'] == train[b'fine_labels'][2]
    # Row layout: 1024 red, then green, then blue values, each row-major 32x32.
    expected = torch.from_numpy(train[b'data'][2].reshape(3, 32, 32)).float() / 255
    torch.testing.assert_close(item['inputs'], expected)
    assert len(build_dataset(dict(type='CIFAR100', root=str(tmp_path), train=False))) == 3


def test_cifar_missing_files_name_the_expected_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='cifar-100-python.*train'):
        CIFAR100(tmp_path)
    with pytest.raises(FileNotFoundError, match='data_batch_1'):
        CIFAR10(tmp_path)


def test_cifar10_reads_the_python_pickles(tmp_path):
    folder = tmp_path / 'cifar-10-batches-py'
    folder.mkdir()
    for i in range(1, 6):
        _dump(folder / f'data_batch_{i}', _fake_batch(2, 10, b'labels', seed=i))
    _dump(folder / 'test_batch', _fake_batch(4, 10, b'labels', seed=9))
    _dump(folder / 'batches.meta', {b'label_names': [f'c{i}'.encode() for i in range(10)]})
    assert len(CIFAR10(tmp_path)) == 10 and len(CIFAR10(folder, train=False)) == 4
    assert CIFAR10(tmp_path).classes[9] == 'c9'


# ---------------------------------------------------------------- batch transforms

def test_random_crop_flip_is_reproducible_and_keeps_shape():
    images = torch.rand(6, 3, 10, 12)
    out = random_crop_flip(images, padding=3, generator=torch.Generator().manual_seed(5))
    again = random_crop_flip(images, padding=3, generator=torch.Generator().manual_seed(5))
    assert out.shape == images.shape
    torch.testing.assert_close(out, again)
    other = random_crop_flip(images, padding=3, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(out, other)


def test_random_crop_flip_identity_and_flip():
    images = torch.rand(4, 3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    torch.testing.assert_close(
        random_crop_flip(images, padding=0, generator=generator, flip_prob=0.0), images)
    torch.testing.assert_close(
        random_crop_flip(images, padding=0, generator=generator, flip_prob=1.0),
        images.flip(-1))


def test_random_crop_flip_outputs_are_windows_of_the_padded_image():
    images = torch.rand(8, 2, 6, 6) + 1.0  # nonzero, so padding shows as exact zeros
    out = random_crop_flip(images, padding=2, generator=torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for sample, result in zip(padded, out):
        windows = [candidate
                   for y in range(5) for x in range(5)
                   for candidate in (sample[:, y:y + 6, x:x + 6],
                                     sample[:, y:y + 6, x:x + 6].flip(-1))]
        assert any(torch.equal(result, window) for window in windows)


def test_normalize():
    images = torch.full((2, 3, 4, 4), 0.5)
    out = normalize(images, mean=(0.5, 0.25, 0.0), std=(1.0, 0.5, 0.25))
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.0, 0.5, 2.0]))


def test_cifar_empty_or_damaged_pickles_name_the_file(tmp_path):
    folder = tmp_path / 'cifar-100-python'
    folder.mkdir()
    _dump(folder / 'train', _fake_batch(5, 100, b'fine_labels', seed=0))
    _dump(folder / 'test', _fake_batch(3, 100, b'fine_labels', seed=1))
    (folder / 'meta').write_bytes(b'')  # empty: pickle says only EOFError
    with pytest.raises(ValueError, match=r"meta' is not a readable CIFAR pickle.*EOFError"):
        CIFAR100(tmp_path)
    _dump(folder / 'meta', {b'coarse_label_names': []})
    with pytest.raises(ValueError, match=r"meta' is not a CIFAR meta file: no key "
                                         r"b'fine_label_names'"):
        CIFAR100(tmp_path)
    (folder / 'train').write_bytes((folder / 'test').read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match=r"train' is not a readable CIFAR pickle"):
        CIFAR100(tmp_path)


def test_16_bit_grey_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    from distill.data.folders import load_rgb_image
    grey16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)  # 0 .. 63000
    Image.fromarray(grey16).save(tmp_path / 'g16.png')
    with Image.open(tmp_path / 'g16.png') as image:
        assert image.mode.startswith('I;16')
    rgb = load_rgb_image(tmp_path / 'g16.png')
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    expected = np.rint(grey16 / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], expected)
    np.testing.assert_array_equal(rgb[..., 2], expected)
    assert (rgb == 255).mean() < 0.05  # clipping made almost every pixel 255
    Image.fromarray(grey16.astype(np.uint8)).save(tmp_path / 'g8.png')  # 8-bit: unchanged
    np.testing.assert_array_equal(load_rgb_image(tmp_path / 'g8.png')[..., 1],
                                  grey16.astype(np.uint8))


def test_coco_annotation_files_are_named_when_damaged(tmp_path):
    from distill.data.coco_layout import (check_annotation_files, read_coco_json,
                                          write_shapes_coco)
    root = write_shapes_coco(tmp_path / 'coco', num_train=3, num_val=2, image_size=32)
    cfg = dict(train_dataloader=dict(dataset=dict(
                   type='RepeatDataset', times=2,
                   dataset=dict(data_root=str(root),
                                ann_file='annotations/instances_train.json'))),
               val_dataloader=dict(dataset=dict(data_root=str(root),
                                                ann_file='annotations/instances_val.json')))
    check_annotation_files(cfg)  # both good
    val = root / 'annotations' / 'instances_val.json'
    val.write_text(val.read_text()[:50])
    with pytest.raises(ValueError, match=r'val_dataloader\.dataset\.ann_file: .*instances_val'
                                         r'\.json is not valid JSON \(truncated\?\).*line 1'):
        check_annotation_files(cfg)
    val.write_text('{"images": []}')
    with pytest.raises(ValueError, match=r'instances_val\.json is not a COCO annotation file: '
                                         r'no annotations, categories'):
        read_coco_json(val)
    (root / 'annotations' / 'instances_train.json').unlink()
    with pytest.raises(FileNotFoundError, match=r'train_dataloader\.dataset\.dataset\.ann_file'):
        check_annotation_files(cfg)


def test_coco_annotations_mmdet_drops_are_counted_in_one_warning_line(tmp_path):
    """Boxes outside their image, of zero area or of a category outside the classes were
    dropped by MMDetection's CocoDataset without a word; the check before training counts them,
    one line per file, with the counts per kind (the same ones CocoDataset drops)."""
    import json
    from distill.data.coco_layout import check_annotation_files, write_shapes_coco
    from distill.data.shapes import shape_class_names
    root = write_shapes_coco(tmp_path / 'coco', num_train=3, num_val=2, image_size=32)
    path = root / 'annotations' / 'instances_train.json'
    data = json.loads(path.read_text())
    template = data['annotations'][0]
    extra = [dict(bbox=[40, 40, 5, 5]), dict(bbox=[-9, 2, 6, 6]),  # outside the 32x32 image
             dict(bbox=[2, 2, 0.5, 8]), dict(area=0.0),  # under 1 px a side, zero area
             dict(category_id=99)]  # no such category
    for i, change in enumerate(extra):
        data['annotations'].append(dict(template, id=1000 + i, **change))
    path.write_text(json.dumps(data))
    total = len(data['annotations'])
    classes = shape_class_names(6)
    cfg = dict(train_dataloader=dict(dataset=dict(
        data_root=str(root), ann_file='annotations/instances_train.json',
        metainfo=dict(classes=classes[1:]))))  # 'disk' (id 1) left out of the classes
    disks = sum(a['category_id'] == 1 for a in data['annotations'][:-len(extra)])
    [line] = check_annotation_files(cfg)
    assert line == (f"train_dataloader.dataset.ann_file: {path}: MMDetection's CocoDataset "
                    f'drops {5 + disks} of its {total} annotations without a word: 2 outside '
                    f'the image; 2 of zero area (area <= 0 or a side < 1 px); {1 + disks} of '
                    f"category ids not among the classes of the data set's metainfo (ids 1, 99)")
    cfg['train_dataloader']['dataset'].pop('metainfo')
    assert check_annotation_files(cfg)[0].endswith('1 of category ids not among the classes '
                                                   'of the file (ids 99)')
    pytest.importorskip('mmdet')
    from mmdet.datasets import CocoDataset
    kept = CocoDataset(data_root=str(root), ann_file='annotations/instances_train.json',
                       metainfo=dict(classes=classes[1:]), data_prefix=dict(img='images/train/'),
                       pipeline=[], lazy_init=False)
    assert sum(len(kept.get_data_info(i)['instances']) for i in range(len(kept))) == \
        total - 5 - disks  # what MMDetection itself keeps


def test_a_val_tree_missing_a_class_is_labelled_by_the_train_names(tmp_path, caplog):
    # labels come from each tree's sorted folder names: without the check, val's 'c' images
    # would get label 1 ('b' in train) and every metric would be silently wrong
    from PIL import Image
    from distill.engines.classification.train import build_classification_datasets
    for split, names in (('train', 'abc'), ('val', 'ac')):
        for name in names:
            (tmp_path / split / name).mkdir(parents=True)
            Image.new('RGB', (4, 4)).save(tmp_path / split / name / '0.png')
    cfg = {split: dict(type='ImageFolder', root=str(tmp_path / split))
           for split in ('train', 'val')}
    with caplog.at_level('WARNING'):
        datasets = build_classification_datasets(cfg)
    assert [label for _, label in datasets['val'].samples] == [0, 2]
    assert datasets['val'].classes == ['a', 'b', 'c'] and "['b']" in caplog.text
    (tmp_path / 'val' / 'd').mkdir()
    Image.new('RGB', (4, 4)).save(tmp_path / 'val' / 'd' / '0.png')
    with pytest.raises(ValueError, match=r"data.val has class\(es\) \['d'\] that data.train"):
        build_classification_datasets(cfg)
