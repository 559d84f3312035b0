"""SoKD's parts (README, "SoKD"): DAFA (differentiable feature augmentation and its bi-level
search) and DAM (distinctive area detection). The distiller is ``distill.distillers.SoKD``."""
from distill.sokd.dafa import AUGMENTATIONS, DAFA, DEFAULT_OPS
from distill.sokd.dam import (DAM, anchoring_loss, boxes_to_mask, centernet_targets,
                              consistency_loss, decode_boxes, largest_component_boxes,
                              masked_mean)
from distill.sokd.hypergrad import (exact_hypergradient, finite_difference_hypergradient,
                                    preserved_buffers, unrolled_hypergradient)

__all__ = ['AUGMENTATIONS', 'DAFA', 'DEFAULT_OPS', 'DAM', 'anchoring_loss', 'boxes_to_mask',
           'centernet_targets', 'consistency_loss', 'decode_boxes', 'largest_component_boxes',
           'masked_mean', 'exact_hypergradient', 'finite_difference_hypergradient',
           'preserved_buffers', 'unrolled_hypergradient']
