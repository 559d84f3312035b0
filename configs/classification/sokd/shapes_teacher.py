# The teacher of the SoKD shapes demo: tiny_cnn width 32 trained alone on the synthetic shapes
# set (DML with kd=0 trains both networks independently; only its teacher.pth is used).
#   python tasks/classification/train.py configs/classification/sokd/shapes_teacher.py
# writes work_dirs/shapes_teacher/teacher.pth, the teacher_ckpt of shapes_demo.py.
_base_ = ['../demo.py']

distiller = dict(_delete_=True, type='DML',
                 student=dict(type='tiny_cnn', num_classes=6, width=8),
                 teacher=dict(type='tiny_cnn', num_classes=6, width=32),
                 adapter=dict(type='ClassifierAdapter', probe_input_size=32),
                 loss_weights=dict(task=1.0, kd=0.0))
schedule = dict(epochs=8, milestones=[6], gamma=0.1)
