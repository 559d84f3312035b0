# SoKD + FitNet on the shapes set: DAFA refines the teacher's FPN features, DAM (anchored on
# the ground-truth boxes, scaled to the level) masks the hint loss of the last tapped level.
_base_ = './fitnet.py'
model = dict(
    search_iters=40,  # the policy search runs over the first 40 iterations
    distiller=dict(
        _delete_=True, type='SoKD',
        # fitnet.py's FitNet, its two levels in the other order: DAM runs on the last tap
        # pair, here the finer level (index 0)
        base=dict(_base_.model.distiller,
                  taps=[dict(student='neck', teacher='neck', index=1),
                        dict(student='neck', teacher='neck', index=0)]),
        dafa=dict(), dam=dict(channels=32, top_k=4),
        arch_interval=5, search_epochs=1, xi=0.02))
work_dir = 'work_dirs/shapes_det/sokd_fitnet'
# SoKD's arch step draws its val batches from a second shuffle of the training set
# (tasks/*/train.py add this hook anyway; a plain tools/train.py run needs it here)
custom_hooks = [dict(type='distill.ArchBatchesHook')]
