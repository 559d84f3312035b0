"""Tiny stand-ins for what the shipped configs read, each in the real layout of its source, so a
config runs unchanged but for its sizes: the data sets (Cityscapes, COCO 2017, CIFAR-100, an
ImageNet-style folder, an image folder), a local diffusers model directory, and the pretrained
weights a config names by URL, placed where torch.hub caches a download (the file a user who has
already downloaded them has), so nothing is fetched.

Everything is random: the runs prove that a config starts, trains and validates, not what it
learns.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image

#: the first COCO categories with their real ids (MMDetection's CocoDataset finds categories by
#: name among its 80)
COCO_CATEGORIES = [(1, 'person'), (2, 'bicycle'), (3, 'car'), (4, 'motorcycle'), (5, 'airplane')]


def _image(rng, height, width) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_cityscapes(root, counts=None, size=(64, 128), seed=0) -> Path:
    """``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` and
    ``gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png`` (19 train ids, 255 ignored), as
    Cityscapes' ``createTrainIdLabelImgs`` leaves them."""
    root, rng = Path(root), np.random.default_rng(seed)
    for split, count in (counts or dict(train=2, val=1)).items():
        for index in range(count):
            name = f'standin_{index:06d}_000019'
            image_dir = root / 'leftImg8bit' / split / 'standin'
            label_dir = root / 'gtFine' / split / 'standin'
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_image(rng, *size)).save(image_dir / f'{name}_leftImg8bit.png')
            labels = rng.integers(0, 19, (size[0] // 8, size[1] // 8), dtype=np.uint8)
            labels = labels.repeat(8, 0).repeat(8, 1)
            labels[:4] = 255
            Image.fromarray(labels).save(label_dir / f'{name}_gtFine_labelTrainIds.png')
    return root


def write_coco2017(root, counts=None, size=(96, 128), seed=0) -> Path:
    """``train2017/``, ``val2017/`` and ``annotations/instances_{train,val}2017.json``, the
    COCO 2017 detection layout MMDetection's ``coco_detection.py`` reads."""
    root, rng = Path(root), np.random.default_rng(seed)
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    height, width = size
    for split, count in (counts or dict(train=2, val=1)).items():
        folder = root / f'{split}2017'
        folder.mkdir(exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            file_name = f'{index + 1:012d}.jpg'
            Image.fromarray(_image(rng, height, width)).save(folder / file_name)
            images.append(dict(id=index + 1, file_name=file_name, height=height, width=width))
            for box in range(2):
                w, h = (int(v) for v in rng.integers(16, 48, 2))
                x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
                category = COCO_CATEGORIES[(index + box) % len(COCO_CATEGORIES)][0]
                annotations.append(dict(id=len(annotations) + 1, image_id=index + 1,
                                        category_id=category, bbox=[x, y, w, h],
                                        area=float(w * h), iscrowd=0, segmentation=[]))
        categories = [dict(id=i, name=name, supercategory='object') for i, name in
                      COCO_CATEGORIES]
        with open(root / 'annotations' / f'instances_{split}2017.json', 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories,
                           info={}, licenses=[]), f)
    return root


def write_cifar100(root, num_train=8, num_test=4, seed=0) -> Path:
    """``cifar-100-python/{train,test,meta}``: the pickles of the official archive."""
    folder, rng = Path(root), np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (('train', num_train), ('test', num_test)):
        batch = {b'data': rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 b'fine_labels': [int(v) for v in rng.integers(0, 100, count)],
                 b'coarse_labels': [int(v) for v in rng.integers(0, 20, count)],
                 b'filenames': [f'{split}_{i}.png'.encode() for i in range(count)]}
        with open(folder / split, 'wb') as f:
            pickle.dump(batch, f)
    meta = {b'fine_label_names': [f'class{k}'.encode() for k in range(100)],
            b'coarse_label_names': [f'super{k}'.encode() for k in range(20)]}
    with open(folder / 'meta', 'wb') as f:
        pickle.dump(meta, f)
    return folder


def write_image_folder(root, classes=('n01440764', 'n01443537'), per_class=2, size=(40, 48),
                       suffix='.JPEG', seed=0) -> Path:
    """``root/<class>/<image>``: ImageNet's train/val folders (one folder of images per class),
    or, with one class, a plain folder of images for diffusion."""
    root, rng = Path(root), np.random.default_rng(seed)
    for name in classes:
        folder = root / name if name else root
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            Image.fromarray(_image(rng, *size)).save(folder / f'{name or "img"}_{index}{suffix}')
    return root


def write_diffusers_dir(root, unet: dict, latent_channels=4) -> Path:
    """A local diffusers model directory as ``save_pretrained`` writes it: ``unet/`` (the
    given UNet2DConditionModel config), ``vae/`` (an AutoencoderKL with ``latent_channels``,
    8x downsampling) and ``scheduler/`` (a DDPMScheduler)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    root = Path(root)
    torch.manual_seed(0)
    UNet2DConditionModel(**unet).save_pretrained(root / 'unet')
    # four blocks: latents of 1/8 the image size, as Stable Diffusion's VAE
    AutoencoderKL(block_out_channels=(8,) * 4, norm_num_groups=8, latent_channels=latent_channels,
                  down_block_types=('DownEncoderBlock2D',) * 4,
                  up_block_types=('UpDecoderBlock2D',) * 4).save_pretrained(root / 'vae')
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(root / 'scheduler')
    return root


# ------------------------------------------------------------------------ pretrained weights
#: ``torchvision://NAME`` -> a URL: mmengine reads torchvision's table of model URLs, and
#: torchvision cannot be installed beside this torch build; any URL does, as the file is cached
TORCHVISION_STANDIN = 'https://download.pytorch.org/models/{}-standin.pth'


def hub_cache_path(torch_home, url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` looks for ``url`` before downloading."""
    return Path(torch_home) / 'hub' / 'checkpoints' / os.path.basename(urlparse(url).path)


def checkpoint_url(name: str) -> str | None:
    """The URL mmengine fetches for a checkpoint name (``open-mmlab://``, ``torchvision://``,
    ``http(s)://``); None for a local path."""
    if name.startswith(('http://', 'https://')):
        return name
    if name.startswith('torchvision://'):
        return TORCHVISION_STANDIN.format(name[len('torchvision://'):])
    if name.startswith(('open-mmlab://', 'openmmlab://')):
        from mmengine.runner.checkpoint import get_deprecated_model_names, get_external_models
        key = name.split('://', 1)[1]
        key = get_deprecated_model_names().get(key, key)
        return get_external_models()[key]
    return None


def pretrained_names(model_cfg) -> list[str]:
    """Every ``init_cfg=dict(type='Pretrained', checkpoint=...)`` and ``pretrained=...`` in a
    model config, as (path within the model, checkpoint name)."""
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            init = node.get('init_cfg')
            if isinstance(init, dict) and init.get('type') == 'Pretrained':
                found.append((path, init['checkpoint']))
            if isinstance(node.get('pretrained'), str):
                found.append((path + ('backbone',) if not path else path, node['pretrained']))
            for key, value in node.items():
                walk(value, path + (key,))
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value, path)
    walk(model_cfg, ())
    return found


