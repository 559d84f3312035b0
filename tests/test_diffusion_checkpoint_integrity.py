"""Diffusion checkpoint folders carry the SHA-256 of their files; resume skips a damaged one."""
import json
import logging

import pytest

from distill.checkpoint import CorruptCheckpointError
from distill.engines.diffusion_checkpoint import (STATE_FILE, file_digests, resolve_resume,
                                                 verify_checkpoint_dir)


def fake_checkpoint(output_dir, step):
    """A folder laid out as ``save_checkpoint`` leaves it (files, then the state file)."""
    path = output_dir / f'checkpoint-{step}'
    path.mkdir(parents=True)
    (path / 'model.safetensors').write_bytes(bytes(range(256)) * 8)
    (path / 'optimizer.bin').write_bytes(b'optimiser state %d' % step)
    state = dict(global_step=step, epoch=0, batches_in_epoch=step, num_processes=1,
                 sha256=file_digests(path))
    (path / STATE_FILE).write_text(json.dumps(state))
    return path


def test_latest_skips_a_damaged_checkpoint_naming_the_file(tmp_path, caplog):
    older, newer = fake_checkpoint(tmp_path, 2), fake_checkpoint(tmp_path, 4)
    verify_checkpoint_dir(newer)
    assert resolve_resume(tmp_path, 'latest') == newer
    data = bytearray((newer / 'model.safetensors').read_bytes())
    data[100] ^= 0xFF  # one flipped byte
    (newer / 'model.safetensors').write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert resolve_resume(tmp_path, 'latest') == older
    assert 'checkpoint-4' in caplog.text and 'model.safetensors does not match' in caplog.text
    with pytest.raises(CorruptCheckpointError, match=r'checkpoint-4/model\.safetensors does '
                                                     r'not match its checksum'):
        resolve_resume(tmp_path, 'checkpoint-4')
    (older / 'optimizer.bin').unlink()
    with pytest.raises(CorruptCheckpointError, match=r'every checkpoint .* is damaged'):
        resolve_resume(tmp_path, 'latest')
