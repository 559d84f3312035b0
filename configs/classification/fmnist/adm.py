# Online ADM: DML plus consensus (student) and divergence (teacher) on layer3 (256 channels on
# both sides: the connector is the identity, no trainable parameters).
_base_ = ['dml.py']
distiller = dict(
    type='ADM',
    taps=[dict(student='layer3', teacher='layer3')],
    loss_weights=dict(task=1.0, kd=1.0, co=1.0, di=1.0),
    tau=1.0,
    tau_schedule=None,
)
