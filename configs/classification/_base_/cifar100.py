# CIFAR-100 from the standard `cifar-100-python` pickle folder (train: 50,000, test: 10,000).
# Download it yourself (https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz) and unpack it
# so that data/cifar-100-python/{train,test,meta} exist, or point `root` elsewhere with
#   --cfg-options data.train.root=/path/to/cifar-100-python data.val.root=/path/to/cifar-100-python
data = dict(
    # the training set: a dataset config built with distill.data.build_dataset; registered
    # types are 'CIFAR100', 'CIFAR10', 'ImageFolder' and 'ShapesClassification'
    train=dict(type='CIFAR100', root='data/cifar-100-python', train=True),
    # the evaluation set, evaluated after every epoch (top-1, top-5, ECE)
    val=dict(type='CIFAR100', root='data/cifar-100-python', train=False),
    # images per optimiser step ON EACH PROCESS (like mmengine's per-GPU batch size)
    batch_size=64,
    # evaluation batch size per process (None: same as batch_size)
    val_batch_size=256,
    # DataLoader worker processes per training process (0: load in the main process)
    num_workers=4,
    # training augmentation, applied per batch on the device with a seeded generator:
    # zero padding (pixels per side) then a random crop back to the input size, and a random
    # horizontal flip with probability 0.5 when flip=True. padding=0, flip=False: none.
    augment=dict(padding=4, flip=True),
    # per-channel normalisation of images in [0, 1], after augmentation, train and val
    normalize=dict(mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761)),
)
