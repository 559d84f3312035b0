# SoKD+KD with DAM on (every training step, the SoKD class's defaults), the DAM ablation of
# benchmarks/real_data.py against sokd_kd.py (DAFA alone, DAM off): the classification configs
# keep DAM off because it did not help here (README, SoKD). Train the teacher first (see kd.py).
_base_ = ['sokd_kd.py']
# DAM and its anchoring in every step (_delete_: the base has dam=None)
distiller = dict(dam=dict(_delete_=True, interval=1, anchor_interval=1))
