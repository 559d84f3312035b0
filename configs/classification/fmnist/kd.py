# Offline KD (Hinton) from a trained, frozen resnet32x4 into resnet8x4. Train the teacher first:
#   python tasks/classification/train.py configs/classification/fmnist/independent.py
# (its work dir's teacher.pth is the teacher_ckpt below), or set distiller.teacher_ckpt=PATH.
_base_ = ['independent.py']
distiller = dict(type='KD', online=False, loss_weights=dict(task=1.0, kd=1.0), temperature=4.0,
                 teacher_ckpt='work_dirs/independent/teacher.pth')
