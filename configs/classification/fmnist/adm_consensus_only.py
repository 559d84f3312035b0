# ADM ablation: consensus learning only (no divergence term on the teacher).
_base_ = ['adm.py']
distiller = dict(loss_weights=dict(di=0.0))
