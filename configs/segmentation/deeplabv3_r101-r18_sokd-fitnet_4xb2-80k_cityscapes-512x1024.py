# SoKD + FitNet: DeepLabV3 R101 (frozen) -> R18; DAFA refines the teacher's last backbone
# stage, DAM (anchored on the connected components of each class) masks the hint loss.
_base_ = './deeplabv3_r101-r18_adm-offline_4xb2-80k_cityscapes-512x1024.py'
model = dict(
    search_iters=2000,  # the policy search runs over the first 2k iterations
    distiller=dict(
        _delete_=True, type='SoKD',
        base=dict(type='FitNet', online=False, loss_weights=dict(task=1.0, fitnet=1.0),
                  taps=[dict(student='backbone.layer4', teacher='backbone.layer4')]),
        dafa=dict(), dam=dict(channels=64, top_k=8),
        arch_interval=10, search_epochs=1, xi=0.01))
# SoKD's arch step draws its val batches from a second shuffle of the training set
# (tasks/*/train.py add this hook anyway; a plain tools/train.py run needs it here)
custom_hooks = [dict(type='distill.ArchBatchesHook')]
