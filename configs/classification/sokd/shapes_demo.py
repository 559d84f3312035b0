# SoKD (DAFA + DAM) around FitNet on the synthetic shapes set, tiny CNNs: a few minutes on
# 2 CPU cores. First train the teacher (configs/classification/sokd/shapes_teacher.py), then
#   python tasks/classification/train.py configs/classification/sokd/shapes_demo.py
# Other bases: --cfg-options distiller.base.type=KD (or DKD, ADM; taps are ignored by the
# logits bases). All bases with and without SoKD, 3 seeds: benchmarks/sokd_shapes_demo.py.
_base_ = ['../demo.py']

num_classes = 6
distiller = dict(
    _delete_=True,
    type='SoKD',
    # the base distiller, built as it would be alone; SoKD reuses its networks and losses
    base=dict(
        type='FitNet',
        student=dict(type='tiny_cnn', num_classes=num_classes, width=8),
        teacher=dict(type='tiny_cnn', num_classes=num_classes, width=32),
        adapter=dict(type='ClassifierAdapter', probe_input_size=32),
        taps=[dict(student='stage3', teacher='stage3')],
        online=False,
        teacher_ckpt='work_dirs/shapes_teacher/teacher.pth',
        temperature=4.0,
    ),
    # DAFA: the candidate ops (None = all eleven) and their starting magnitude; dafa=None
    # switches DAFA off
    dafa=dict(init_magnitude=0.2),
    # DAM: head width, heatmap classes (1: class-agnostic), top-k peaks, score threshold of a
    # kept peak, background weight beta of the masked loss, which side's boxes make the mask,
    # CAM threshold of the classification pseudo-boxes; dam=None switches DAM off
    dam=dict(channels=32, num_classes=1, top_k=8, score_threshold=0.3, beta=0.1,
             mask='mutual', cam_threshold=0.5),
    loss_weights=dict(dam=1.0, anchor=1.0),  # student.dam (consistency), dam.anchor
    arch_interval=10,         # an outer (policy) step every 10 student steps ...
    search_epochs=4,          # ... during the first 4 epochs; then the policy is frozen
    hypergrad='factored',     # or 'exact' (torch.func) / 'finite_difference' (DARTS)
    xi=0.05,                  # virtual step size: the student's learning rate
)
# the policy's own optimiser (the engine keeps alpha and magnitudes out of the main one).
# No weight decay: the hypergradient is ~1e-5, an L2 term of 1e-3 on logits ~1 outweighs
# it and the search only drifts to alpha = p = 0. lr 0.05: Adam moves each logit by about
# lr per arch step, and this search has 4 epochs x 4 (steps 0, 10, 20, 30 of 31) = 16.
arch_optimizer = dict(type='Adam', lr=0.05, betas=(0.5, 0.999), weight_decay=0.0)
