# COCO 2017 detection, 1x schedule, as MMDetection's own configs (bbox mAP by pycocotools).
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py', 'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['distill.engines.mmengine'], allow_failed_imports=False)
# TensorBoard beside the local files (tensorboard --logdir WORK_DIR)
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
