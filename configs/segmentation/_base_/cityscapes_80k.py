# Cityscapes 512x1024, 80k iterations, as MMSegmentation's own configs: the dataset, runtime
# and schedule come from mmseg's _base_ files; distill.engines.mmengine registers the
# distillation model.
_base_ = [
    'mmseg::_base_/datasets/cityscapes.py', 'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py'
]
custom_imports = dict(imports=['distill.engines.mmengine'], allow_failed_imports=False)
# --auto-scale-lr: mmseg's schedules are for 4 GPUs x 2 images (the 4xb2 of the names)
auto_scale_lr = dict(enable=False, base_batch_size=8)
# TensorBoard beside the local files (tensorboard --logdir WORK_DIR)
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
crop_size = (512, 1024)
