# Online ADM on CIFAR-100: wrn_40_2 (teacher) and wrn_16_2 (student).
_base_ = ['./cifar100_adm_resnet32x4_resnet8x4.py']

distiller = dict(
    student=dict(type='wrn_16_2', num_classes=100),
    teacher=dict(type='wrn_40_2', num_classes=100),
    taps=[dict(student='block3', teacher='block3')],
)
