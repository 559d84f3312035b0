# ADM offline on the shapes set: consensus on both FPN levels toward the frozen teacher (the
# ADM class's co=0.1 and warm-up; kd=0 for detectors).
_base_ = './fitnet.py'
model = dict(distiller=dict(
    _delete_=True, type='ADM', online=False, loss_weights=dict(kd=0.0),
    taps=[dict(student='neck', teacher='neck', index=0),
          dict(student='neck', teacher='neck', index=1)]))
work_dir = 'work_dirs/shapes_det/adm_offline'
