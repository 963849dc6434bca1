"""The one synthetic-input maker: photo-like images (spatially correlated, not i.i.d. noise), the same sample
whatever the batch size, so backends compared batch by batch see equal inputs."""

import numpy as np

from eca_deploy.data.synthetic import SyntheticInputs, photo_like_batch


def test_samples_do_not_depend_on_the_batch_size():
    data = SyntheticInputs(5, 16, seed=3)
    by_two = np.concatenate([b for b, _ in data.batches(2)])
    by_five = np.concatenate([b for b, _ in data.batches(5)])
    assert by_two.shape == (5, 3, 16, 16) and by_two.dtype == np.float32
    np.testing.assert_array_equal(by_two, by_five)
    assert not np.array_equal(by_two, np.concatenate([b for b, _ in SyntheticInputs(5, 16, seed=4).batches(5)]))


def test_images_have_a_photo_s_structure_not_noise():
    """Neighbouring pixels of a photo are correlated (1/f spectrum); of N(0, 1) noise they are not."""
    images = photo_like_batch(8, 32, seed=0)

    def neighbour_correlation(x):
        return np.corrcoef(x[..., :-1].ravel(), x[..., 1:].ravel())[0, 1]

    noise = np.random.default_rng(0).standard_normal(images.shape)
    assert neighbour_correlation(images) > 0.5 > abs(neighbour_correlation(noise))
