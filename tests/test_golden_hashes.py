"""The shipped models' output, bit for bit: golden hashes of the first 40 frames of every
node on the bundled sample, 8 and 10-bit (``scripts/golden_hashes.py``).  A refactor
must keep them; a change meant to alter the output re-records them (``--record``) and
says so in its commit."""
from __future__ import annotations

import pytest
import vapoursynth as vs

from conftest import load_script

golden = load_script("golden_hashes")
pytestmark = pytest.mark.skipif(not hasattr(vs.core, "bs"), reason="needs the bestsource plugin")

RECORDED = golden.load().get(golden.machine_kind())


@pytest.mark.skipif(RECORDED is None, reason=f"no golden hashes for this machine kind ({golden.machine_kind()}): "
                                              "record them with scripts/golden_hashes.py --record")
@pytest.mark.parametrize("name", sorted(golden.cases()))
def test_output_matches_the_golden_hashes(name, threads):
    threads(2)
    assert name in RECORDED, f"{name} not recorded for this machine kind"
    hashes = golden.compute([name])[name]
    assert len(hashes) == golden.FRAMES
    differ = [k for k, (a, b) in enumerate(zip(hashes, RECORDED[name])) if a != b]
    assert not differ, f"{name}: frames {differ} differ from the golden hashes"


def test_every_machine_kind_records_every_case():
    names = set(golden.cases())
    for kind, record in golden.load().items():
        assert set(record) == names, kind
        assert all(len(v) == golden.FRAMES for v in record.values()), kind
