# SoKD + FitNet on the shapes set: the frozen teacher of teacher.py, DAFA-refined teacher
# features, DAM anchored on the connected components of each shape class.
_base_ = './_base_.py'
model = dict(
    type='distill.DistillationModel', scope='mmseg',
    student=_base_.student_model, teacher=_base_.teacher_model,
    teacher_ckpt='work_dirs/shapes_seg/teacher/iter_400.pth',  # read when training starts
    teacher_trained_by='configs/segmentation/shapes/teacher.py',
    adapter=dict(background_classes=[0]),
    search_iters=40,  # the policy search runs over the first 40 iterations
    distiller=dict(
        type='SoKD',
        base=dict(type='FitNet', online=False,
                  taps=[dict(student='backbone.layer4', teacher='backbone.layer4')]),
        dafa=dict(), dam=dict(channels=32, top_k=4),
        arch_interval=5, search_epochs=1, xi=0.05))
work_dir = 'work_dirs/shapes_seg/sokd_fitnet'
# SoKD's arch step draws its val batches from a second shuffle of the training set
# (tasks/*/train.py add this hook anyway; a plain tools/train.py run needs it here)
custom_hooks = [dict(type='distill.ArchBatchesHook')]
