# Offline ADM: KD plus the consensus term toward the frozen teacher's layer3 (see kd.py).
_base_ = ['adm.py']
distiller = dict(online=False, teacher_ckpt='work_dirs/independent/teacher.pth')
