# SoKD around the offline FitNet of fitnet.py: the student matches the DAFA-refined teacher
# layer3 (DAM off, see below). Train the teacher first (see kd.py).
_base_ = ['fitnet.py']
distiller = dict(
    _delete_=True,
    type='SoKD',
    base=_base_.distiller,  # fitnet.py's FitNet, as it trains alone
    # DAFA only, weak augmentations at the start: DAM's mask cost a small student (tiny_cnn
    # 8 <- 32 on the shapes set) 4-8 points against FitNet in every variant tried, and
    # magnitudes of 0.2 cost it about 2 (the SoKD section of the README)
    dafa=dict(init_magnitude=0.05),
    dam=None,
    arch_interval=10,   # a policy step every 10 student steps ...
    search_epochs=3,    # ... in the first 3 of 10 epochs, then the policy is frozen
    hypergrad='factored',
    xi=0.1,             # virtual step: the student's learning rate
)
# Adam without weight decay: an L2 term on alpha outweighs the hypergradient and the search
# stands still (SoKD section of the README)
arch_optimizer = dict(type='Adam', lr=0.05, betas=(0.5, 0.999), weight_decay=0.0)
