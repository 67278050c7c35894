"""The method registry: every learned method trains (tiny) through the API into a model folder that the
registry loads back into the same denoiser; every classical name loads; citations; unknown names."""

from __future__ import annotations

import numpy as np
import pytest

from pairless import api
from pairless.config import read_yaml
from pairless.denoiser import Denoiser, denoise_array
from pairless.errors import PairlessError
from pairless.methods import registry
from pairless.methods.supervised import ARCHS

pytestmark = pytest.mark.usefixtures("one_thread")

# a few steps of the smallest networks: the test is about the plumbing, not about denoising
SELF_SUPERVISED = dict(
    steps=4, val_every=2, batch_size=2, patch_size=16, depth=1, filters=4, precision="32-true"
)
TINY = {
    "self-supervised": SELF_SUPERVISED,
    "paired-acquisitions": SELF_SUPERVISED,
    "unpaired": dict(
        generator_width=4,
        extractor_width=4,
        extractor_depth=2,
        discriminator_width=4,
        patch_size=64,
        batch_size=2,
        steps=2,
        val_every=1,
        val_batches=1,
        precision="32-true",
    ),
    "supervised": dict(channels=4, batch_size=2, steps=3, val_every=3, val_batches=1, precision="32-true"),
}
# methods whose settings are not their kind's (the adversarial baselines of seed 002's Table 2)
ADVERSARIAL = dict(batch_size=2, steps=2, val_every=1, val_batches=1, precision="32-true")
OWN_TINY = {
    "adn": dict(ADVERSARIAL, width=2, residual_blocks=1, discriminator_width=2),
    "uidnet": dict(ADVERSARIAL, generator_width=2, critic_width=2, denoiser_depth=2, denoiser_channels=2),
    "cagan": dict(ADVERSARIAL, width=8, feature_depth=2, discriminator_width=8),
}
OWN = {  # what a method needs beyond its kind's tiny settings
    "bsn": dict(
        depth=2, sigma=0.1
    ),  # two levels for its shifted branches; the noise σ given (no smooth regions)
    "dncnn": dict(depth=2, patch_size=24),
    "redcnn": dict(patch_size=24),
    "unet": dict(depth=2, patch_size=32),
}

# (method, supervised architecture or None): every learned method of the registry, every architecture
CASES = [
    (name, arch)
    for name in registry.names(*registry.LEARNED)
    for arch in (ARCHS if name == "supervised" else (None,))
]


