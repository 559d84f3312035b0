# Offline ADM: PSPNet R101 (trained, frozen) -> PSPNet R18 on Cityscapes.
_base_ = './_base_/cityscapes_80k.py'
model = dict(
    type='distill.DistillationModel', scope='mmseg',
    student='mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher='mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher_ckpt='https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/'
                 'pspnet_r101-d8_512x1024_80k_cityscapes/'
                 'pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth',
    teacher_map_location='cpu',
    distiller=dict(
        # the ADM class's defaults (kd=1 at T=1, co=0.1, a 30 % warm-up), as the shapes config
        # measured on real images (README, Segmentation results); kd=3, co=1 were unmeasured
        type='ADM', online=False,
        taps=[dict(student='backbone.layer4', teacher='backbone.layer4'),
              dict(student='decode_head.bottleneck', teacher='decode_head.bottleneck')]))
