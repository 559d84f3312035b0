# SoKD around KD: the teacher's layer3 (its head_input) is refined by DAFA and run through the
# teacher's pool + fc (forward_head) to give the refined logits the student distils (DAM off,
# see below).
#   python tasks/classification/train.py configs/classification/sokd/cifar100_kd_sokd_resnet32x4_resnet8x4.py
_base_ = ['./cifar100_kd_resnet32x4_resnet8x4.py']

distiller = dict(
    _delete_=True,
    type='SoKD',
    base=_base_.distiller,  # cifar100_kd_resnet32x4_resnet8x4.py's KD, as it trains alone
    dafa=dict(init_magnitude=0.2),
    # DAM off for classification: on Fashion-MNIST (3 seeds, paired) DAM every step moved the
    # student by -0.46 +- 0.77 (FitNet base) and -0.24 +- 0.40 (KD base) against DAFA alone, at
    # twice the operator calls of a training step; to switch it on (one step in k: interval=k):
    # dam=dict(channels=64, num_classes=1, top_k=8, score_threshold=0.3, beta=0.1,
    #          mask='mutual', cam_threshold=0.5, interval=1),
    dam=None,
    loss_weights=dict(dam=1.0, anchor=1.0),
    arch_interval=10,
    search_epochs=40,
    hypergrad='factored',
    xi=0.05,
)
# no weight decay on the policy: it would outweigh the ~1e-5 hypergradient (see SoKD's doc);
# Adam moves each logit by about lr per arch step, and this search has thousands of them
arch_optimizer = dict(type='Adam', lr=3e-3, betas=(0.5, 0.999), weight_decay=0.0)
