# Offline ADM: KD (T=4, as kd.py) plus the consensus term toward the frozen teacher's layer3
# (the divergence term needs a teacher that trains: none offline). Train the teacher first (kd.py).
_base_ = ['adm.py']
distiller = dict(online=False, temperature=4.0, teacher_ckpt='work_dirs/independent/teacher.pth')
