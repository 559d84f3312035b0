"""ADM: Asymmetric Decision-Making (online KD, ICML 2025), on top of DML (README, "ADM as
implemented").

    student: CE + kd * T^2 * KL(sg(p_t) || p_s) + co * sum_taps w * L_co(gs, sg(ft))
    teacher: CE + kd * T^2 * KL(sg(p_s) || p_t) + di * sum_taps w * L_di(ft, sg(gs))

``divergence`` picks the reading of L_di (``distill.losses.adm.divergence_loss``): ``'repel'``
pushes the teacher's features away from the student's where they differ, ``'mutual'`` pulls
them toward the student's only where they agree (README, "ADM as implemented").

Offline (``online=False``) the teacher is frozen and only the student terms remain.
``tau`` may follow a schedule over training: ``tau_schedule=dict(start=0.1, end=2.0,
type='linear'|'cosine')``, driven by ``set_progress`` from the engine.
"""
from __future__ import annotations

import math

from distill.distillers.base import Distiller, check_setting
from distill.losses.adm import (adm_terms, check_divergence, consensus_distance,
                                location_weights, similarity_map)
from distill.registry import DISTILLERS


#: ``adm_terms`` keys -> the distiller's term names (which network each term trains)
_TERM_NAMES = {'co': 'student.co', 'di': 'teacher.di'}


@DISTILLERS.register_module()
class ADM(Distiller):
    default_online = True
    # the defaults the real-data benchmarks support (README, "ADM as implemented"): small
    # feature terms, DML's T=1 and a 30 % warm-up; co=di=1 hurt both networks on every task
    default_loss_weights = dict(task=1.0, kd=1.0, co=0.1, di=0.01)
    uses_taps = True
    feature_term = 'co'

    def __init__(self, *args, tau: float = 1.0, tau_schedule: dict | None = None,
                 standardise: bool = False, temperature: float = 1.0, warmup: float = 0.3,
                 divergence: str = 'repel', **kwargs):
        super().__init__(*args, temperature=temperature, warmup=warmup, **kwargs)
        check_setting('tau', tau, positive=True)
        check_divergence(divergence)
        self.divergence = divergence
        if tau_schedule is not None:
            unknown = set(tau_schedule) - {'start', 'end', 'type'}
            if unknown or tau_schedule.get('type', 'linear') not in ('linear', 'cosine'):
                raise ValueError(f"tau_schedule is dict(start=, end=, type='linear'|'cosine'), "
                                 f'got {tau_schedule}')
            # linear and cosine ramps stay between start and end: both > 0 keeps tau > 0
            for key in ('start', 'end'):
                value = tau_schedule.get(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    raise ValueError(f'tau_schedule.{key} must be a number > 0 (tau stays '
                                     f'between start and end over the run), got {value!r}')
        self.tau = tau
        self.standardise = bool(standardise)
        self.tau_schedule = tau_schedule

    def progress_uses(self) -> list[str]:
        return super().progress_uses() + (['tau_schedule moves tau over training']
                                          if self.tau_schedule is not None else [])

    def current_tau(self) -> float:
        if self.tau_schedule is None:
            return self.tau
        start, end = self.tau_schedule['start'], self.tau_schedule['end']
        ramp = self.progress
        if self.tau_schedule.get('type', 'linear') == 'cosine':
            ramp = (1 - math.cos(math.pi * ramp)) / 2
        return start + (end - start) * ramp

    def feature_terms(self, student_feats, teacher_feats, batch):
        """``student.co`` and (online) ``teacher.di``; a term whose weight is 0 costs nothing."""
        co_weight = self.loss_weights['co']
        di_weight = self.loss_weights['di'] if self.online else 0.0
        if not (co_weight or di_weight):
            return {}
        tau, standardise, totals = self.current_tau(), self.standardise, {}
        for pair, gs, ft in self.aligned_features(student_feats, teacher_feats):
            weight = pair['weight']
            for name, value in adm_terms(gs, ft, tau, co_weight * weight, di_weight * weight,
                                         standardise, self.divergence).items():
                name = _TERM_NAMES[name]
                totals[name] = totals[name] + value if name in totals else value
        return totals

    # ------------------------------------------------ the per-location protocol (SoKD)
    def location_distance(self, gs, ft, detach_target: bool = True):
        """Per-location consensus loss (B,H,W), ``H*W * w_co * (1 - cos)``: its mean over the
        locations is one tap's L_co, so SoKD can mask it."""
        similarity = similarity_map(gs, ft)
        weights = location_weights(similarity, self.current_tau(), 'agreement',
                                   self.standardise)
        locations = weights.shape[-2] * weights.shape[-1]
        return locations * weights * consensus_distance(gs, ft, detach_target)

    def teacher_feature_terms(self, aligned) -> dict:
        """``teacher.di`` from ``(tap pair, gs, ft)`` triples (online, weight > 0; else empty);
        SoKD refines ``ft`` only for the consensus term and passes the raw one here."""
        if not self.online or self.loss_weights['di'] == 0:
            return {}
        tau, weight = self.current_tau(), self.loss_weights['di']
        total = sum(adm_terms(gs, ft, tau, 0.0, weight * pair['weight'], self.standardise,
                              self.divergence)['di']
                    for pair, gs, ft in aligned)
        return {'teacher.di': total}
