# DML: resnet32x4 and resnet8x4 trained together, each also learning from the other's soft labels.
_base_ = ['independent.py']
distiller = dict(loss_weights=dict(task=1.0, kd=1.0), temperature=1.0)