def _image(shape=(64, 64), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    return (0.5 + 0.3 * np.sin(x / 5.0) * np.cos(y / 7.0) + rng.normal(0, 0.1, shape)).astype(np.float32)


def _fit(name: str, arch: str | None, out):
    """Train ``name`` tiny through the API; returns (the denoiser fit returned, a test image)."""
    kind = registry.get(name).kind
    assert kind in TINY, f"no tiny settings for a {kind} method ({name}): add them to TINY"
    settings = {**OWN_TINY.get(name, TINY[kind]), **OWN.get(arch or name, {})}
    noisy = [_image(seed=i) for i in range(3)]
    if kind == "paired-acquisitions":  # two acquisitions of one object, consecutive
        images, clean = [noisy[0], noisy[1], noisy[1], noisy[2]], None
    elif kind in ("unpaired", "supervised"):
        noisy = [_image((72, 80), seed=i) for i in range(3)]
        images, clean = noisy, [_image((72, 80), seed=10 + i) for i in range(3)]
    else:
        images, clean = noisy, None
    if arch is not None:
        settings["arch"] = arch
    fitted = api.fit(
        name,
        images,
        clean=clean,
        out=out,
        axes=None if clean is not None else "YX",
        seed=0,
        progress=False,
        **settings,
    )
    return fitted, noisy[0]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:ISCL's")  # 2 steps: its monitors say the discriminators learned nothing
@pytest.mark.parametrize("name, arch", CASES, ids=[f"{n}-{a}" if a else n for n, a in CASES])
def test_every_learned_method_fits_writes_a_folder_and_loads_back_the_same_denoiser(name, arch, tmp_path):
    fitted, image = _fit(name, arch, tmp_path / "model")
    assert isinstance(fitted, Denoiser)
    config = read_yaml(tmp_path / "model" / "config.yaml")
    assert config["method"] == name and (tmp_path / "model" / "weights.safetensors").is_file()
    if arch is not None:
        assert config["supervised"]["arch"] == arch
    loaded = registry.load_model(tmp_path / "model")
    assert type(loaded) is type(fitted)
    expected = denoise_array(image, fitted, axes="YX")
    assert expected.shape == image.shape and np.isfinite(expected).all()
    np.testing.assert_array_equal(denoise_array(image, loaded, axes="YX"), expected)
    # the API's loader is the registry's, with the model's provenance added
    via_api = api.load(tmp_path / "model")
    assert via_api.provenance["method"] == name
    np.testing.assert_array_equal(denoise_array(image, via_api, axes="YX"), expected)


def test_the_cases_cover_every_learned_method_and_architecture():
    assert {name for name, _ in CASES} == set(registry.names(*registry.LEARNED)) != set()
    assert {arch for _, arch in CASES if arch} == set(ARCHS)


@pytest.mark.parametrize("name", registry.names("classical"))
def test_every_classical_method_loads_by_name_and_denoises(name):
    if name == "bm3d":
        pytest.importorskip("bm3d", reason="bm3d is an optional extra")
    denoiser = api.load(name)
    assert isinstance(denoiser, Denoiser) and denoiser.provenance["method"] == name
    image = _image((32, 32))
    out = denoise_array(image, denoiser, axes="YX")
    assert out.shape == image.shape and np.isfinite(out).all()
    assert np.mean((out - out.mean()) ** 2) < np.mean((image - image.mean()) ** 2)  # it smooths


def test_classical_methods_need_no_training():
    with pytest.raises(PairlessError, match="unknown method 'gaussian'"):
        api.fit("gaussian", [_image()], out="unused", axes="YX")


def test_n2v_variants_add_their_citations():
    spec = registry.get("n2v")
    base = spec.cite({"n2v2": False, "struct_mask": "none"})
    assert [c.doi for c in base] == ["10.1109/CVPR.2019.00223"]  # Noise2Void alone
    n2v2 = spec.cite({"n2v2": True, "struct_mask": "none"})
    struct = spec.cite({"n2v2": False, "struct_mask": "horizontal"})
    both = spec.cite({"n2v2": True, "struct_mask": "vertical"})
    assert n2v2[0] == struct[0] == both[0] == base[0]
    assert [c.doi for c in n2v2[1:]] == ["10.1007/978-3-031-25069-9_33"] and "N2V2" in n2v2[1].text
    assert [c.doi for c in struct[1:]] == ["10.1109/ISBI45749.2020.9098336"] and "Structured" in struct[
        1
    ].text
    assert {c.doi for c in both[1:]} == {n2v2[1].doi, struct[1].doi}


def test_every_learned_method_cites_a_paper_or_its_network():
    for name in registry.names(*registry.LEARNED):
        spec = registry.get(name)
        assert spec.cite({}) or spec.kind == "supervised", name  # supervised cites its network's paper
    assert set(registry.NETWORK_CITATIONS) >= {"UNet", "DnCNN", "REDCNN"}


def test_an_unknown_method_is_refused_naming_the_choices():
    with pytest.raises(PairlessError) as caught:
        registry.get("nope")
    message = str(caught.value)
    assert "'nope'" in message and all(name in message for name in registry.names())
    with pytest.raises(PairlessError) as caught:
        registry.get("gaussian", kinds=registry.LEARNED)  # a classical filter is not a learned method
    assert "n2v" in str(caught.value) and "bm3d" not in str(caught.value)
    assert not registry.is_method("nope") and registry.is_method("bm3d", "classical")


def test_names_and_kinds_are_consistent():
    names = registry.names()
    assert len(names) == len(set(names)) == len(registry.SPECS)
    learned, classical = registry.names(*registry.MODEL_KINDS), registry.names("classical")
    assert sorted(learned + classical) == sorted(names) and not set(learned) & set(classical)
    for name in learned:  # each learned method's profile builds its own config class
        spec = registry.get(name)
        assert type(spec.configure("quick")) is spec.config_class, name
