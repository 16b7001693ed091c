"""The Promela model of the hand-off (poolmon/pool/model/handoff.pml) checked with spin: the
model holds its invariants (no lost wake-up, no double lend, used + idle <= max + burst,
quotas, every waiter served or gone, the aging bound), and a deliberately broken variant
(-DBROKEN: a return parks its connection without looking at the waiters) is caught.

spin comes from Debian's package (scripts/services installs it); under CI=true a missing spin
fails the test, locally it skips."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import poolmon.pool
from tests.conftest import require

MODEL = Path(poolmon.pool.__file__).parent / "model" / "handoff.pml"


def _verify(tmp_path: Path, *defines: str) -> str:
    spin = shutil.which("spin")
    cc = shutil.which("gcc") or shutil.which("cc")
    require(spin is not None and cc is not None, "spin and a C compiler (Debian: spin, gcc)")
    assert spin is not None and cc is not None
    model = tmp_path / MODEL.name
    model.write_text(MODEL.read_text())
    subprocess.run(
        [spin, *defines, "-a", model.name], cwd=tmp_path, check=True, capture_output=True
    )
    subprocess.run(
        [cc, "-O2", "-w", "-DSAFETY", "-DCOLLAPSE", "-DMEMLIM=1024", "-o", "pan", "pan.c"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        ["./pan"], cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    return done.stdout + done.stderr


def test_spin_verifies_the_hand_off(tmp_path: Path) -> None:
    out = _verify(tmp_path)
    assert "errors: 0" in out, out
    assert "assertion violated" not in out
    assert "MEMLIM" not in out and "search not completed" not in out  # the search was complete
    states = int(out.split(" states, stored")[0].split()[-1])
    assert states > 10_000  # it explored something real


def test_spin_catches_the_broken_variant(tmp_path: Path) -> None:
    out = _verify(tmp_path, "-DBROKEN")
    assert "errors: 1" in out, out
    # The violated property is the lost wake-up: an idle connection while an eligible waiter
    # waits (the invariant the real _give_locked / _wake_head_locked keep).
    assert "assertion violated" in out and "idle>0" in out