def cache_weights(torch_home, url: str, state_dict: dict) -> Path:
    path = hub_cache_path(torch_home, url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state_dict=state_dict), path)
    return path


def cache_pretrained_weights(torch_home, mm_config) -> list[str]:
    """For an MMSeg/MMDet distillation config: the stand-in of every pretrained backbone its
    networks name and of a ``teacher_ckpt`` URL (the teacher's full state dict: it is loaded
    strictly), in the torch.hub cache under ``torch_home``; returns the URLs."""
    from distill.engines.mmengine.build import build_mm_model, load_model_cfg
    model = mm_config.model
    scope = model.get('scope', 'mmseg')
    urls = []
    for side in ('student', 'teacher'):
        spec = load_model_cfg(model[side])
        for path, name in pretrained_names(spec.to_dict()):
            url = checkpoint_url(name)
            if url is None or hub_cache_path(torch_home, url).is_file():
                continue
            network = build_mm_model(spec, scope, drop_pretrained=True)
            module = network.get_submodule('.'.join(p for p in path if p != 'init_cfg'))
            cache_weights(torch_home, url, module.state_dict())
            urls.append(url)
    teacher_ckpt = model.get('teacher_ckpt')
    if teacher_ckpt and checkpoint_url(teacher_ckpt):
        teacher = build_mm_model(model.teacher, scope, drop_pretrained=True)
        cache_weights(torch_home, checkpoint_url(teacher_ckpt), teacher.state_dict())
        urls.append(teacher_ckpt)
    return urls


#: run a task script as ``python SCRIPT ARGS`` would, with mmengine's table of torchvision
#: model URLs standing in for torchvision's (see TORCHVISION_STANDIN)
STANDIN_RUN = f"""
import runpy, sys
import mmengine.runner.checkpoint as checkpoint
checkpoint.get_torchvision_models = lambda: {{
    n: {TORCHVISION_STANDIN!r}.format(n)
    for n in ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')}}
script, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(script, run_name='__main__')
"""
