# SoKD + FitNet on the shapes set: FitNet's frozen teacher (fitnet.py), DAFA-refined teacher
# features, DAM anchored on the connected components of each shape class.
_base_ = './fitnet.py'
model = dict(
    adapter=dict(background_classes=[0]),
    search_iters=40,  # the policy search runs over the first 40 iterations
    distiller=dict(
        _delete_=True, type='SoKD',
        base=_base_.model.distiller,  # fitnet.py's FitNet, as it trains alone
        dafa=dict(), dam=dict(channels=32, top_k=4),
        arch_interval=5, search_epochs=1, xi=0.05))
work_dir = 'work_dirs/shapes_seg/sokd_fitnet'
# SoKD's arch step draws its val batches from a second shuffle of the training set
# (tasks/*/train.py add this hook anyway; a plain tools/train.py run needs it here)
custom_hooks = [dict(type='distill.ArchBatchesHook')]
