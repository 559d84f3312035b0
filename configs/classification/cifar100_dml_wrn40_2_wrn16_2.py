# DML baseline on CIFAR-100: wrn_40_2 and wrn_16_2.
_base_ = ['./cifar100_dml_resnet32x4_resnet8x4.py']

distiller = dict(
    student=dict(type='wrn_16_2', num_classes=100),
    teacher=dict(type='wrn_40_2', num_classes=100),
)
