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
MMDetection itself raises there is a bare ``JSONDecodeError`` that names no file. It also counts
the annotations MMDetection's ``CocoDataset`` drops without a word (``dropped_annotations``) and
warns in one line per file.
"""
from __future__ import annotations

import json
import logging
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


#: why ``CocoDataset.parse_data_info`` drops an annotation, in the order it tests them
DROP_REASONS = dict(outside='outside the image', zero_area='of zero area (area <= 0 or a side '
                    '< 1 px)', category='of category ids not among the classes')


def dropped_annotations(data: dict, classes=None) -> tuple[dict, set]:
    """``({reason: count}, unknown category ids)`` of the annotations of a COCO dict that
    MMDetection's ``CocoDataset`` drops as it reads them (its ``parse_data_info``, whose tests
    these are): a box that does not overlap its image, one of zero area or under 1 px a side, a
    category not among the data set's ``classes`` (matched by name, as ``get_cat_ids`` does;
    None: the file's own categories). Annotations marked ``ignore``, of no image, or malformed
    (which MMDetection fails on by itself) are not counted."""
    images = {image.get('id'): image for image in data['images'] if isinstance(image, dict)}
    known = {cat.get('id') for cat in data['categories'] if isinstance(cat, dict)
             and (classes is None or cat.get('name') in classes)}
    counts, unknown = dict.fromkeys(DROP_REASONS, 0), set()
    for ann in data['annotations']:
        image = images.get(ann.get('image_id')) if isinstance(ann, dict) else None
        if image is None or ann.get('ignore', False):
            continue
        try:
            x1, y1, w, h = (float(v) for v in ann['bbox'])
            inter_w = max(0, min(x1 + w, image['width']) - max(x1, 0))
            inter_h = max(0, min(y1 + h, image['height']) - max(y1, 0))
            area = float(ann['area'])
        except (KeyError, TypeError, ValueError):
            continue
        if inter_w * inter_h == 0:
            counts['outside'] += 1
        elif area <= 0 or w < 1 or h < 1:
            counts['zero_area'] += 1
        elif ann.get('category_id') not in known:
            counts['category'] += 1
            unknown.add(ann.get('category_id'))
    return counts, unknown


def describe_dropped(path, data: dict, classes=None) -> str | None:
    """One line naming ``path`` and how many of its annotations ``CocoDataset`` drops, per
    reason; None when it drops none."""
    counts, unknown = dropped_annotations(data, classes)
    if not any(counts.values()):
        return None
    kinds = [f'{count} {DROP_REASONS[reason]}' for reason, count in counts.items() if count]
    if counts['category']:
        ids = ', '.join(map(str, sorted(unknown, key=str)))
        kinds[-1] += (f" of the data set's metainfo (ids {ids})" if classes is not None
                      else f' of the file (ids {ids})')
    return (f"{path}: MMDetection's CocoDataset drops {sum(counts.values())} of its "
            f"{len(data['annotations'])} annotations without a word: {'; '.join(kinds)}")


def _annotation_files(cfg):
    """(section, path, classes) of every ``ann_file`` ending in .json under the dataloaders
    of a config, joined to its ``data_root`` as MMEngine datasets do; ``classes``: the data
    set's ``metainfo.classes`` (None where the config gives none)."""
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
                classes = (dataset.get('metainfo') or {}).get('classes')
                yield f'{where}.dataset.ann_file', full, classes
            inner = dataset.get('dataset')  # RepeatDataset, ClassBalancedDataset, ...
            if isinstance(inner, dict):
                stack.append((f'{where}.dataset', inner, root))
            for i, item in enumerate(dataset.get('datasets') or []):  # ConcatDataset
                stack.append((f'{where}.datasets[{i}]', item, root))


def check_annotation_files(cfg) -> list[str]:
    """Parse each local COCO JSON of the config's dataloaders once, before the Runner does:
    a bad file fails naming it and the config key that points to it. Annotations that
    MMDetection would drop silently are counted: one warning line per file (returned too)."""
    from mmengine.logging import print_log
    seen, warnings = set(), []
    for key, path, classes in _annotation_files(cfg):
        classes = None if classes is None else tuple(classes)
        if (path, classes) in seen or '://' in path:  # remote backends: left to MMEngine
            continue
        seen.add((path, classes))
        try:
            data = read_coco_json(path)
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(f'{key}: {err}') from err
        dropped = describe_dropped(path, data, classes)
        if dropped is not None:
            warnings.append(f'{key}: {dropped}')
            print_log(warnings[-1], logger='current', level=logging.WARNING)
    return warnings
