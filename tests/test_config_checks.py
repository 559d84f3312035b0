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
