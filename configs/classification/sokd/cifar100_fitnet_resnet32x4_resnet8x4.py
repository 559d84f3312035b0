# FitNet baseline on CIFAR-100: a trained resnet32x4 teacher, frozen, distilled into resnet8x4
# by CE + 100 * MSE(connector(student layer3), teacher layer3) (the hint weight of CRD's FitNet).
# The teacher: teacher.pth of configs/classification/cifar100_independent_resnet32x4_resnet8x4.py
#   python tasks/classification/train.py configs/classification/sokd/cifar100_fitnet_resnet32x4_resnet8x4.py
_base_ = ['../_base_/cifar100.py', '../_base_/schedule_240e.py', '../_base_/default_runtime.py']

distiller = dict(
    type='FitNet',
    student=dict(type='resnet8x4', num_classes=100),
    teacher=dict(type='resnet32x4', num_classes=100),
    adapter=dict(type='ClassifierAdapter', probe_input_size=32),
    taps=[dict(student='layer3', teacher='layer3')],  # both (B, 256, 8, 8)
    online=False,
    loss_weights=dict(task=1.0, kd=0.0, fitnet=100.0),
    teacher_ckpt='work_dirs/cifar100_independent_resnet32x4_resnet8x4/teacher.pth',
)
