# Offline DKD (decoupled KD) from the trained resnet32x4 (see kd.py for the teacher).
_base_ = ['kd.py']
distiller = dict(type='DKD', alpha=1.0, beta=8.0)
