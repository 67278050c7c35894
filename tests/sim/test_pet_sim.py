import numpy as np
import pytest
from scipy import ndimage

from pairless.errors import PairlessError
from pairless.sim.pet import (
    PetSimConfig,
    frame_fraction,
    osem,
    poisson_loglik,
    projector,
    simulate_pet,
)


def test_projector_adjoint_is_exact_full_and_per_subset():
    proj = projector(64, 6.0, 24, 4)
    rng = np.random.default_rng(1)
    x = rng.random((3, 64, 64)).astype(np.float32) * proj.fov
    y = rng.random((3, 24, 64)).astype(np.float32)
    lhs = np.vdot(proj.forward(x).astype(np.float64), y)
    rhs = np.vdot(x.astype(np.float64), proj.adjoint(y))
    assert abs(lhs - rhs) / abs(lhs) < 1e-4
    for s, views in enumerate(proj.subset_views):
        ys = y[:, views]
        lhs = np.vdot(proj.forward(x, subset=s).astype(np.float64), ys)
        rhs = np.vdot(x.astype(np.float64), proj.adjoint(ys, subset=s))
        assert abs(lhs - rhs) / abs(lhs) < 1e-4
        assert np.allclose(proj.forward(x, subset=s), proj.forward(x)[:, views], rtol=1e-5, atol=1e-4)


def test_projection_of_a_disk_gives_its_chord_lengths():
    proj = projector(96, 4.0, 36, 6)
    c = (np.arange(96) - 47.5) * 4.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    disk = (np.hypot(yy, xx) <= 100.0).astype(np.float32)[None]
    sino = proj.forward(disk)[0]
    # every view conserves the disk's mass: Σ bins × bin width = Σ pixels × pixel area
    assert np.allclose(sino.sum(axis=1) * 4.0, disk.sum() * 16.0, rtol=1e-5)
    t = (np.arange(96) - 47.5) * 4.0
    chords = 2 * np.sqrt(np.clip(100.0**2 - t**2, 0, None))
    assert np.abs(sino - chords[None]).max() < 0.05 * 200  # pixelisation only, at most 5 % of the diameter


def test_frame_fraction_of_two_minutes_in_ten_is_0_2051():
    assert frame_fraction(2, 10) == pytest.approx(0.2051, abs=5e-5)
    assert frame_fraction(10, 10) == pytest.approx(1.0)
    with pytest.raises(PairlessError):
        frame_fraction(12, 10)


def test_osem_increases_the_poisson_likelihood():
    proj = projector(48, 8.0, 24, 6)
    rng = np.random.default_rng(0)
    c = (np.arange(48) - 23.5) * 8.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    truth = (2.0 * (np.hypot(yy, xx) < 120) + 8.0 * (np.hypot(yy - 30, xx + 20) < 25)).astype(np.float32)[
        None
    ]
    sens = np.full((1, 24, 48), 50.0, np.float32)
    additive = np.full((1, 24, 48), 5.0, np.float32)
    counts = rng.poisson(sens * proj.forward(truth) + additive).astype(np.float32)
    logliks = []

    def track(_, x):
        logliks.append(poisson_loglik(counts, sens * proj.forward(x) + additive))

    start = np.zeros_like(truth)
    start[:, proj.fov] = 1.0
    logliks.append(poisson_loglik(counts, sens * proj.forward(start) + additive))
    image = osem(counts, proj=proj, sensitivity=sens, additive=additive, iterations=4, callback=track)
    assert all(b > a for a, b in zip(logliks, logliks[1:]))
    assert image.min() >= 0
    inside = np.hypot(yy, xx) < 80
    assert image[0][inside & (np.hypot(yy - 30, xx + 20) > 40)].mean() == pytest.approx(2.0, rel=0.1)


SMALL = PetSimConfig(matrix=100, pixel_mm=8.1457, views=42, subsets=7)


