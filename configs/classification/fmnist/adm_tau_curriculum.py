# ADM with a tau curriculum: the location weights go from sharp (tau=0.1: a few locations carry
# each term) to flat (tau=2: nearly uniform) over the run. README, Results.
_base_ = ['adm.py']
distiller = dict(tau_schedule=dict(_delete_=True, start=0.1, end=2.0, type='linear'))
