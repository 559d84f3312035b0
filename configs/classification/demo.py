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
    adapter=dict(type='ClassifierAdapter', input_size=32),
    # ADM's feature terms, kept small on purpose. Measured on this demo (8 epochs, student /
    # teacher val top-1, seeds 0/1/2): DML 64.6/88.0, 72.6/84.6, 76.8/88.6; the settings below
    # 70.8/87.2, 75.0/85.8, 77.6/89.4. With co=di=1 at stage3 ADM collapsed (29.8/52.6, the
    # student's CE at chance all run); co=0.3, di=0.03 (same taps and tau) already fell below
    # DML at every seed (54.2/86.2, 68.4/83.8, 70.2/85.2). Our reading: both losses are
    # cosines, bounded and scale-free, so their gradients do not fade as CE's do; on ReLU (non-
    # negative) teacher maps the divergence term can only lower cos(ft, gs) by concentrating
    # the teacher's activations in the few channels where the student's BN-normalised
    # projection is low, and the student follows. After the co=di=1 run the teacher's stage3
    # put 36% of each location's activation in one of its 128 channels (6% with the settings
    # below): a degenerate code the student chased instead of the labels. Tapping stage2 as
    # well (what taps='auto' picks) and the tau curriculum (near-argmax weights on the most
    # similar locations first, near-uniform at the end) each helped at seed 0; di=0.01 did a
    # little better than di=0 (64.0/87.8, 74.8/81.8, 74.8/90.0). Three seeds vary by 12 points,
    # so read the gain over DML (+3.1 student top-1 on average, teacher level) as small.
    # the pairs taps='auto' finds, in its order (the connectors' initialisation follows it);
    # adm_maps.png shows the first one
    taps=[dict(student='stage2', teacher='stage2'), dict(student='stage3', teacher='stage3')],
    online=True,
    loss_weights=dict(task=1.0, kd=1.0, co=0.1, di=0.01),
    temperature=1.0,  # DML's original T: at T=4 these tiny networks start slower
    tau=1.0,  # unused while tau_schedule is set
    tau_schedule=dict(start=0.1, end=2.0),
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
