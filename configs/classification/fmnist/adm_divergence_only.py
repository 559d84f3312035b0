# ADM ablation: divergence learning only (no consensus term on the student).
_base_ = ['adm.py']
distiller = dict(loss_weights=dict(co=0.0))
