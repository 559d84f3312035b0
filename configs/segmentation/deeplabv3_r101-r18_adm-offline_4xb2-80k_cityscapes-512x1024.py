# Offline ADM: DeepLabV3 R101 (trained, frozen) -> DeepLabV3 R18 on Cityscapes.
# Student: CE + per-pixel KD + consensus on the last backbone stage and the ASPP bottleneck.
_base_ = './_base_/cityscapes_80k.py'
model = dict(
    type='distill.DistillationModel', scope='mmseg',
    student='mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher='mmseg::deeplabv3/deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher_ckpt='https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3/'
                 'deeplabv3_r101-d8_512x1024_80k_cityscapes/'
                 'deeplabv3_r101-d8_512x1024_80k_cityscapes_20200606_113503-9e428899.pth',
    teacher_map_location='cpu',
    distiller=dict(
        # the ADM class's defaults (kd=1 at T=1, co=0.1, a 30 % warm-up), as the shapes config
        # measured on real images (README, Segmentation results); kd=3, co=1 were unmeasured
        type='ADM', online=False,
        taps=[dict(student='backbone.layer4', teacher='backbone.layer4'),
              dict(student='decode_head.bottleneck', teacher='decode_head.bottleneck')]))
