# KD baseline on CIFAR-100, resnet32x4 (trained, frozen) -> resnet8x4: 0.1 * CE + 0.9 * T^2 KL,
# T = 4 (mdistiller's KD setting).
#   python tasks/classification/train.py configs/classification/sokd/cifar100_kd_resnet32x4_resnet8x4.py
_base_ = ['../_base_/cifar100.py', '../_base_/schedule_240e.py', '../_base_/default_runtime.py']

distiller = dict(
    type='KD',
    student=dict(type='resnet8x4', num_classes=100),
    teacher=dict(type='resnet32x4', num_classes=100),
    adapter=dict(type='ClassifierAdapter', probe_input_size=32),
    online=False,
    loss_weights=dict(task=0.1, kd=0.9),
    temperature=4.0,
    teacher_ckpt='work_dirs/cifar100_independent_resnet32x4_resnet8x4/teacher.pth',
)
