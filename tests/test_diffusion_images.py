"""The diffusion image datasets (distill.data.images) and the validation grid."""
import numpy as np
import pytest
import torch

pytest.importorskip('diffusers')


def test_grid_is_teacher_row_over_student_row_enlarged_nearest():
    from distill.engines.diffusion.eval import image_grid
    teacher = -torch.ones(3, 3, 8, 8)  # black
    student = torch.ones(3, 3, 8, 8)   # white
    student[1, :, :4] = -1             # the middle student image: top half black
    grid = np.asarray(image_grid([teacher, student], min_tile=32))
    assert grid.shape == (64, 96, 3)  # 2 rows of 32-pixel tiles, 3 columns
    assert (grid[:32] == 0).all()
    assert (grid[32:, :32] == 255).all() and (grid[32:, 64:] == 255).all()
    # nearest enlargement: the half-black tile stays two flat halves, no blurred edge
    assert (grid[32:48, 32:64] == 0).all() and (grid[48:, 32:64] == 255).all()


def test_grid_rows_can_be_labelled_in_a_margin():
    from distill.engines.diffusion.eval import image_grid
    rows = [-torch.ones(2, 3, 8, 8), -torch.ones(2, 3, 8, 8)]
    grid = np.asarray(image_grid(rows, min_tile=32, labels=['teacher', 'student'],
                                 label_width=60))
    assert grid.shape == (64, 60 + 64, 3) and (grid[:, 60:] == 0).all()
    margin = grid[:, :60]
    assert (margin[:32] < 255).any() and (margin[32:] < 255).any()  # text in each row's band
    with pytest.raises(ValueError, match='1 labels for 2 rows'):
        image_grid(rows, labels=['teacher'])


def test_latent_and_grey_rows_show_three_channels():
    from distill.engines.diffusion.eval import image_grid
    grid = image_grid([torch.zeros(2, 4, 16, 16), torch.zeros(2, 1, 16, 16)], min_tile=16)
    assert grid.size == (32, 32) and grid.mode == 'RGB'


def test_sixteen_bit_grey_image_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    from distill.data.images import ImageFolderImages
    values = np.full((8, 8), 32768, dtype=np.uint16)  # mid grey in 16 bits
    Image.fromarray(values).save(tmp_path / 'grey16.png')
    pixels = ImageFolderImages(tmp_path, 8)[0]['pixel_values']
    assert pixels.shape == (3, 8, 8)
    assert pixels.abs().max() < 0.02  # mid grey is 0 in [-1, 1], not white (1)


def test_shapes_images_are_a_function_of_the_index():
    from distill.data.images import build_image_datasets
    train, heldout = build_image_datasets(dict(resolution=8, num_samples=4, num_heldout=2))
    assert len(train) == 4 and len(heldout) == 2
    assert torch.equal(train[1]['pixel_values'], train[1]['pixel_values'])
    assert not torch.equal(train[0]['pixel_values'], heldout[0]['pixel_values'])


def test_shards_are_disjoint_equal_and_a_function_of_seed_and_epoch():
    from distill.engines.diffusion.randomness import EpochShuffleSampler
    shards = [list(EpochShuffleSampler(50, seed=3, epoch=2, batch_size=4, rank=rank,
                                       num_processes=3)) for rank in range(3)]
    assert [len(s) for s in shards] == [16, 16, 16]  # 48 of 50: whole global batches of 12
    assert len(set().union(*shards)) == 48
    again = list(EpochShuffleSampler(50, seed=3, epoch=2, batch_size=4, rank=1,
                                     num_processes=3))
    assert again == shards[1]
    other_epoch = list(EpochShuffleSampler(50, seed=3, epoch=3, batch_size=4, rank=1,
                                           num_processes=3))
    assert other_epoch != shards[1]


def test_image_folder_split_holds_the_last_files_out_of_training(tmp_path):
    """``split(n)``: the last ``n`` files (sorted) are held out and the others train; the two
    are disjoint and together the whole folder. Under twice ``n`` images both are the whole."""
    from PIL import Image

    from distill.data.images import ImageFolderImages
    for index in range(10):
        Image.fromarray(np.full((4, 4, 3), index, dtype=np.uint8)).save(
            tmp_path / f'image_{index}.png')
    folder = ImageFolderImages(tmp_path, 4)
    train, heldout = folder.split(3)
    assert (len(train), len(heldout)) == (7, 3)
    assert set(train.files).isdisjoint(heldout.files)
    assert sorted(train.files + heldout.files) == folder.files
    assert heldout.files == folder.files[-3:]
    assert [train.resolution, heldout.resolution] == [4, 4]
    for whole in (folder.split(6), folder.split(0)):
        assert [len(part) for part in whole] == [10, 10]
