# SoKD around KD on ImageNet-1k: timm ResNet-34 (pretrained, frozen) -> ResNet-18 from scratch,
# the torchvision recipe (100 epochs, SGD 0.1 for batch 256, x0.1 at 30, 60, 90).
# Needs timm (pip install timm) and ImageNet in the ImageFolder layout:
#   data/imagenet/train/<wnid>/*.JPEG and data/imagenet/val/<wnid>/*.JPEG
#   accelerate launch --multi_gpu --num_processes 8 tasks/classification/train.py \
#       configs/classification/sokd/imagenet_kd_sokd_resnet34_resnet18.py
# Images are resized to 224x224 when read (no random-resized crop in this engine: padding 16 +
# random crop + flip, applied per batch on the device). Plain KD: distiller=distiller.base.
_base_ = ['../_base_/default_runtime.py']

distiller = dict(
    type='SoKD',
    base=dict(
        type='KD',
        # timm's ResNets: head_input 'layer4' (from feature_info), forward_head = pool + fc
        student=dict(type='timm/resnet18', num_classes=1000, pretrained=False),
        teacher=dict(type='timm/resnet34', num_classes=1000, pretrained=True),
        adapter=dict(type='ClassifierAdapter', probe_input_size=224),
        online=False,
        loss_weights=dict(task=1.0, kd=1.0),
        temperature=1.0,
    ),
    dafa=dict(init_magnitude=0.2),
    # DAM off for classification: on Fashion-MNIST (3 seeds, paired) DAM every step moved the
    # student by -0.46 +- 0.77 (FitNet base) and -0.24 +- 0.40 (KD base) against DAFA alone, at
    # twice the operator calls of a training step; to switch it on (one step in k: interval=k):
    # dam=dict(channels=128, num_classes=1, top_k=8, score_threshold=0.3, beta=0.1,
    #          mask='mutual', cam_threshold=0.5, interval=1),
    dam=None,
    loss_weights=dict(dam=1.0, anchor=1.0),
    arch_interval=10,
    search_epochs=10,
    hypergrad='factored',  # cheapest: no double backward through the student
    xi=0.1,
)
# no weight decay on the policy: it would outweigh the ~1e-5 hypergradient (see SoKD's doc);
# Adam moves each logit by about lr per arch step, and this search has thousands of them
arch_optimizer = dict(type='Adam', lr=3e-3, betas=(0.5, 0.999), weight_decay=0.0)
data = dict(
    train=dict(type='ImageFolder', root='data/imagenet/train', image_size=224),
    val=dict(type='ImageFolder', root='data/imagenet/val', image_size=224),
    batch_size=32,          # per process: 8 processes x 32 = 256
    val_batch_size=100,
    num_workers=8,
    augment=dict(padding=16, flip=True),
    normalize=dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
)
optimizer = dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)
schedule = dict(epochs=100, milestones=[30, 60, 90], gamma=0.1)
