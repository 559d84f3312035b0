# Online ADM on CIFAR-100: resnet32x4 (teacher) and resnet8x4 (student) trained together from
# scratch, 240 epochs, SGD 0.05, batch 64 (the paper's setting).
#   python tasks/classification/train.py configs/classification/cifar100_adm_resnet32x4_resnet8x4.py
_base_ = ['_base_/cifar100.py', '_base_/schedule_240e.py', '_base_/default_runtime.py']

distiller = dict(
    type='ADM',  # a registered distiller: ADM, DML, KD, DKD, FitNet (and SoKD)
    # the two networks: registered model names (distill.models) or 'timm/<name>'
    student=dict(type='resnet8x4', num_classes=100),
    teacher=dict(type='resnet32x4', num_classes=100),
    # how a network is run on a batch: images -> logits, cross-entropy task loss;
    # probe_input_size is the side of the probe image used to find tap shapes
    adapter=dict(type='ClassifierAdapter', probe_input_size=32),
    # feature pairs for the consensus/divergence losses: module paths in named_modules()
    # (student, teacher), an optional weight per pair; or 'auto' (last module per stride)
    taps=[dict(student='layer3', teacher='layer3')],
    # True: the teacher trains too (online KD); False: frozen teacher from teacher_ckpt
    online=True,
    # weight of each term: task = CE, kd = T^2 * KL to the other network's soft labels,
    # co = consensus loss (student), di = divergence loss (teacher). The default weights of the
    # Fashion-MNIST and shapes runs (README, Results; not yet validated on CIFAR-100): large
    # feature weights hurt both networks there.
    loss_weights=dict(task=1.0, kd=1.0, co=0.1, di=0.01),
    warmup=0.3,         # the kd/co/di terms ramp up from 0 over the first 30% of training
    temperature=1.0,    # T of the logits KD term: DML's own T=1 (README, Results)
    tau=1.0,            # softmax temperature of the location weights w_co / w_di
    tau_schedule=None,  # or dict(start=0.1, end=2.0, type='linear'|'cosine') over training
    teacher_ckpt=None,  # a plain state dict of the teacher (e.g. a work dir's teacher.pth)
)
