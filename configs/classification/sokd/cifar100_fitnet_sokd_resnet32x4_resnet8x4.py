# SoKD (DAFA; DAM off, see below) around the FitNet baseline of
# cifar100_fitnet_resnet32x4_resnet8x4.py: the student matches the DAFA-refined teacher layer3.
#   python tasks/classification/train.py configs/classification/sokd/cifar100_fitnet_sokd_resnet32x4_resnet8x4.py
# Ablations: --cfg-options distiller.dafa=None (then SoKD is plain FitNet); DAFA + DAM: the
# dam=dict(...) in the comment below.
_base_ = ['./cifar100_fitnet_resnet32x4_resnet8x4.py']

distiller = dict(
    _delete_=True,
    type='SoKD',
    base=_base_.distiller,  # cifar100_fitnet_resnet32x4_resnet8x4.py's FitNet, as it trains alone
    # DAFA: all eleven ops (ops=[...] picks some), each starting at magnitude 0.2
    dafa=dict(init_magnitude=0.2),
    # DAM off for classification: on Fashion-MNIST (3 seeds, paired) DAM every step moved the
    # student by -0.46 +- 0.77 (FitNet base) and -0.24 +- 0.40 (KD base) against DAFA alone, at
    # twice the operator calls of a training step; to switch it on (one step in k: interval=k):
    # dam=dict(channels=64, num_classes=1, top_k=8, score_threshold=0.3, beta=0.1,
    #          mask='mutual', cam_threshold=0.5, interval=1),
    dam=None,
    loss_weights=dict(dam=1.0, anchor=1.0),
    arch_interval=10,      # a policy step every 10 student steps ...
    search_epochs=40,      # ... in the first 40 of 240 epochs, then the policy is frozen
    # the cheap one; or 'exact' / 'finite_difference' (benchmarks/sokd_overhead.py)
    hypergrad='factored',
    xi=0.05,               # virtual step: the student's learning rate
)
# no weight decay on the policy: it would outweigh the ~1e-5 hypergradient (see SoKD's doc);
# Adam moves each logit by about lr per arch step, and this search has thousands of them
arch_optimizer = dict(type='Adam', lr=3e-3, betas=(0.5, 0.999), weight_decay=0.0)
