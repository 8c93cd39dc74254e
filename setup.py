"""vs_vgan: GAN-trained frame interpolation and frame prediction for VapourSynth."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def version() -> str:
    for line in (HERE / "vs_vgan" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("no __version__ in vs_vgan/__init__.py")


setup(
    name="vs_vgan",
    version=version(),
    description="GAN-trained frame interpolation and frame prediction as VapourSynth nodes",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.12",
    packages=find_packages(include=["vs_vgan", "vs_vgan.*"]) + ["vs_vgan.weights"],
    # Shipped weights and model cards live in models/ at the repository root and are
    # installed as the package vs_vgan.weights (resolved by vs_vgan.models.weights_path).
    package_dir={"vs_vgan.weights": "models"},
    package_data={"vs_vgan.weights": ["*.safetensors", "*.md"], "vs_vgan.data": ["sample.mp4", "SAMPLE.md", "demo.vpy"]},
    include_package_data=True,
    # imageio-ffmpeg: a static ffmpeg 9 for machines without one (vs_vgan.ffmpeg's order)
    install_requires=["vapoursynth>=74", "torch>=2.4", "numpy>=1.26", "safetensors>=0.4", "imageio-ffmpeg>=0.8.1"],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "vapoursynth-bestsource", "vapoursynth-mvtools",
                 "pillow", "scikit-image", "scikit-learn"],
        # training only (scripts/train_interp.py): animated WebP reading and the still photographs
        "train": ["pillow", "scikit-image", "scikit-learn", "vapoursynth-bestsource"],
    },
    entry_points={"console_scripts": ["vs-vgan = vs_vgan.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.12",
        "Topic :: Multimedia :: Video",
        "License :: OSI Approved :: MIT License",
    ],
)
