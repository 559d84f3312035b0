# DML baseline on CIFAR-100 (resnet32x4 and resnet8x4 learn from each other's soft labels);
# the same settings as the ADM config without the feature terms.
_base_ = ['_base_/cifar100.py', '_base_/schedule_240e.py', '_base_/default_runtime.py']

distiller = dict(
    type='DML',
    student=dict(type='resnet8x4', num_classes=100),
    teacher=dict(type='resnet32x4', num_classes=100),
    adapter=dict(type='ClassifierAdapter', probe_input_size=32),
    online=True,
    loss_weights=dict(task=1.0, kd=1.0),
    temperature=1.0,  # DML's own T=1 (at T=4 both networks ended below independent training on
                      # full Fashion-MNIST, 10 epochs; README, Results)
)
