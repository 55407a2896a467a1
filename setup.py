from setuptools import find_packages, setup

# torch is pinned: an unpinned torch pulls a multi-GB CUDA build (docs/model.md, "These machines").
TORCH = ["torch==2.13.0", "transformers>=5.0,<6", "safetensors>=0.4"]
# gs:// paths through etils.epath (gcsfs); Orbax reaches GCS through tensorstore on its own.
GCS = ["gcsfs>=2026.10.1", "google-cloud-storage>=3.14.1"]
# libtpu of jax[tpu]==0.10.2: runs on TPU VMs, and compiles for a TPU topology on any CPU (the
# planner's --tpu_topology).
LIBTPU = ["libtpu==0.0.42.*"]
# apache-beam caps protobuf < 7, pyarrow < 26, pillow < 13, numpy < 2.5: nothing else here needs
# newer ones, so it co-installs with the rest.
BEAM = ["apache-beam>=2.60"]

setup(
    name="hawk-jax",
    version="0.1.0",
    description="HAWK (video anomaly understanding) in JAX/Flax: models, data, training, "
                "inference, evaluation and PyTorch conversion",
    python_requires=">=3.11",
    packages=find_packages(include=["hawk_jax", "hawk_jax.*", "data_pipelines",
                                    "data_pipelines.*", "configs"]),
    package_data={"hawk_jax": ["text/assets/*"]},
    include_package_data=True,
    install_requires=[
        "jax>=0.10.2,<0.11",
        "jaxlib>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8,<0.13",
        "ml_collections>=1.1",
        "absl-py",
        "numpy>=2",
        "sentencepiece>=0.2",
        "grain>=0.2.18,<0.3",
        "tensorflow-datasets>=4.9.10",
        "array_record>=0.8",
        "opencv-python-headless>=4.10",
        "safetensors>=0.4",
        "tqdm",
        "tensorboardX>=2.6",
    ],
    extras_require={
        "torch": TORCH,
        "video": ["av>=12", "scikit-video>=1.1.11"],
        "eval": ["nltk>=3.9", "pycocoevalcap>=1.2"],
        "spacy": ["spacy>=3.7"],
        "beam": BEAM,
        "gcs": GCS,
        "tpu": ["jax[tpu]>=0.10.2,<0.11"] + LIBTPU + GCS,
        "test": TORCH + GCS + LIBTPU + BEAM + [
            "pytest>=8", "nltk>=3.9", "pycocoevalcap>=1.2", "av>=12", "scikit-video>=1.1.11",
            "gcp-storage-emulator>=2026.7.19", "ruff>=0.6"],
    },
)
