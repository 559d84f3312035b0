# The CIFAR-100 schedule of the KD literature (CRD, DKD, ADM): 240 epochs of SGD, lr 0.05
# (for batch 64), divided by 10 at epochs 150, 180 and 210.
optimizer = dict(
    type='SGD',          # any optimiser class of torch.optim; the other keys are its arguments
    lr=0.05,             # initial learning rate
    momentum=0.9,        # SGD momentum
    weight_decay=5e-4,   # applied to every trainable parameter (student, teacher, connectors)
)
schedule = dict(
    epochs=240,                  # training epochs; evaluation and a checkpoint after each
    milestones=[150, 180, 210],  # epochs after which the learning rate is multiplied by gamma
    gamma=0.1,                   # the step-decay factor
)
