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
# The web demo. gradio 6.29-6.31 is the newest that co-installs with the rest (it takes tomlkit
# < 0.15; later 6.x cap huggingface-hub < 2, earlier ones aiofiles < 25); selenium 4.32 drives
# Debian's chromium in the browser test (4.33+ would need a newer trio).
DEMO = ["gradio==6.31.0"]
# Console scripts beside the `python -m` forms (the same main()s; tests/test_cli_style.py runs
# --help on each).
CONSOLE_SCRIPTS = [
    "hawk-synthetic=data_pipelines.synthetic:main",
    "hawk-extract=data_pipelines.extract:main",
    "hawk-beam-extract=data_pipelines.beam_extract:main",
    "hawk-show=data_pipelines.show:main",
    "hawk-tokenizer=hawk_jax.text.tiny_tokenizer:main",
    "hawk-pretrain-llm=hawk_jax.train.pretrain_llm:main",
    "hawk-train=hawk_jax.train.__main__:main",
    "hawk-tower-cache=hawk_jax.train.write_tower_cache:main",
    "hawk-summary=hawk_jax.train.run_summary:main",
    "hawk-describe=hawk_jax.infer.describe:main",
    "hawk-chat=hawk_jax.infer.chat:main",
    "hawk-evaluate=hawk_jax.evaluate:main",
    "hawk-timeline=hawk_jax.timeline.cli:main",
    "hawk-convert=hawk_jax.convert.cli:main",
    "hawk-plan=hawk_jax.plan.cli:main",
    "hawk-params=hawk_jax.plan.param_summary:main",
    "hawk-bench=hawk_jax.bench.__main__:main",
    "hawk-bench-step=hawk_jax.bench.train_step:main",
    "hawk-bench-inference=hawk_jax.bench.inference:main",
    "hawk-bench-loader=hawk_jax.bench.loader:main",
    "hawk-demo=hawk_jax.demo.__main__:main",
]

setup(
    name="hawk-jax",
    version="0.1.0",
    description="HAWK (video anomaly understanding) in JAX/Flax: models, data, training, "
                "inference, evaluation and PyTorch conversion",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["hawk_jax", "hawk_jax.*", "data_pipelines",
                                    "data_pipelines.*", "configs"]),
    package_data={"hawk_jax": ["text/assets/*"]},
    include_package_data=True,
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
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
        # timeline.png (python -m hawk_jax.timeline)
        "matplotlib>=3.8",
    ],
    extras_require={
        "torch": TORCH,
        "video": ["av>=12", "scikit-video>=1.1.11"],
        # the judge uses the official SDK when it is there (a stdlib client otherwise)
        "eval": ["nltk>=3.9", "pycocoevalcap>=1.2", "openai>=3.63,<4"],
        "spacy": ["spacy>=3.7"],
        "beam": BEAM,
        "demo": DEMO,
        "gcs": GCS,
        "tpu": ["jax[tpu]>=0.10.2,<0.11"] + LIBTPU + GCS,
        "test": TORCH + GCS + LIBTPU + BEAM + DEMO + ["selenium==4.32.0",
            "pytest>=8", "nltk>=3.9", "pycocoevalcap>=1.2", "av>=12", "scikit-video>=1.1.11",
            "gcp-storage-emulator>=2026.7.19", "openai>=3.63,<4", "ruff>=0.6",
            # the localization metric's reference in tests/eval/test_localization.py
            "scikit-learn>=1.5"],
    },
)
