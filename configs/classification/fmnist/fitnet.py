# Offline FitNet: MSE between the student's and the frozen teacher's layer3 (see kd.py).
_base_ = ['kd.py']
distiller = dict(type='FitNet', taps=[dict(student='layer3', teacher='layer3')],
                 loss_weights=dict(task=1.0, kd=0.0, fitnet=1.0))
