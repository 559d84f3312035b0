# SoKD (DAFA + DAM) around the offline FitNet of fitnet.py: the student matches the DAFA-refined
# teacher layer3, masked by DAM's boxes. Train the teacher first (see kd.py).
_base_ = ['fitnet.py']
distiller = dict(
    _delete_=True,
    type='SoKD',
    base=dict(
        type='FitNet',
        student=dict(type='resnet8x4', num_classes=10, in_channels=1),
        teacher=dict(type='resnet32x4', num_classes=10, in_channels=1),
        adapter=dict(type='ClassifierAdapter', input_size=32, in_channels=1),
        taps=[dict(student='layer3', teacher='layer3')],
        online=False,
        loss_weights=dict(task=1.0, kd=0.0, fitnet=1.0),
        teacher_ckpt='work_dirs/independent/teacher.pth',
    ),
    dafa=dict(init_magnitude=0.2),
    dam=dict(channels=64, num_classes=1, top_k=8, score_threshold=0.3, beta=0.1,
             mask='mutual', cam_threshold=0.5),
    loss_weights=dict(dam=1.0, anchor=1.0),
    arch_interval=10,   # a policy step every 10 student steps ...
    search_epochs=3,    # ... in the first 3 of 10 epochs, then the policy is frozen
    hypergrad='exact',
    xi=0.1,             # virtual step: the student's learning rate
)
arch_optimizer = dict(type='Adam', lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-3)
