# ADM offline on the shapes set: consensus on both FPN levels toward the frozen teacher.
_base_ = './fitnet.py'
model = dict(distiller=dict(
    _delete_=True, type='ADM', online=False, tau=1.0,
    loss_weights=dict(task=1.0, kd=0.0, co=1.0),
    taps=[dict(student='neck', teacher='neck', index=0),
          dict(student='neck', teacher='neck', index=1)]))
work_dir = 'work_dirs/shapes_det/adm_offline'
