"""Write a detection set (the synthetic shapes, or the Fashion-MNIST garment canvases) in the
COCO format.

    root/images/{train,val}/00000.png
    root/annotations/instances_{train,val}.json   COCO: images, annotations (bbox x,y,w,h,
                                                  area = visible pixels, iscrowd), categories

MMDetection's ``CocoDataset`` with ``metainfo=dict(classes=shape_class_names(K))`` reads it
and ``CocoMetric`` (pycocotools) evaluates on it. Written once, atomically (see
``mmseg_layout.write_into_place``).

``check_annotation_files(cfg)`` reads every COCO annotation JSON a config's dataloaders name
and fails naming the file (and the line and column) when one is truncated or not COCO; what
MMDetection itself raises there is a bare ``JSONDecodeError`` that names no file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from distill.data.mmseg_layout import SPLIT_SEEDS, write_into_place
from distill.data.shapes import render_shapes, shape_class_names


def coco_dict(render, split: str, count: int, class_names, description: str,
              save_images_to=None) -> dict:
    """The COCO annotation dict of one split, ``render(index, split)`` per image (a dict with
    ``image``, ``instances``, ``boxes``, ``box_labels``, as ``render_shapes`` returns), and its
    images if ``save_images_to``."""
    images, annotations = [], []
    for index in range(count):
        sample = render(index, split)
        height, width = sample['image'].shape[:2]
        file_name = f'{index:05d}.png'
        if save_images_to is not None:
            Image.fromarray(sample['image']).save(save_images_to / file_name)
        images.append(dict(id=index + 1, file_name=file_name, height=height, width=width))
        for box_index, (box, label) in enumerate(zip(sample['boxes'], sample['box_labels'])):
            x1, y1, x2, y2 = (float(v) for v in box)
            area = float(np.count_nonzero(sample['instances'] == box_index + 1))
            annotations.append(dict(id=len(annotations) + 1, image_id=index + 1,
                                    category_id=int(label) + 1, bbox=[x1, y1, x2 - x1, y2 - y1],
                                    area=area, iscrowd=0, segmentation=[]))
    categories = [dict(id=k + 1, name=name, supercategory='object')
                  for k, name in enumerate(class_names)]
    return dict(images=images, annotations=annotations, categories=categories,
                info=dict(description=f'{description} ({split})'), licenses=[])


def shapes_coco_dict(split: str, count: int, image_size: int, num_classes: int,
                     num_objects, seed: int, save_images_to=None) -> dict:
    """The COCO annotation dict of one split of the shapes set (and its images)."""
    def render(index, split):
        return render_shapes(index, seed=seed * 10 + SPLIT_SEEDS[split], image_size=image_size,
                             num_classes=num_classes, num_objects=num_objects)
    return coco_dict(render, split, count, shape_class_names(num_classes), 'synthetic shapes',
                     save_images_to)


def write_coco(root, write_split, counts: dict) -> Path:
    """Write (once) ``images/<split>/`` and ``annotations/instances_<split>.json`` under
    ``root``; ``write_split(split, count, image_dir)`` returns the split's COCO dict."""
    def write(tmp):
        (tmp / 'annotations').mkdir()
        for split, count in counts.items():
            image_dir = tmp / 'images' / split
            image_dir.mkdir(parents=True)
            coco = write_split(split, count, image_dir)
            with open(tmp / 'annotations' / f'instances_{split}.json', 'w') as f:
                json.dump(coco, f)
    return write_into_place(root, write)


def write_shapes_coco(root, num_train: int = 32, num_val: int = 16, image_size: int = 64,
                      num_classes: int = 6, num_objects=(1, 3), seed: int = 0):
    """Write (once) the shapes detection set under ``root``; return ``root``."""
    return write_coco(root, lambda split, count, image_dir: shapes_coco_dict(
        split, count, image_size, num_classes, num_objects, seed, save_images_to=image_dir),
        dict(train=num_train, val=num_val))


def write_garments_coco(root, num_train: int = 2000, num_val: int = 500, image_size: int = 64,
                        num_objects=(1, 3), seed: int = 0,
                        fmnist_root='/usr/share/datasets/fashion-mnist', classes: str = 'fine'):
    """Write (once) the Fashion-MNIST garment canvases (``distill.data.garments``) as a COCO
    detection set under ``root``: one box per visible garment, 10 categories (5 coarse)."""
    if Path(root).is_dir():
        return Path(root)
    from distill.data.garments import GarmentRenderer
    render = GarmentRenderer(fmnist_root, seed=seed, image_size=image_size,
                             num_objects=num_objects, classes=classes)
    return write_coco(root, lambda split, count, image_dir: coco_dict(
        render, split, count, render.class_names, 'Fashion-MNIST garments', image_dir),
        dict(train=num_train, val=num_val))


COCO_KEYS = ('images', 'annotations', 'categories')


def read_coco_json(path) -> dict:
    """Parse one COCO annotation file; ``ValueError`` naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'COCO annotation file not found: {path}')
    try:
        with open(path, encoding='utf-8') as file:
            data = json.load(file)
    except json.JSONDecodeError as err:
        raise ValueError(f'{path} is not valid JSON (truncated?): {err.msg} at line '
                         f'{err.lineno}, column {err.colno}') from err
    except UnicodeDecodeError as err:
        raise ValueError(f'{path} is not a UTF-8 JSON file: {err}') from err
    missing = [key for key in COCO_KEYS if not isinstance(data, dict) or key not in data]
    if missing:
        raise ValueError(f'{path} is not a COCO annotation file: no {", ".join(missing)}')
    return data


def _annotation_files(cfg):
    """(section, path) of every ``ann_file`` ending in .json under the dataloaders of a
    config, joined to its ``data_root`` as MMEngine datasets do."""
    for section in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        stack = [(section, (cfg.get(section) or {}).get('dataset'), '')]
        while stack:
            where, dataset, root = stack.pop()
            if not isinstance(dataset, dict):
                continue
            root = dataset.get('data_root') or root
            ann_file = dataset.get('ann_file')
            if isinstance(ann_file, str) and ann_file.endswith('.json'):
                full = ann_file if os.path.isabs(ann_file) or not root else os.path.join(
                    root, ann_file)
                yield f'{where}.dataset.ann_file', full
            inner = dataset.get('dataset')  # RepeatDataset, ClassBalancedDataset, ...
            if isinstance(inner, dict):
                stack.append((f'{where}.dataset', inner, root))
            for i, item in enumerate(dataset.get('datasets') or []):  # ConcatDataset
                stack.append((f'{where}.datasets[{i}]', item, root))


def check_annotation_files(cfg) -> None:
    """Parse each local COCO JSON of the config's dataloaders once, before the Runner does:
    a bad file fails naming it and the config key that points to it."""
    seen = set()
    for key, path in _annotation_files(cfg):
        if path in seen or '://' in path:  # remote backends: left to MMEngine
            continue
        seen.add(path)
        try:
            read_coco_json(path)
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(f'{key}: {err}') from err
