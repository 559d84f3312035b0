# Cityscapes 512x1024, 80k iterations, as MMSegmentation's own configs: the dataset, runtime
# and schedule come from mmseg's _base_ files; distill.engines.mmengine registers the distillation model.
_base_ = [
    'mmseg::_base_/datasets/cityscapes.py', 'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py'
]
custom_imports = dict(imports=['distill.engines.mmengine'], allow_failed_imports=False)
crop_size = (512, 1024)
