# SoKD around the offline KD of kd.py: DAFA refines the teacher's layer3, whose head gives the
# refined logits the student learns from; DAM adds its consistency term. Train the teacher first.
_base_ = ['sokd_fitnet.py']
distiller = dict(base=dict(type='KD', taps=None, loss_weights=dict(_delete_=True, task=1.0, kd=1.0),
                           temperature=4.0))
