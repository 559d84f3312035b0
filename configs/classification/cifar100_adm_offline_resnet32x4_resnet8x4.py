# Offline ADM on CIFAR-100: a trained resnet32x4 teacher, frozen, distilled into resnet8x4
# (CE + KD + consensus; the teacher gets no terms offline). The teacher weights: a plain state
# dict, e.g. teacher.pth of
#   python tasks/classification/train.py configs/classification/cifar100_independent_resnet32x4_resnet8x4.py
_base_ = ['./cifar100_adm_resnet32x4_resnet8x4.py']

distiller = dict(
    online=False,
    temperature=4.0,  # offline: the KD literature's T (the online configs use DML's T=1)
    teacher_ckpt='work_dirs/cifar100_independent_resnet32x4_resnet8x4/teacher.pth',
)
