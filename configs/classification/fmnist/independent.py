# Baseline: resnet32x4 and resnet8x4 trained side by side, each on its labels alone (DML with
# kd=0: no term links them). Full Fashion-MNIST, 10 epochs:
#   python tasks/classification/train.py configs/classification/fmnist/independent.py
_base_ = ['_base_/fmnist.py', '_base_/schedule_10e.py', '../_base_/default_runtime.py']

distiller = dict(
    type='DML',
    student=dict(type='resnet8x4', num_classes=10, in_channels=1),
    teacher=dict(type='resnet32x4', num_classes=10, in_channels=1),
    adapter=dict(type='ClassifierAdapter', probe_input_size=32, in_channels=1),
    online=True,
    loss_weights=dict(task=1.0, kd=0.0),
    temperature=1.0,
)
