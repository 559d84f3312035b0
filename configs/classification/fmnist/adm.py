# Online ADM: DML plus consensus (student) and divergence (teacher) on layer3 (256 channels on
# both sides: the connector is the identity, no trainable parameters). Weights from the
# Fashion-MNIST and shapes runs (README, Results): co=0.1, di=0.01, the distillation terms ramped
# up over the first 30% of training. co=1, di=0.1 was no better on Fashion-MNIST and cost the
# shapes demo's student 15 points; di=1 cost the teacher about 2 points (the two terms pull the
# same cosine in opposite directions): keep the feature terms small.
_base_ = ['dml.py']
distiller = dict(
    type='ADM',
    taps=[dict(student='layer3', teacher='layer3')],
    loss_weights=dict(task=1.0, kd=1.0, co=0.1, di=0.01),
    warmup=0.3,
    tau=1.0,
    tau_schedule=None,
)
