from setuptools import setup

# Ranges, not pins: the GPU machine brings its own torch 2.11 / torchvision 0.26 / triton 3.6.
# Exact versions for CI live in constraints/ci.txt.
setup(
    name="medtrain",
    version="0.1.0",
    description="GPU-first training engine for medical image classification",
    packages=["common", "engine", "engine.options", "engine.plan", "engine.run", "engine.score", "engine.output", "kernels", "loaders", "models", "bench"],
    # C sources compiled at first use with the system compiler (kernels/native_build.py)
    package_data={"kernels": ["native/*.c"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "numpy>=1.24",
        "pillow>=10",
        "simplejpeg>=1.7",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "nvidia-ml-py>=12",
        "psutil>=5.9",
    ],
    extras_require={
        "dev": ["pytest>=7", "pytest-benchmark>=4", "pytest-xdist>=3", "scikit-learn>=1.3", "scipy>=1.10", "wandb>=0.16",
                # reference for the CLAHE kernel tests (the GPU machine has the headless build)
                "opencv-python-headless>=4.5"],
        "triton": ["triton>=3.0"],
        "dali": ["nvidia-dali-cuda120>=1.30"],
        "dali-cuda130": ["nvidia-dali-cuda130>=1.30"],
        "ffcv": ["ffcv>=1.0.2", "numba>=0.58"],
        "wandb": ["wandb>=0.16"],
        # `--model timm/<name>`; weights through timm's Hugging Face hub cache (models/timm_models.py)
        "timm": ["timm>=1.0"],
        # DICOM (`.dcm`): pydicom reads, the pylibjpeg plug-ins decode JPEG / JPEG 2000 pixel data
        "dicom": ["pydicom>=2.4", "pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1", "pylibjpeg-openjpeg>=2.3"],
        # HDF5 image stores (ISIC 2024's train-image.hdf5): one encoded image per key, read lazily
        "hdf5": ["h5py>=3.8"],
        # `engine.export`: ONNX via torch's exporter, checked with onnxruntime
        "export": ["onnx>=1.15", "onnxruntime>=1.17", "onnxscript>=0.1"],
        # Grad-CAM overlays in the report and `engine.predict --explain`
        "explain": ["grad-cam>=1.5"],
    },
)