def test_simulated_frames_are_quantitative_and_the_short_frame_is_a_thinning():
    study = simulate_pet(slices=3, config=SMALL, seed=3)
    assert sorted(study.images) == [2.0, 10.0]
    assert study.counts[2.0] / study.counts[10.0] == pytest.approx(frame_fraction(2, 10), rel=0.01)
    truth = study.truth[1]
    # background away from the spheres' spill-over and the edges
    background = ndimage.binary_erosion((truth > 1.99) & (truth < 2.01), iterations=3)
    for image in study.images.values():
        assert image.shape == study.truth.shape and image.dtype == np.float32
        assert image[1][background].mean() == pytest.approx(2.0, rel=0.06)  # kBq/mL, like the truth
        air = ndimage.binary_erosion(study.phantom.mu[1] == 0, iterations=3)
        assert np.abs(image[1][air]).max() < 0.2  # no activity outside the phantom


def test_same_seed_same_data_and_bad_arguments():
    a = simulate_pet(slices=1, config=SMALL, seed=5, minutes=(10.0,))
    b = simulate_pet(slices=1, config=SMALL, seed=5, minutes=(10.0,))
    assert np.array_equal(a.images[10.0], b.images[10.0])
    with pytest.raises(PairlessError, match="minutes"):
        simulate_pet(slices=1, config=SMALL, minutes=(0.0,))
    with pytest.raises(PairlessError, match="subsets"):
        projector(32, 4.0, 10, 3)


def test_split_counts_gives_independent_poisson_halves_that_sum_to_the_frame():
    from pairless.sim.pet import split_counts

    rng = np.random.default_rng(0)
    mean = rng.uniform(2, 40, 200_000)
    frame = rng.poisson(mean).astype(np.float32)
    a, b = split_counts(frame, 2, rng=rng)
    assert np.array_equal(a + b, frame)
    # independent Poisson(mean / 2) each: uncorrelated, and variance = mean
    ra, rb = a - mean / 2, b - mean / 2
    assert (
        abs(np.corrcoef(ra, rb)[0, 1]) < 0.01
    )  # a thinning without independence (b = frame - a, a fixed share) gives ≈ 1 or -1
    assert np.mean(ra**2) / np.mean(mean / 2) == pytest.approx(1.0, abs=0.02)
    parts = split_counts(frame, 3, rng=rng)
    assert np.array_equal(sum(parts), frame) and all(
        p.mean() == pytest.approx(frame.mean() / 3, rel=0.01) for p in parts
    )
    big, small = split_counts(frame, (0.8, 0.2), rng=rng)
    assert np.array_equal(big + small, frame) and big.mean() == pytest.approx(0.8 * frame.mean(), rel=0.01)


def test_a_study_with_halves_has_the_same_frames_and_halves_of_half_the_counts():
    plain = simulate_pet(slices=3, config=SMALL, seed=4)
    split = simulate_pet(slices=3, config=SMALL, seed=4, splits=2)
    assert np.array_equal(plain.images[2.0], split.images[2.0]) and not plain.parts
    a, b = split.parts[2.0]
    background = ndimage.binary_erosion((split.truth[1] > 1.99) & (split.truth[1] < 2.01), iterations=3)
    for half in (a, b):  # each reconstructs to the same activity (kBq/mL) from half the counts
        assert half[1][background].mean() == pytest.approx(2.0, rel=0.08)
    # their noise differs, yet together they are the frame (OSEM is close to linear at these counts)
    frame = split.images[2.0][1][background]
    assert np.abs((a + b)[1][background] / 2 - frame).mean() < 0.25 * np.abs(a - b)[1][background].mean()
    with pytest.raises(PairlessError, match="splits"):
        simulate_pet(slices=1, config=SMALL, splits=0)
    with pytest.raises(PairlessError, match="fractions"):
        simulate_pet(slices=1, config=SMALL, splits=(0.7, 0.2))
