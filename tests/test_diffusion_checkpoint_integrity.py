"""Diffusion checkpoints are the trainer core's: folders carrying the SHA-256 of their files;
'latest' skips a damaged one naming the file."""
import json
import logging

import pytest

from distill.checkpoint import CorruptCheckpointError
from distill.engines.core.checkpoints import STATE_FILE, file_digests, find_resume_checkpoint


def fake_checkpoint(output_dir, step):
    """A folder laid out as ``checkpoints.save_checkpoint`` leaves it."""
    path = output_dir / f'checkpoint-{step}'
    path.mkdir(parents=True)
    (path / 'model.safetensors').write_bytes(bytes(range(256)) * 8)
    (path / 'optimizer.bin').write_bytes(b'optimiser state %d' % step)
    state = dict(global_step=step, epoch=1, batches_in_epoch=step, num_processes=1, records=[],
                 sha256=file_digests(path))
    (path / STATE_FILE).write_text(json.dumps(state))
    return path


def resolve(output_dir, flag):
    found = find_resume_checkpoint(output_dir, flag)
    return found and found[0]


def test_latest_skips_a_damaged_checkpoint_naming_the_file(tmp_path, caplog):
    older, newer = fake_checkpoint(tmp_path, 2), fake_checkpoint(tmp_path, 4)
    assert resolve(tmp_path, 'latest') == newer
    data = bytearray((newer / 'model.safetensors').read_bytes())
    data[100] ^= 0xFF  # one flipped byte
    (newer / 'model.safetensors').write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert resolve(tmp_path, 'latest') == older
    assert 'checkpoint-4' in caplog.text and 'model.safetensors does not match' in caplog.text
    with pytest.raises(CorruptCheckpointError, match=r'checkpoint-4/model\.safetensors does '
                                                     r'not match its checksum'):
        resolve(tmp_path, 'checkpoint-4')
    (older / 'optimizer.bin').unlink()
    with pytest.raises(CorruptCheckpointError, match=r'no valid checkpoint .*checkpoint-4, '
                                                     r'checkpoint-2'):
        resolve(tmp_path, 'latest')


def test_rotation_keeps_the_newest_in_step_order(tmp_path):
    """``prune_checkpoints(keep)`` deletes all but the ``keep`` newest by step number (10 after
    9, not before 2); ``keep`` None or 0 keeps every checkpoint."""
    from distill.engines.core.checkpoints import list_checkpoints, prune_checkpoints
    for step in (2, 4, 9, 10, 12):
        fake_checkpoint(tmp_path, step)
    assert prune_checkpoints(tmp_path, None) == prune_checkpoints(tmp_path, 0) == []
    removed = prune_checkpoints(tmp_path, 2)
    assert [p.name for p in removed] == ['checkpoint-2', 'checkpoint-4', 'checkpoint-9']
    assert [p.name for p in list_checkpoints(tmp_path)] == ['checkpoint-10', 'checkpoint-12']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['checkpoint-10', 'checkpoint-12']
    assert prune_checkpoints(tmp_path, 3) == []
