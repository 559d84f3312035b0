# DML on the shapes set: the online baseline (logits only, per-pixel mutual KD).
_base_ = './adm_online.py'
model = dict(distiller=dict(_delete_=True, type='DML', online=True, temperature=1.0,
                            loss_weights=dict(task=1.0, kd=1.0)))
work_dir = 'work_dirs/shapes_seg/dml'
