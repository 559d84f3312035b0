# Fashion-MNIST from the four idx .gz files (60,000 train / 10,000 test, 10 classes), zero-padded
# from 28x28 to 32x32 so that the CIFAR networks and taps apply unchanged. On Debian:
#   apt-get install dataset-fashion-mnist      (installs them in /usr/share/datasets/fashion-mnist)
# Elsewhere: --cfg-options data.train.root=DIR data.val.root=DIR
# per_class=N keeps the first N images of each class (a class-balanced subset).
data = dict(
    train=dict(type='FashionMNIST', root='/usr/share/datasets/fashion-mnist', train=True,
               channels=1, per_class=None),
    val=dict(type='FashionMNIST', root='/usr/share/datasets/fashion-mnist', train=False,
             channels=1),
    batch_size=128,
    val_batch_size=500,
    num_workers=0,
    # random 32x32 crops of the 36x36 zero-padded image; no flip (the classes are not
    # symmetric under it: a left shoe is still a shoe, but the set is centred and aligned)
    augment=dict(padding=2, flip=False),
    normalize=dict(mean=(0.2860,), std=(0.3530,)),
)
