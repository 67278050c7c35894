"""Blind-spot masking: the properties the anchors got wrong (notes/n2v.md §5)."""

import numpy as np
import pytest
import torch
from scipy import stats

from pairless.methods.n2v import manipulate, n2v_loss, neighbour_offsets, stratified_positions


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_no_pixel_is_its_own_replacement():
    batch = torch.randn(64, 1, 32, 32)
    spots = manipulate(batch, generator=_gen(), fraction=0.02, roi=5)
    offsets = spots.sources[:, 1:] - spots.positions[:, 1:]
    assert len(offsets) > 1000
    assert (offsets.abs().sum(dim=1) > 0).all()
    assert (spots.sources[:, 0] == spots.positions[:, 0]).all()
    assert (offsets.abs() <= 2).all()
    # the value put in is the neighbour's
    assert torch.equal(spots.input[:, 0][tuple(spots.positions.T)], batch[:, 0][tuple(spots.sources.T)])


def test_offsets_are_uniform_over_the_non_centre_neighbours():
    # interior pixels only (no mirroring): a large patch and a sparse mask
    batch = torch.zeros(400, 1, 96, 96)
    spots = manipulate(batch, generator=_gen(1), fraction=0.01, roi=5)
    interior = ((spots.positions[:, 1:] >= 2) & (spots.positions[:, 1:] < 94)).all(dim=1)
    offsets = (spots.sources - spots.positions)[interior][:, 1:] + 2
    counts = np.bincount((offsets[:, 0] * 5 + offsets[:, 1]).numpy(), minlength=25)
    assert counts[12] == 0  # the centre
    observed = np.delete(counts, 12)
    assert stats.chisquare(observed).pvalue > 1e-3
    assert observed.min() > 0.8 * observed.mean()


@pytest.mark.parametrize("shape", [(200, 64, 64), (40, 16, 64, 64), (300, 37, 31)])
def test_density_is_the_requested_fraction(shape):
    fraction = 0.002
    positions = stratified_positions(shape, fraction=fraction, generator=_gen(2))
    expected = fraction * np.prod(shape)
    assert abs(len(positions) - expected) < 4 * np.sqrt(expected) + 1
    assert (positions[:, 1:] < torch.tensor(shape[1:])).all() and (positions >= 0).all()
    assert len(torch.unique(positions, dim=0)) == len(positions)
    # stratified, not independent: the count per patch varies far less than a Poisson count would
    per_patch = torch.bincount(positions[:, 0], minlength=shape[0]).double()
    assert per_patch.var() < 0.3 * per_patch.mean()


def test_3d_replacement_comes_from_a_3d_neighbourhood():
    batch = torch.randn(8, 1, 16, 32, 32)
    spots = manipulate(batch, generator=_gen(3), fraction=0.01, roi=5)
    offsets = spots.sources[:, 1:] - spots.positions[:, 1:]
    assert (offsets.abs().sum(dim=1) > 0).all()
    assert (offsets[:, 0] != 0).any()  # Z offsets are used too
    assert spots.mask.sum() == len(spots.positions)


def test_tied_blind_spots_still_count_in_the_loss():
    batch = torch.ones(4, 1, 32, 32)  # every replacement equals the original value
    spots = manipulate(batch, generator=_gen(4), fraction=0.01)
    assert torch.equal(spots.input, batch)
    prediction = torch.zeros_like(batch)
    assert n2v_loss(prediction, batch, spots.mask).item() == pytest.approx(1.0)
    # and only the blind spots count
    prediction[~spots.mask] = 100.0
    assert n2v_loss(prediction, batch, spots.mask).item() == pytest.approx(1.0)


def test_median_replacement_is_the_neighbourhood_median_without_the_centre():
    batch = torch.randn(4, 1, 32, 32)
    spots = manipulate(batch, generator=_gen(5), fraction=0.01, replacement="median", roi=3)
    spots = manipulate(batch, generator=_gen(5), fraction=0.01, replacement="median", roi=3)
    for b, y, x in spots.positions.tolist():
        if 1 <= y < 31 and 1 <= x < 31:
            block = batch[b, 0, y - 1 : y + 2, x - 1 : x + 2].reshape(-1)
            around = torch.cat([block[:4], block[5:]])
            assert spots.input[b, 0, y, x] == around.median()


@pytest.mark.parametrize("struct, axis", [("horizontal", 1), ("vertical", 0)])
def test_struct_mask_hides_the_line_through_each_blind_spot(struct, axis):
    batch = torch.randn(16, 1, 48, 48)
    spots = manipulate(batch, generator=_gen(6), fraction=0.004, struct=struct, struct_span=5)
    changed = spots.input != batch
    for b, y, x in spots.positions.tolist():
        for d in (-2, -1, 1, 2):
            yy, xx = (y, x + d) if axis == 1 else (y + d, x)
            if 0 <= yy < 48 and 0 <= xx < 48:
                assert changed[b, 0, yy, xx]
    # nothing else changes: only the lines and the centres
    assert changed.sum() <= len(spots.positions) * 5
    # the centre's replacement never comes from the masked line
    offsets = spots.sources[:, 1:] - spots.positions[:, 1:]
    on_line = (offsets[:, 1 - axis] == 0) & (offsets[:, axis].abs() <= 2)
    assert not on_line.any()


def test_struct_offsets_exclude_the_line():
    table = neighbour_offsets(2, roi=5, struct="horizontal", struct_span=5)
    assert len(table) == 24 - 4
    assert not (table[:, 0] == 0).any()
