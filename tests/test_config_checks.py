"""Config checks shared by the tasks: key typos named with the closest valid keys."""
from pathlib import Path

import pytest

from distill.config_checks import ConfigError, check_keys, check_top_level_keys

ROOT = Path(__file__).resolve().parents[1]


def test_check_keys_names_the_key_and_the_closest():
    check_keys('schedule', {'epochs': 1}, ['epochs', 'gamma'])
    with pytest.raises(ConfigError, match=r'schedule\.epoch; did you mean schedule\.epochs\? '
                                          r'The keys of schedule are: epochs, gamma'):
        check_keys('schedule', {'epoch': 1}, ['epochs', 'gamma'])
    with pytest.raises(KeyError):  # also a ValueError, like the checks it replaced
        check_keys('x', {'zzz': 1}, ['a'])


def test_flat_configs_reject_near_misses_but_keep_file_variables():
    cfg = {'max_train_steps': 10, 'resolution': 32}
    check_top_level_keys(cfg, ['max_train_steps', 'learning_rate'])  # resolution: a variable
    with pytest.raises(ConfigError, match=r"'max_train_step'; did you mean 'max_train_steps'"):
        check_top_level_keys({'max_train_step': 5}, ['max_train_steps'])
    with pytest.raises(ConfigError, match=r"--cfg-options sead: 'sead' is not a key.*seed"):
        check_top_level_keys({}, ['seed'], cfg_options={'sead': 1})
    check_top_level_keys({}, ['seed'], cfg_options={'resolution': 1}, file_keys=['resolution'])


def test_diffusion_config_typos_are_named():
    from distill.engines.diffusion.config import load_config_file
    config = ROOT / 'configs' / 'diffusion' / 'adm_shapes_tiny.py'
    load_config_file(config, {'learning_rate': 1e-3, 'distiller.loss_weights.co': 0.5})
    with pytest.raises(ConfigError, match=r"'learning_rat'; did you mean 'learning_rate'"):
        load_config_file(config, {'learning_rat': 1e-3})
    with pytest.raises(ConfigError, match=r"--cfg-options optimiser\.lr: 'optimiser'"):
        load_config_file(config, {'optimiser.lr': 1e-3})


def test_classification_and_diffusion_cfg_options_take_lists_of_dicts():
    """mmengine's DictAction recursed forever on dict(...) values; both entry points use the
    shared ConfigOptionsAction."""
    from distill.engines.diffusion.config import build_parser
    from tasks.classification.train import parse_args
    taps = "distiller.taps=[dict(student='layer3',teacher='layer3')]"
    expected = {'distiller.taps': [{'student': 'layer3', 'teacher': 'layer3'}]}
    assert parse_args(['c.py', '--cfg-options', taps]).cfg_options == expected
    assert build_parser().parse_args(['c.py', '--cfg-options', taps]).cfg_options == expected


def test_tap_pairs_need_an_int_index_and_known_keys():
    """A tap pair's ``index`` is an int (or None); a dict side takes ``path`` and ``index``
    only: each fault is a ``ConfigError`` naming the key."""
    from distill.config_checks import check_tap_pairs
    check_tap_pairs([dict(student='a', teacher='b', index=0),
                     dict(student=dict(path='a', index=1), teacher='b', index=None)])
    with pytest.raises(ConfigError, match=r"distiller\.taps\[1\]\.index must be an int, "
                                          r"got '0'"):
        check_tap_pairs([dict(student='a', teacher='b'),
                         dict(student='a', teacher='b', index='0')])
    with pytest.raises(ConfigError, match=r'distiller\.taps\[0\]\.index must be an int'):
        check_tap_pairs([dict(student='a', teacher='b', index=1.0)])
    with pytest.raises(ConfigError, match=r'distiller\.taps\[0\]\.student\.idx; did you mean '
                                          r'distiller\.taps\[0\]\.student\.index'):
        check_tap_pairs([dict(student=dict(path='a', idx=0), teacher='b')])
    # a bool is no index, and a dict side's index is checked as the pair's is
    with pytest.raises(ConfigError, match=r'distiller\.taps\[0\]\.index must be an int, '
                                          r'got True'):
        check_tap_pairs([dict(student='a', teacher='b', index=True)])
    with pytest.raises(ConfigError, match=r"distiller\.taps\[0\]\.student\.index must be an "
                                          r"int, got '0'"):
        check_tap_pairs([dict(student=dict(path='a', index='0'), teacher='b')])


def test_sokd_base_section_is_checked_like_a_distiller():
    """``check_distiller_cfg`` goes into SoKD's ``base``: a typo there, or a bad tap index,
    is a ``ConfigError`` naming ``distiller.base.<key>``, before anything is built."""
    from distill.config_checks import check_distiller_cfg
    base = dict(type='FitNet', student=dict(type='tiny_cnn'), teacher=dict(type='tiny_cnn'),
                taps=[dict(student='stage2', teacher='stage2')], random_teacher=True)
    check_distiller_cfg(dict(type='SoKD', base=base))
    with pytest.raises(ConfigError, match=r'distiller\.base\.warmpu; did you mean '
                                          r'distiller\.base\.warmup'):
        check_distiller_cfg(dict(type='SoKD', base=dict(base, warmpu=0.1)))
    with pytest.raises(ConfigError, match=r'distiller\.base\.taps\[0\]\.index must be an int'):
        check_distiller_cfg(dict(type='SoKD', base=dict(
            base, taps=[dict(student='stage2', teacher='stage2', index='0')])))
    with pytest.raises(ConfigError, match=r"distiller\.base\.type='FitNte'"):
        check_distiller_cfg(dict(type='SoKD', base=dict(base, type='FitNte')))
