# Online ADM: DML plus consensus (student) and divergence (teacher) on layer3 (256 channels on
# both sides: the connector is the identity, no trainable parameters). The weights are the ones
# measured on Fashion-MNIST (README, Results): co=1, di=0.1, the distillation terms ramped up over
# the first 30% of training. di=1 cost the teacher about 3 points there (the two terms pull the
# same cosine in opposite directions, and the teacher wins by making its features orthogonal to
# the student's): keep di well below co.
_base_ = ['dml.py']
distiller = dict(
    type='ADM',
    taps=[dict(student='layer3', teacher='layer3')],
    loss_weights=dict(task=1.0, kd=1.0, co=1.0, di=0.1),
    warmup=0.3,
    tau=1.0,
    tau_schedule=None,
)
