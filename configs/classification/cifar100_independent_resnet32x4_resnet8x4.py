# Both networks trained independently (cross-entropy only: DML with kd=0), in one run.
# Its work dir's teacher.pth is the teacher of the offline ADM config.
_base_ = ['./cifar100_dml_resnet32x4_resnet8x4.py']

distiller = dict(loss_weights=dict(kd=0.0))
