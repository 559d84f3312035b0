# ADM offline: the teacher is the checkpoint of teacher.py, frozen; student terms only.
_base_ = './adm_online.py'
# The teacher is read when training starts (relative to the working directory); set
# model.teacher_ckpt=PATH (--cfg-options) to use another one.
model = dict(teacher_ckpt='work_dirs/shapes_seg/teacher/iter_400.pth',
             teacher_trained_by='configs/segmentation/shapes/teacher.py',
             teacher_map_location='cpu', distiller=dict(online=False))
val_evaluator = dict(_delete_=True, type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
work_dir = 'work_dirs/shapes_seg/adm_offline'
