# ADM, the 'mutual' reading of divergence learning: the teacher is pulled toward the student's
# features only where the two agree (w_co-weighted 1 - cos) and freed where they diverge,
# instead of being pushed away there ('repel', the default). di=0.1 = co: a pull of the same
# size on both sides (di=0.01, the repel default, would leave this reading next to nothing).
# README, "ADM as implemented"; compared with DML in Results.
_base_ = ['adm.py']
distiller = dict(divergence='mutual', loss_weights=dict(di=0.1))
