"""Training precision (issue 23): ``auto`` trains in fp32; bf16 only when asked for."""

import pytest
import torch

from pairless.errors import PairlessError
from pairless.inference import engines
from pairless.methods import registry
from pairless.training.selfsup import resolve_precision

SELF_SUPERVISED = ["n2v", "ne2ne", "bsn", "zsn2n", "n2n"]


def _quick(method: str, **settings):
    return registry.get(method).config_class.for_profile("quick", **settings)


@pytest.mark.parametrize("method", SELF_SUPERVISED)
@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_trains_in_fp32_nchw_on_a_cpu_with_or_without_bf16(method, native_bf16, monkeypatch):
    # bf16-mixed lost 0.2-0.9 dB on real noise (benchmarks/precision_real_noise.py): even a CPU with
    # native bf16 (AVX-512 bf16 or AMX) trains in fp32 unless asked for bf16
    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: native_bf16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = _quick(method)
    assert config.precision == "auto"
    assert resolve_precision(config) == ("32-true", False)
    assert resolve_precision(config, convolutions=3) == ("32-true", False)


def test_auto_trains_in_fp32_on_a_gpu_too(monkeypatch):
    # not measured on a GPU: the default is the precision that keeps the quality
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision(_quick("n2v")) == ("32-true", False)


def test_bf16_when_asked_for_trains_channels_last_unless_told_otherwise(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision(_quick("n2v", precision="bf16-mixed")) == ("bf16-mixed", True)
    assert resolve_precision(_quick("n2v", precision="bf16-mixed", channels_last="off")) == (
        "bf16-mixed",
        False,
    )
    assert resolve_precision(_quick("ne2ne", precision="32-true", channels_last="on")) == ("32-true", True)


def test_fp16_on_a_cpu_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PairlessError, match="needs a GPU; use bf16-mixed or 32-true"):
        resolve_precision(_quick("n2v", precision="16-mixed"))
