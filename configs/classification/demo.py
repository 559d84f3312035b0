# The demo: online ADM on the synthetic shapes set (6 classes, 32x32, generated on the fly),
# with a student/teacher pair small enough for a CPU. A few minutes on 2 CPU cores:
#   python tasks/classification/demo.py            (ADM, DML and independent, table + PNGs)
#   python tasks/classification/train.py configs/classification/demo.py   (ADM alone)
_base_ = ['_base_/default_runtime.py']

num_classes = 6
distiller = dict(
    type='ADM',
    student=dict(type='tiny_cnn', num_classes=num_classes, width=8),
    teacher=dict(type='tiny_cnn', num_classes=num_classes, width=32),
    adapter=dict(type='ClassifierAdapter', probe_input_size=32),
    # ADM's default recipe (README, Results): co=0.1, di=0.01, the distillation terms ramped up
    # over the first 30% of training, DML's T=1. co=1, di=0.1 cost this student 15 points
    # (55.9 against DML's 71.2, 3 seeds) and co=di=1 collapsed it: the feature terms are
    # bounded cosines whose gradients do not fade, so large weights swamp the labels.
    # the pairs taps='auto' finds, in its order (the connectors' initialisation follows it);
    # adm_maps.png shows the first one
    taps=[dict(student='stage2', teacher='stage2'), dict(student='stage3', teacher='stage3')],
    online=True,
    loss_weights=dict(task=1.0, kd=1.0, co=0.1, di=0.01),
    warmup=0.3,
    temperature=1.0,  # DML's original T
    tau=1.0,
)
data = dict(
    # different seeds: the val images are not the training images
    train=dict(type='ShapesClassification', num_samples=2000, seed=0, image_size=32,
               num_classes=num_classes),
    val=dict(type='ShapesClassification', num_samples=500, seed=1, image_size=32,
             num_classes=num_classes),
    batch_size=64,
    val_batch_size=250,
    num_workers=0,
    augment=dict(padding=2, flip=True),
    normalize=dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
)
optimizer = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4)
schedule = dict(epochs=8, milestones=[6], gamma=0.1)
train = dict(log_interval=10)
