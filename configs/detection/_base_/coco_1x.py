# COCO 2017 detection, 1x schedule, as MMDetection's own configs (bbox mAP by pycocotools).
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py', 'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['distill.engines.mmengine'], allow_failed_imports=False)
