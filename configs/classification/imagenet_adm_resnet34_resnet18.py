# Online ADM on ImageNet-1k with timm models: ResNet-34 (teacher) and ResNet-18 (student),
# trained together from scratch: 100 epochs, SGD lr 0.1 for a total batch of 256, decay by 10
# at epochs 30, 60 and 90. Needs timm (pip install timm) and ImageNet in the ImageFolder
# layout (data/imagenet/{train,val}/<class>/<images>). On 8 GPUs:
#   accelerate launch --multi_gpu --num_processes 8 tasks/classification/train.py \
#       configs/classification/imagenet_adm_resnet34_resnet18.py
# Augmentation is this library's batch-level one: images are resized to 224x224 when read,
# then padded, randomly cropped and flipped on the device. It is not torchvision's
# RandomResizedCrop, so expect accuracies somewhat below the usual ImageNet recipes.
_base_ = ['_base_/default_runtime.py']

distiller = dict(
    type='ADM',
    student=dict(type='timm/resnet18', num_classes=1000, pretrained=False),
    teacher=dict(type='timm/resnet34', num_classes=1000, pretrained=False),
    adapter=dict(type='ClassifierAdapter', probe_input_size=224),
    taps=[dict(student='layer4', teacher='layer4')],  # 512 channels, 7x7, in both
    online=True,
    # the weights measured on Fashion-MNIST (README, Results); not yet validated on ImageNet
    loss_weights=dict(task=1.0, kd=1.0, co=0.1, di=0.01),
    warmup=0.3,
    temperature=1.0,
    tau=1.0,
)
data = dict(
    train=dict(type='ImageFolder', root='data/imagenet/train', image_size=224),
    val=dict(type='ImageFolder', root='data/imagenet/val', image_size=224),
    batch_size=32,      # per process: 8 processes x 32 = 256 (lr 0.1); scale lr with it
    val_batch_size=100,
    num_workers=8,
    augment=dict(padding=28, flip=True),
    normalize=dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
)
optimizer = dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)
schedule = dict(epochs=100, milestones=[30, 60, 90], gamma=0.1)
train = dict(mixed_precision='fp16', log_interval=100, keep_checkpoints=2)  # or 'bf16'
